"""Fixtures shared by every test: a migrated database per test on SQLite and on PostgreSQL, the
use-case dependencies with a controllable clock and the sandbox gateway, and a GraphQL client.

PostgreSQL is the machine's server (CREDITS_TEST_POSTGRES_URL, default below): each test run creates
its own database there and drops it at the end, so runs do not collide. CREDITS_TEST_DATABASES
(comma-separated, default "sqlite,postgresql") limits the backends."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from sqlalchemy import text

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime, bootstrap
from credits_graphql.domain.access import Role
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import access, usage_combiner
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import RecordUsage
from credits_graphql.settings import Environment, Settings
from credits_graphql.store.engine import create_engine
from credits_graphql.store.migrate import upgrade_database
from credits_graphql.store.tables import metadata

POSTGRES_URL = os.environ.get("CREDITS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("CREDITS_TEST_DATABASES", "sqlite,postgresql").split(",") if b.strip()]


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "credits.db"
    asyncio.run(upgrade_database(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_run_url() -> Iterator[str]:
    """A database of this run's own on the machine's PostgreSQL, migrated once."""
    name = f"credits_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    base = POSTGRES_URL.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    asyncio.run(upgrade_database(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "credits.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_run_url")
    asyncio.run(_truncate(url))
    return url


async def _truncate(url: str) -> None:
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


class Clock:
    """A clock the test moves by hand; starts at the real now so that API timestamps look real."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway() -> SandboxGateway:
    return SandboxGateway()


@pytest.fixture
async def runtime(database_url: str, gateway: SandboxGateway, clock: Clock) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=database_url, env=Environment.DEV, graphiql=True, introspection=True)
    base = bootstrap(settings, gateway=gateway)
    runtime = replace(base, deps=replace(base.deps, clock=clock))
    yield runtime
    await runtime.close()


@pytest.fixture
def deps(runtime: Runtime) -> Deps:
    return runtime.deps


@dataclass(frozen=True)
class Org:
    id: int
    admin: str
    reader: str
    usage_writer: str


async def make_org(deps: Deps, name: str = "Acme") -> Org:
    org = await access.create_organization(deps, name)
    keys = {role: (await access.create_api_key(deps, org.id, role))[1] for role in Role}
    return Org(id=org.id, admin=keys[Role.ADMIN], reader=keys[Role.READER], usage_writer=keys[Role.USAGE_WRITER])


@pytest.fixture
async def org(deps: Deps) -> Org:
    return await make_org(deps)


class GraphQLClient:
    """Posts GraphQL documents to the ASGI app, as a client would."""

    def __init__(self, http: httpx.AsyncClient, key: str | None) -> None:
        self.http = http
        self.key = key

    def as_key(self, key: str | None) -> GraphQLClient:
        return GraphQLClient(self.http, key)

    async def post(self, query: str, variables: dict[str, Any] | None = None, *, key: str | None = None,
                   ) -> httpx.Response:
        key = key or self.key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                    headers=headers)

    async def __call__(self, query: str, variables: dict[str, Any] | None = None, *, key: str | None = None,
                       ) -> dict[str, Any]:
        """The `data` of a request that must succeed without GraphQL errors."""
        response = await self.post(query, variables, key=key)
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(runtime, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient, org: Org) -> GraphQLClient:
    return GraphQLClient(http, org.admin)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls run on an SQLite connection's thread (aiosqlite), in order."""
    calls: list[str] = []
    run_on_thread = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await run_on_thread(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


@pytest.fixture
def usage_groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group of usage reports that shared a transaction (service/usage_combiner.py); a report
    that went alone is not one."""
    sizes: list[int] = []
    run = usage_combiner.record_usages

    async def counted(deps: Deps, items: Sequence[tuple[int, RecordUsage]], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(items))
        return await run(deps, items, *args, **kwargs)

    monkeypatch.setattr(usage_combiner, "record_usages", counted)
    return sizes
