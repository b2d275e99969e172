"""Processes that open a new SQLite file at once (two `migrate`, replicas sharing a sandbox journal): SQLite refuses a
switch to WAL at once, without its busy handler, while another connection writes to the file; each waits instead."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from credits_graphql.gateways.sandbox import SqliteJournal
from credits_graphql.store.engine import create_engine
from tests.crash.conftest import wait_for

WAITING = "waiting to switch it to WAL"


@contextmanager
def writing_to_a_new_file(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection, in its first write transaction on a new file (still in rollback-journal mode)."""
    first = sqlite3.connect(path, isolation_level=None)
    try:
        first.execute("BEGIN IMMEDIATE")
        yield first
    finally:
        first.close()


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="credits_graphql.store.sqlite_wal")
    return caplog


async def test_a_connection_of_the_engine_waits_for_the_first_writer_of_a_new_database(
        tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "new.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with writing_to_a_new_file(path) as first:
            first.execute("CREATE TABLE t (v TEXT)")  # the first migration

            async def read() -> list[str]:
                async with engine.connect() as connection:
                    return [row.v for row in await connection.execute(text("SELECT v FROM t"))]

            second = asyncio.create_task(read())
            await wait_for(lambda: second.done() or WAITING in log.text, "the engine waiting for the first writer", 10)
            first.execute("INSERT INTO t (v) VALUES ('migrated')")
            first.execute("COMMIT")
            assert await second == ["migrated"]
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    finally:
        await engine.dispose()


async def test_a_sandbox_journal_opened_by_two_processes_at_once_waits_for_the_first(
        tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.db"
    with writing_to_a_new_file(path) as first:
        first.execute(SqliteJournal._SCHEMA)  # the other replica, creating the journal
        second = asyncio.create_task(asyncio.to_thread(SqliteJournal, path))
        await wait_for(lambda: second.done() or WAITING in log.text, "the journal waiting for the first writer", 10)
        first.execute("COMMIT")
        journal = await second
    assert journal.path == path
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
