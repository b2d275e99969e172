"""Schema migrations through Alembic, with the scripts shipped inside the package."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from credits_graphql.store.engine import WRITE_OPTION, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6372_6564_6974_73  # pg_advisory_xact_lock's key, the same for every `migrate`
log = logging.getLogger(__name__)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine) -> None:
    """Brings the database to the newest revision; running it again changes nothing. Two at once run one after
    the other: the second finds nothing to do. A database a newer release migrated is left as it is (logged): a
    `migrate` of the older release, during a rolling upgrade, must not stop its processes from starting."""
    def run(connection: Connection) -> None:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with connected(engine.execution_options(**{WRITE_OPTION: True})) as connection, connection.begin():
        # Wait for any other migration before the revision is read: on PostgreSQL an advisory lock, on
        # SQLite the write lock (BEGIN IMMEDIATE, WRITE_OPTION's, sent with this first statement).
        if engine.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        else:
            await connection.execute(text("SELECT 1"))
        if is_newer_than_release(current := await current_revision(connection)):
            log.warning("database schema is at revision %s, newer than this release's %s: nothing to migrate",
                        current, _release().head)
            return
        await connection.run_sync(run)


async def upgrade_database(url: str) -> None:
    """upgrade(), on an engine of its own for the database at `url`."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def upgrade_sync(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def schema_problem(url: str, *, wait_if_unreachable: bool = False) -> str | None:
    """Why the code cannot run on the database at `url` (its schema is behind this release's, or its revision cannot
    be read), or None. A database that cannot be reached raises DatabaseUnreachable. With `wait_if_unreachable` (a
    server or a worker, which waits for its database as it always has), neither is checked (logged).
    Runs on a thread of its own, so it can be called inside a running event loop (uvicorn's app factory is)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        try:
            return thread.submit(asyncio.run, _schema_problem(url)).result()
        except (DatabaseUnreachable, OSError, DBAPIError) as error:
            reason = error.orig if isinstance(error, DBAPIError) else error
            if wait_if_unreachable:
                log.warning("could not read the database schema's revision, not checked: %s", reason)
                return None
            if isinstance(error, DatabaseUnreachable):
                raise
            return f"could not read the database schema's revision: {reason}"


async def _schema_problem(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with connected(engine) as connection:
            current = await current_revision(connection)
    finally:
        await engine.dispose()
    if is_newer_than_release(current):
        # A newer release migrated it: expand/contract migrations let the older code run on it meanwhile (README,
        # Zero-downtime upgrades), and a process of it restarted during a rolling upgrade must start.
        log.warning("database schema is at revision %s, newer than this release's %s: running on it",
                    current, _release().head)
    return revision_problem(current)


class DatabaseUnreachable(Exception):
    """No connection to the database could be opened: refused, no such host, timed out, or the server refused
    the credentials or the database name. The message is the driver's reason."""


@contextlib.asynccontextmanager
async def connected(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of `engine`; DatabaseUnreachable when none can be opened (an error once connected is raised as
    it is)."""
    try:
        connection = await engine.connect()
    except (OSError, DBAPIError) as error:
        reason = error.orig if isinstance(error, DBAPIError) else error
        raise DatabaseUnreachable(str(reason) or type(reason).__name__) from error
    try:
        yield connection
    finally:
        await connection.close()


async def current_revision(connection: AsyncConnection) -> str | None:
    """The revision the database's schema is at; None before the first migration."""
    return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def revision_problem(current: str | None) -> str | None:
    """Why code of this release cannot run on a schema at revision `current` (it is behind this release's), or
    None: at this release's revision, or at a newer release's (one this release does not know)."""
    head = _release().head
    if current == head or is_newer_than_release(current):
        return None
    return f"database schema is at revision {current or 'none'}, this release needs {head}: run credits-graphql migrate"


def is_newer_than_release(current: str | None) -> bool:
    return current is not None and current not in _release().revisions


@dataclass(frozen=True, slots=True)
class _Release:
    head: str
    revisions: frozenset[str]


@functools.cache
def _release() -> _Release:
    """This release's migrations, read once: they ship inside the package."""
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None, "the package ships its migrations"
    return _Release(head, frozenset(revision.revision for revision in script.walk_revisions()))


__all__ = ["DatabaseUnreachable", "alembic_config", "asyncio", "connected", "current_revision", "is_newer_than_release",
           "revision_problem", "schema_problem", "upgrade", "upgrade_database", "upgrade_sync"]
