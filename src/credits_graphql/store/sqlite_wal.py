"""Switching a SQLite database to WAL when other connections may be writing to it."""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger(__name__)


def switch_to_wal(connection: sqlite3.Connection, timeout_seconds: float) -> None:
    """`PRAGMA journal_mode=WAL`, waiting up to `timeout_seconds` for other writers. A new database's switch needs
    it alone, and while another connection writes to it (two processes starting on a new file at once) SQLite
    refuses the switch at once, without waiting in its busy handler: tried again here, on the caller's thread."""
    deadline = time.monotonic() + timeout_seconds
    waited = False
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            if not waited:
                log.info("another connection is writing to the new database; waiting to switch it to WAL")
                waited = True
            time.sleep(0.01)
