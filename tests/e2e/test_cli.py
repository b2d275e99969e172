"""The installed `credits-graphql` command, run from a directory that is not the repository."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from credits_graphql import cli
from tests.e2e.conftest import (
    Launcher,
    as_admin,
    cli_env,
    create_org_and_key,
    free_port,
    migrated,
    run_cli,
    start_server,
)

pytestmark = pytest.mark.slow

ACCOUNTS = "{ accounts { totalCount } }"


def _key_rows(stdout: str) -> dict[int, list[str]]:
    """list-api-keys rows by key id: [id, role, prefix, created, last used, revoked, expires, status]."""
    rows = {}
    for line in stdout.strip().splitlines()[1:]:
        columns = line.split()
        rows[int(columns[0])] = columns
    return rows


def test_migrate_is_idempotent_from_any_directory(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_env(sqlite_url)
    first = run_cli("migrate", env=env, cwd=tmp_path)
    second = run_cli("migrate", env=env, cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert (tmp_path / "c.db").exists()
    org = run_cli("create-org", "After two migrations", env=env, cwd=tmp_path)
    assert org.returncode == 0, org.stderr


def test_create_org_prints_the_new_id_as_its_last_line(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_env(migrated(sqlite_url, tmp_path))
    first = run_cli("create-org", "Acme", env=env, cwd=tmp_path)
    second = run_cli("create-org", "Globex", env=env, cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0)
    assert first.last_line.isdigit()
    assert second.last_line.isdigit()
    assert first.last_line != second.last_line


def test_a_created_key_is_listed_without_its_secret_works_and_stops_working_once_revoked(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    env = cli_env(migrated(sqlite_url, tmp_path))
    org = run_cli("create-org", "Acme", env=env, cwd=tmp_path).last_line
    created = run_cli("create-api-key", "--org", org, "--role", "ADMIN", env=env, cwd=tmp_path)
    reader = run_cli("create-api-key", "--org", org, "--role", "READER", env=env, cwd=tmp_path)
    assert (created.returncode, reader.returncode) == (0, 0), created.stderr + reader.stderr
    key = created.last_line
    assert " " not in key
    assert len(key) >= 20

    listed = run_cli("list-api-keys", "--org", org, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout
    assert reader.last_line not in listed.stdout
    rows = _key_rows(listed.stdout)
    assert sorted(row[1] for row in rows.values()) == ["ADMIN", "READER"]
    admin_id = next(key_id for key_id, row in rows.items() if row[1] == "ADMIN")
    assert rows[admin_id][4:] == ["-", "-", "-", "live"]  # never used, not revoked, no expiry

    server = start_server(launch, cli_env(sqlite_url))
    auth = {"Authorization": f"Bearer {key}"}
    works = httpx.post(server.graphql_url, json={"query": ACCOUNTS}, headers=auth)
    assert works.status_code == 200
    assert works.json() == {"data": {"accounts": {"totalCount": 0}}}
    used = _key_rows(run_cli("list-api-keys", "--org", org, env=env, cwd=tmp_path).stdout)[admin_id]
    assert used[4] != "-", "the last-used time is shown once the key has been used"

    revoked = run_cli("revoke-api-key", str(admin_id), env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    refused = httpx.post(server.graphql_url, json={"query": ACCOUNTS}, headers=auth)
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    still = httpx.post(server.graphql_url, json={"query": ACCOUNTS},
                       headers={"Authorization": f"Bearer {reader.last_line}"})
    assert still.status_code == 200, "revoking one key leaves the organization's other keys working"
    assert _key_rows(run_cli("list-api-keys", "--org", org, env=env, cwd=tmp_path).stdout)[admin_id][5] != "-"


@pytest.mark.parametrize(("args", "error"), [
    (["create-api-key", "--org", "999", "--role", "ADMIN"], "create-api-key: error: no organization with id 999"),
    (["list-api-keys", "--org", "999"], "list-api-keys: error: no organization with id 999"),
    (["revoke-api-key", "4242"], "revoke-api-key: error: no live API key with id 4242"),
    (["create-api-key", "--org", "1", "--role", "ADMIN", "--expires-at", "2001-01-01T00:00:00+00:00"],
     "create-api-key: error: "),
], ids=["key-for-unknown-org", "keys-of-unknown-org", "unknown-key", "expiry-in-the-past"])
def test_an_argument_naming_nothing_there_exits_2_with_the_usage_line_and_a_one_line_error(
        tmp_path: Path, sqlite_url: str, args: list[str], error: str) -> None:
    env = cli_env(migrated(sqlite_url, tmp_path))
    assert run_cli("create-org", "Acme", env=env, cwd=tmp_path).returncode == 0
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.strip() == ""
    assert result.error_lines[0].startswith(f"usage: credits-graphql {args[0]}"), result.stderr
    assert [line for line in result.error_lines if "error:" in line] == [result.error_lines[-1]], result.stderr
    assert result.error_lines[-1].startswith(f"credits-graphql {error}"), result.stderr


@pytest.mark.parametrize(("args", "mentions"), [
    (["create-api-key", "--org", "1"], "--role"),
    (["create-api-key", "--org", "1", "--role", "KING"], "KING"),
    ([], "COMMAND"),
    (["revoke-api-key", "abc"], "abc"),
    (["create-org", "  "], "name"),
    (["create-org", "x" * 201], "name"),
    (["create-api-key", "--org", str(2**63), "--role", "ADMIN"], str(2**63)),
    (["list-api-keys", "--org", "99999999999999999999999"], "99999999999999999999999"),
    (["revoke-api-key", str(2**63)], str(2**63)),
    (["create-api-key", "--org", "1", "--role", "ADMIN", "--expires-at", "9999-12-31T23:59:59-05:00"], "9999"),
    (["check-ledger", "--repair"], "--repair"),
], ids=["missing-role", "unknown-role", "no-command", "non-numeric-key-id", "blank-org-name", "long-org-name",
        "org-id-over-64-bits", "listed-org-id-over-64-bits", "key-id-over-64-bits", "expiry-past-year-9999-in-utc",
        "check-ledger-unknown-option"])
def test_bad_arguments_exit_2_with_a_usage_line_and_a_one_line_error(
        tmp_path: Path, sqlite_url: str, args: list[str], mentions: str) -> None:
    result = run_cli(*args, env=cli_env(sqlite_url), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.error_lines
    assert lines[0].startswith("usage: credits-graphql"), result.stderr
    errors = [line for line in lines if "error:" in line]
    assert errors == [lines[-1]], result.stderr
    assert mentions in errors[0]
    assert not (tmp_path / "c.db").exists(), "bad arguments touch no database"


@pytest.mark.parametrize(("variable", "value"), [
    ("CREDITS_MIN_PURCHASE", "abc"),
    ("CREDITS_ENV", "staging"),
    ("CREDITS_RECHARGE_RETRY_SECONDS", "5"),
    ("CREDITS_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:notaport/credits"),
    ("CREDITS_DATABASE_URL", "sqlite+aiosqlite://"),
    ("CREDITS_DB_POOL_SIZE", "²"),
    ("CREDITS_SANDBOX_JOURNAL", "/nonexistent/dir/journal.db"),
    ("CREDITS_MAX_PURCHASE", "99999999999999999999999"),
    ("CREDITS_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:99999/credits"),
    ("CREDITS_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/credits?sslmode=require"),
    ("CREDITS_DATABASE_URL", "sqlite+aiosqlite:////nonexistent/dir/credits.db"),
    ("CREDITS_DATABASE_URL", "sqlite+aiosqlite:////tmp"),
], ids=["min-purchase", "env", "retry-seconds", "url-port-not-a-number", "url-in-memory", "pool-size", "journal-dir",
        "max-purchase", "url-port-out-of-range", "url-sslmode", "url-sqlite-dir-missing", "url-sqlite-is-a-dir"])
@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_bad_setting_stops_start_up_with_a_one_line_message_naming_the_variable(
        tmp_path: Path, sqlite_url: str, variable: str, value: str, command: str) -> None:
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    result = run_cli(*args, env=cli_env(sqlite_url, **{variable: value}), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert variable in result.error_lines[0]
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stdout


def test_migrate_and_create_org_work_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    env = cli_env(postgres_url)
    first = run_cli("migrate", env=env, cwd=tmp_path)
    second = run_cli("migrate", env=env, cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    org_id, key = create_org_and_key(postgres_url, tmp_path)
    assert org_id > 0
    assert key
    listed = run_cli("list-api-keys", "--org", str(org_id), env=env, cwd=tmp_path)
    assert listed.returncode == 0
    assert key not in listed.stdout
    assert [row[1] for row in _key_rows(listed.stdout).values()] == ["ADMIN"]


def test_migrate_by_a_role_without_the_right_to_change_the_schema_stops_with_one_line(
        tmp_path: Path, postgres_url: str) -> None:
    """Operators often run the service with a least-privilege role: its `migrate` printed a 163-line traceback."""
    role = f"credits_app_{uuid.uuid4().hex[:8]}"
    asyncio.run(as_admin(f'CREATE ROLE "{role}" LOGIN'))
    try:
        result = run_cli("migrate", env=cli_env(postgres_url.replace("//postgres@", f"//{role}@", 1)), cwd=tmp_path)
    finally:
        asyncio.run(as_admin(f'DROP ROLE "{role}"'))
    assert result.returncode == 1, result.stderr
    assert result.error_lines == ["credits-graphql: error: the database refused the migration: permission denied "
                                  "for schema public"], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [
    ["create-org", "Acme"], ["create-api-key", "--org", "1", "--role", "ADMIN"], ["list-api-keys", "--org", "1"],
    ["revoke-api-key", "1"], ["worker"], ["serve"], ["serve", "--workers", "2"], ["reconcile-charges"],
    ["check-ledger", "--fix-counts"],
], ids=["create-org", "create-api-key", "list-api-keys", "revoke-api-key", "worker", "serve", "serve-workers",
        "reconcile-charges", "check-ledger"])
def test_a_command_on_an_unmigrated_database_stops_with_a_one_line_error_saying_to_migrate(
        tmp_path: Path, sqlite_url: str, args: list[str]) -> None:
    if args[0] == "serve":
        args = [*args, "--port", str(free_port())]
    result = run_cli(*args, env=cli_env(sqlite_url), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.error_lines == ["credits-graphql: error: database schema is at revision none, this release "
                                  "needs 0008: run credits-graphql migrate (CREDITS_DATABASE_URL: the SQLite file "
                                  f"{(tmp_path / 'c.db').resolve()})"], result.stderr
    assert "serving" not in result.stdout


def test_a_command_run_from_another_directory_names_the_database_file_it_found_unmigrated(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("create-api-key", "--org", "1", "--role", "ADMIN", env=cli_env(""), cwd=elsewhere)
    assert result.returncode == 2, result.stderr
    [line] = result.error_lines
    assert line.endswith(f"run credits-graphql migrate (CREDITS_DATABASE_URL: the SQLite file "
                         f"{(elsewhere / 'credits.db').resolve()})"), line


def test_a_command_on_a_migrated_database_writes_nothing_to_stderr(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_env(migrated(sqlite_url, tmp_path))
    for args in (["create-org", "Acme"], ["list-api-keys", "--org", "1"], ["check-ledger"]):
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (0, ""), args


def _set_revision(database: Path, revision: str) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_a_database_behind_the_release_is_refused_until_it_is_migrated_and_one_ahead_is_used(
        tmp_path: Path, sqlite_url: str) -> None:
    """Ahead: migrated by a newer release, whose expand-only migrations the older code runs on during a rolling
    upgrade (README, Zero-downtime upgrades)."""
    env = cli_env(migrated(sqlite_url, tmp_path))
    _set_revision(tmp_path / "c.db", "0003")
    behind = run_cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert behind.returncode == 2, behind.stderr
    assert behind.error_lines == ["credits-graphql: error: database schema is at revision 0003, this release "
                                  "needs 0008: run credits-graphql migrate (CREDITS_DATABASE_URL: the SQLite file "
                                  f"{(tmp_path / 'c.db').resolve()})"], behind.stderr

    _set_revision(tmp_path / "c.db", "0099")
    ahead = run_cli("create-org", "Acme", env=env, cwd=tmp_path)
    assert ahead.returncode == 0, ahead.stderr
    assert "database schema is at revision 0099, newer than this release's 0008: running on it" in ahead.stderr

    _set_revision(tmp_path / "c.db", "0008")
    assert run_cli("create-org", "Acme", env=env, cwd=tmp_path).returncode == 0


def _query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of `sql` (or none, for a statement), on either database."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(str(make_url(database_url).database)) as connection:
            return connection.execute(sql).fetchall()

    async def run() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(run())


def _schema(database_url: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite"):
        return _query(database_url, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
    return _query(database_url, "SELECT table_name, column_name, data_type, is_nullable "
                                "FROM information_schema.columns WHERE table_schema = 'public' "
                                "ORDER BY table_name, column_name")


def test_migrate_on_a_database_a_newer_release_migrated_warns_changes_nothing_and_succeeds(
        tmp_path: Path, any_database_url: str) -> None:
    """During a rolling upgrade an older release's `migrate` (its deploy step, which its replicas wait for) meets the
    newer release's schema: README, Zero-downtime upgrades."""
    env = cli_env(migrated(any_database_url, tmp_path))
    _query(any_database_url, "UPDATE alembic_version SET version_num = '0099'")
    before = _schema(any_database_url)

    result = run_cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert ("database schema is at revision 0099, newer than this release's 0008: nothing to migrate"
            in result.stderr), result.stderr
    assert _query(any_database_url, "SELECT version_num FROM alembic_version") == [("0099",)]
    assert _schema(any_database_url) == before


async def test_a_schema_revision_that_cannot_be_read_stops_a_command_with_one_line_and_a_server_waits(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    env = cli_env(migrated(sqlite_url, tmp_path))
    with sqlite3.connect(make_url(sqlite_url).database or "") as connection:  # a view over a table that is gone
        connection.execute("ALTER TABLE alembic_version RENAME TO alembic_version_kept")
        connection.execute("CREATE VIEW alembic_version AS SELECT version_num FROM gone")

    result = run_cli("list-api-keys", "--org", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.error_lines == ["credits-graphql: error: could not read the database schema's revision: no such "
                                  "table: main.gone (CREDITS_DATABASE_URL: the SQLite file "
                                  f"{(tmp_path / 'c.db').resolve()})"], result.stderr

    server = start_server(launch, {**env, "CREDITS_ENV": "prod"})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "database": "schema unreadable",
                                                       "detail": "the schema's revision could not be read (see the "
                                                                 "log)"})
    assert server.process.terminate() == 0, server.process.describe()


def test_an_unmigrated_postgresql_database_is_refused_too(tmp_path: Path, postgres_url: str) -> None:
    result = run_cli("create-org", "Acme", env=cli_env(postgres_url), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.error_lines == ["credits-graphql: error: database schema is at revision none, this release "
                                  "needs 0008: run credits-graphql migrate (CREDITS_DATABASE_URL: "
                                  f"{postgres_url})"], result.stderr
    assert run_cli("migrate", env=cli_env(postgres_url), cwd=tmp_path).returncode == 0
    assert run_cli("create-org", "Acme", env=cli_env(postgres_url), cwd=tmp_path).returncode == 0


def _unreachable_postgresql() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/credits"  # nothing listens there


@pytest.mark.parametrize("args", [
    ["migrate"], ["create-org", "Acme"], ["create-api-key", "--org", "1", "--role", "ADMIN"],
    ["list-api-keys", "--org", "1"], ["revoke-api-key", "1"], ["reconcile-charges"], ["check-ledger"], ["serve"],
], ids=["migrate", "create-org", "create-api-key", "list-api-keys", "revoke-api-key", "reconcile-charges",
        "check-ledger", "dev-serve"])
def test_a_command_on_an_unreachable_database_stops_with_a_one_line_error_and_status_1(
        tmp_path: Path, args: list[str]) -> None:
    if args[0] == "serve":
        args = [*args, "--port", str(free_port())]
    result = run_cli(*args, env=cli_env(_unreachable_postgresql(), CREDITS_ENV="dev"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.error_lines
    assert line.startswith("credits-graphql: error: cannot connect to the database (CREDITS_DATABASE_URL): "), line
    assert "Connect call failed" in line
    assert "serving" not in result.stdout


def test_a_database_lost_after_the_schema_check_stops_a_command_with_the_same_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """In process: the check passes (the database was there), then the command cannot connect."""
    monkeypatch.setattr(cli, "schema_problem", lambda *_args, **_kwargs: None)
    monkeypatch.setenv("CREDITS_DATABASE_URL", _unreachable_postgresql())
    with pytest.raises(SystemExit) as exited:
        cli.main(["create-org", "Acme"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "credits-graphql: error: cannot connect to the database (CREDITS_DATABASE_URL): database unreachable "
        "(ConnectionRefusedError)"]


async def test_a_production_server_started_on_an_unreachable_database_waits_for_it(
        tmp_path: Path, launch: Launcher) -> None:
    server = start_server(launch, cli_env(_unreachable_postgresql()))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "database": "unreachable"})
    assert server.process.terminate() == 0, server.process.describe()


def test_migrate_does_not_open_the_sandbox_journal(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_env(sqlite_url, CREDITS_SANDBOX_JOURNAL=str(tmp_path))  # a directory: the gateway could not open it
    result = run_cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.last_line == "database is up to date"
