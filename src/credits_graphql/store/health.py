"""What /readyz asks of the store besides a connection: whether the database takes writes, and whether the SQLite
file is still the one the process opened."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def takes_no_writes(connection: AsyncConnection) -> bool:
    """Whether the database refuses writes now: PostgreSQL as a standby, or read-only by default (as a demoted primary
    may be after a failover). It runs a statement either way, so it also tells whether the connection works."""
    if connection.dialect.name != "postgresql":
        await connection.execute(text("SELECT 1"))
        return False
    return bool((await connection.execute(text(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"))).scalar_one())


class DatabaseFile:
    """The SQLite file as the process found it at start, so that /readyz tells when the path no longer names it: a
    file deleted, or replaced (a backup restored) under running processes, which go on writing to the file they
    opened, or pair a new file with the old one's WAL. None of that on PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._path = engine.url.database if engine.dialect.name == "sqlite" else None
        self._found = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        if not self._path:
            return None
        try:
            found = os.stat(self._path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def problem(self) -> str | None:
        """What became of the file, or None while its path names the file found at start."""
        if self._found is None:
            return None
        now = self._identity()
        if now == self._found:
            return None
        what = "deleted" if now is None else "replaced"
        return (f"the database file {self._path} was {what} while the service ran: stop every process, mend the "
                "file (README, SQLite files), then start them")
