"""An admin SPA served from another origin (CREDITS_CORS_ORIGINS): browsers may call the API from the origins
listed, and from no other; without the setting, no cross-origin answer is allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.settings import Settings, SettingsError
from tests.conftest import Org

SPA = "https://admin.example.com"
QUERY = {"query": "{ accounts { totalCount } }"}


@pytest.fixture
async def cors(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    settings = replace(runtime.settings, cors_origins=(SPA, "http://localhost:5173"))
    app = build_app(replace(runtime, settings=settings), run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def _preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}


async def test_a_listed_origin_s_preflight_is_answered_before_authentication(cors: httpx.AsyncClient) -> None:
    response = await cors.options("/graphql", headers=_preflight(SPA))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SPA
    assert {"POST", "GET"} <= set(response.headers["access-control-allow-methods"].replace(" ", "").split(","))
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert "access-control-allow-credentials" not in response.headers  # keys go in a header, never in cookies


async def test_a_listed_origin_reads_answers_and_errors(cors: httpx.AsyncClient, org: Org) -> None:
    served = await cors.post("/graphql", json=QUERY, headers={"Origin": SPA, "Authorization": f"Bearer {org.admin}"})
    assert served.json() == {"data": {"accounts": {"totalCount": 0}}}
    assert served.headers["access-control-allow-origin"] == SPA
    assert "x-request-id" in served.headers["access-control-expose-headers"].lower()
    refused = await cors.post("/graphql", json=QUERY, headers={"Origin": SPA})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == SPA  # so that the SPA can show why


async def test_another_origin_is_not_allowed(cors: httpx.AsyncClient, org: Org) -> None:
    preflight = await cors.options("/graphql", headers=_preflight("https://evil.example"))
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    answered = await cors.post("/graphql", json=QUERY,
                               headers={"Origin": "https://evil.example", "Authorization": f"Bearer {org.admin}"})
    assert "access-control-allow-origin" not in answered.headers


async def test_without_the_setting_no_origin_is_allowed(http: httpx.AsyncClient, org: Org) -> None:
    answered = await http.post("/graphql", json=QUERY, headers={"Origin": SPA, "Authorization": f"Bearer {org.admin}"})
    assert answered.status_code == 200
    assert "access-control-allow-origin" not in answered.headers


def test_the_setting_lists_origins_separated_by_commas() -> None:
    settings = Settings.from_env({"CREDITS_CORS_ORIGINS": f" {SPA}, http://localhost:5173 ,"})
    assert settings.cors_origins == (SPA, "http://localhost:5173")
    assert Settings.from_env({}).cors_origins == ()


@pytest.mark.parametrize("value", ["*", "https://admin.example.com/", "admin.example.com", "https://a.example/app",
                                   "ftp://a.example", f"{SPA}, *"])
def test_an_origin_that_no_browser_sends_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="CREDITS_CORS_ORIGINS"):
        Settings.from_env({"CREDITS_CORS_ORIGINS": value})
