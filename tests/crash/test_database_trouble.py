"""PostgreSQL going away under a running `serve`: clean JSON errors and no partial writes, /readyz 503 and
back, and recovery without a restart. The machine's server is shared, so the outage is simulated: `serve`
reaches PostgreSQL through a TCP proxy the test cuts, and the test kills its backends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.crash.conftest import assert_balances_are_sums, asyncpg_dsn, crash_env, start_servers, wait_for
from tests.e2e.conftest import (
    RECORD_USAGE,
    Api,
    Launcher,
    create_org_and_key,
    free_port,
    funded_account_with_auto_recharge,
    migrated,
)

pytestmark = pytest.mark.slow


class CuttableProxy:
    """Forwards 127.0.0.1:port to PostgreSQL from a thread of its own; `cut()` drops every connection and
    refuses new ones, `restore()` listens again."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._close())

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, upstream_writer})
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target_port=5432)
    proxy.restore()
    yield proxy
    proxy.stop()


async def _ready(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


async def _is_ready(client: httpx.AsyncClient) -> bool:
    return await _ready(client) == 200


async def _entries(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM ledger_entries"))
    finally:
        await connection.close()


def _is_clean_error(response: httpx.Response) -> bool:
    """JSON errors with a code, no traceback or driver detail, never a bare 500."""
    body = response.json()
    text = response.text.lower()
    return (response.status_code in {200, 503} and body.get("errors")
            and all(error.get("extensions", {}).get("code") for error in body["errors"])
            and not any(word in text for word in ("traceback", "asyncpg", "sqlalchemy", "connection refused")))


async def test_a_database_outage_gives_clean_errors_and_the_service_recovers_without_a_restart(
        tmp_path: Path, postgres_url: str, launch: Launcher, proxy: CuttableProxy) -> None:
    url = migrated(postgres_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    dsn = asyncpg_dsn(url)
    via_proxy = url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    assert via_proxy != url
    [server] = start_servers(launch, crash_env(via_proxy, tmp_path / "journal.db"), 1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client, key)
        account_id = await funded_account_with_auto_recharge(api, funds="100", recharge_amount="50", trigger="20")
        assert await _ready(client) == 200
        before = await _entries(dsn)

        proxy.cut()
        assert await _ready(client) == 503
        during = [await api.post(RECORD_USAGE, {"id": account_id, "amount": "5", "key": f"outage-{n}"})
                  for n in range(3)]
        assert all(_is_clean_error(response) for response in during), [r.text for r in during]
        assert await _entries(dsn) == before  # nothing half-written

        proxy.restore()
        await wait_for(lambda: _is_ready(client), "/readyz back to 200", 10)
        retried = await api(RECORD_USAGE, {"id": account_id, "amount": "5", "key": "outage-0"})
        assert retried["recordUsage"]["transaction"]["amount"]["amount"] == "-5.00"

        # Backends killed under the pool (a PostgreSQL restart looks like this): the dead connections are
        # replaced at checkout, or the request's first read runs again on a new one.
        killer = await asyncpg.connect(dsn)
        try:
            killed = await killer.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()) AS terminated")
        finally:
            await killer.close()
        assert killed >= 1
        after_restart = await api(RECORD_USAGE, {"id": account_id, "amount": "5", "key": "after-restart"})
        assert after_restart["recordUsage"]["transaction"]["amount"]["amount"] == "-5.00"
        assert await _ready(client) == 200

    assert await _entries(dsn) == before + 2
    await assert_balances_are_sums(dsn)
    assert server.process.terminate() == 0
    assert "Traceback" not in server.process.stdout


async def test_a_worker_started_before_its_database_waits_for_it_then_stops_on_a_schema_behind_its_release(
        tmp_path: Path, postgres_url: str, launch: Launcher, proxy: CuttableProxy) -> None:
    """A worker that skipped the schema check while the database was down ran on a schema behind its release:
    three tracebacks a second, for as long as it ran, and no recharge charged."""
    url = migrated(postgres_url, tmp_path)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("UPDATE alembic_version SET version_num = '0003'")
    finally:
        await connection.close()
    via_proxy = url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    proxy.cut()
    worker = launch("worker", env=crash_env(via_proxy, tmp_path / "journal.db"))
    await wait_for(lambda: "waiting for the database" in worker.stderr, "the worker waiting", 20)
    assert worker.popen.poll() is None, worker.describe()

    proxy.restore()
    await wait_for(lambda: worker.popen.poll() is not None, "the worker stopping", 20)
    assert worker.popen.returncode == 2, worker.describe()
    assert ("database schema is at revision 0003, this release needs 0008: run credits-graphql migrate"
            in worker.stderr), worker.describe()
    assert "Traceback" not in worker.stderr
