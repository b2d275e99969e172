"""An admin SPA served from another origin (CREDITS_CORS_ORIGINS): browsers may call the API from the origins
listed, and from no other; without the setting, no cross-origin answer is allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from credits_graphql.api.http import GraphQLEndpoint
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


async def test_an_origin_spelled_otherwise_than_browsers_send_it_is_allowed_as_they_send_it(
        runtime: Runtime, org: Org) -> None:
    settings = Settings.from_env({"CREDITS_CORS_ORIGINS": "HTTPS://Admin.Example.com:443,http://localhost:80"})
    assert settings.cors_origins == (SPA, "http://localhost")
    app = build_app(replace(runtime, settings=replace(runtime.settings, cors_origins=settings.cors_origins)),
                    run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        preflight = await client.options("/graphql", headers=_preflight(SPA))  # browsers: lower case, no :443
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == SPA


@pytest.mark.parametrize("header", ["apollographql-client-name, apollographql-client-version",
                                    "traceparent, tracestate", "baggage, sentry-trace"])
async def test_a_preflight_naming_headers_that_graphql_clients_and_tracing_add_is_answered(
        cors: httpx.AsyncClient, header: str) -> None:
    response = await cors.options("/graphql", headers={**_preflight(SPA), "Access-Control-Request-Headers":
                                                       f"authorization, content-type, {header}"})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == SPA


async def test_an_unexpected_error_is_readable_by_a_listed_origin_with_its_request_id(
        runtime: Runtime, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_run(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(GraphQLEndpoint, "run", broken_run)
    app = build_app(replace(runtime, settings=replace(runtime.settings, cors_origins=(SPA,))), run_worker=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/graphql", json=QUERY, headers={
            "Origin": SPA, "Authorization": f"Bearer {org.admin}", "X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == SPA
    assert response.json()["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-42"}


@pytest.mark.parametrize("value", ["*", "https://admin.example.com/", "admin.example.com", "https://a.example/app",
                                   "ftp://a.example", f"{SPA}, *", "https://a.example:0", "https://a.example:65536"])
def test_an_origin_that_no_browser_sends_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="CREDITS_CORS_ORIGINS"):
        Settings.from_env({"CREDITS_CORS_ORIGINS": value})
