"""The line that SQLite writers of several processes wait in, on one database file.

SQLite lets one write transaction in at a time. A writer that finds the file locked waits in SQLite's busy
handler, which sleeps and polls (1, 2, 5, 10 ... 100 ms); meanwhile the process holding the lock begins its
next transaction at once, so with `serve --workers 2` a writer could lose to the other process for hundreds of
milliseconds. Writers here first take an advisory lock on a file beside the database (`<database>-writer`,
flock), tried every POLL_SECONDS while another process holds it: the hand-over waits at most that. Only the
connection's own thread takes, waits on and releases it (never the event loop), and the kernel releases it when
the process dies. SQLite's own locking is unchanged: it alone keeps the data right, and a writer that does not
take this lock (the sqlite3 shell, say) is still waited for in the busy handler.

The writers of one process first wait for each other on a lock of the process, which wakes the next at once and
costs nothing while it waits: only one of them tries the file. When each connection's thread polled the file,
every waiter woke 2,000 times a second and took the GIL each time: with 8 batches in line, the event loop's
thread spent ~20 % more CPU per batch (recordUsageBatch on SQLite, 8 connections: ~12,300 usage entries/s with
every waiter polling, ~15,200 with one)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

POLL_SECONDS = 0.0005  # between tries while another process holds the lock; the hand-over waits at most this

_IN_PROCESS: dict[str, threading.Lock] = {}
"""The line of each database file among this process's writers (all its engines' connections)."""
# A child forked while a writer held its line would inherit the line held, by nobody: its writers get their own.
os.register_at_fork(after_in_child=_IN_PROCESS.clear)


class WriterLock:
    """One per connection (its own open file), used from that connection's thread only."""

    def __init__(self, database: str, timeout: float) -> None:
        self._fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._timeout = timeout
        self._in_process = _IN_PROCESS.setdefault(os.path.realpath(database), threading.Lock())
        self.held = False

    def acquire(self) -> None:
        """Waits up to the busy timeout, as SQLite would, then fails as SQLite does."""
        deadline = time.monotonic() + self._timeout
        if not self._in_process.acquire(timeout=self._timeout):
            raise sqlite3.OperationalError("database is locked")
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._in_process.release()
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(POLL_SECONDS)
            else:
                self.held = True
                return

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._in_process.release()

    def close(self) -> None:
        held, self.held = self.held, False
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # releases the file's lock if held
        if held:
            self._in_process.release()
