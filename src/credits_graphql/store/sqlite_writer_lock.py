"""The line that SQLite writers of several processes wait in, on one database file.

SQLite lets one write transaction in at a time. A writer that finds the file locked waits in SQLite's busy
handler, which sleeps and polls (1, 2, 5, 10 ... 100 ms); meanwhile the process holding the lock begins its
next transaction at once, so with `serve --workers 2` a writer could lose to the other process for hundreds of
milliseconds. Writers here first take an advisory lock on a file beside the database (`<database>-writer`,
flock): the kernel wakes the waiter as soon as the holder lets go. Only the connection's own thread takes,
waits on and releases it (never the event loop), and the kernel releases it when the process dies. SQLite's
own locking is unchanged: it alone keeps the data right, and a writer that does not take this lock (the
sqlite3 shell, say) is still waited for in the busy handler."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time

POLL_SECONDS = 0.0005  # between tries while another process holds the lock; the hand-over waits at most this


class WriterLock:
    """One per connection (its own open file), used from that connection's thread only."""

    def __init__(self, database: str, timeout: float) -> None:
        self._fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._timeout = timeout
        self.held = False

    def acquire(self) -> None:
        """Waits up to the busy timeout, as SQLite would, then fails as SQLite does."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(POLL_SECONDS)
            else:
                self.held = True
                return

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.held = False
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # releases the lock if held
