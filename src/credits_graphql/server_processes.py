"""`serve --workers N`: uvicorn's supervisor, with a listening socket of its own in each server process.

uvicorn hands every process the one socket its parent bound. A process that wakes on it accepts every
connection waiting, so a burst of new connections lands on one process, and a keep-alive client stays
where it landed: with 32 connections opened at once, `ss` showed 32/0, 30/2 and 31/1 between two processes,
and a second process that serves nothing adds nothing. Here each process binds the address itself with
SO_REUSEPORT and the kernel spreads new connections across the processes' sockets. The parent binds it
first, the same way but without listening (so no connection waits on its socket), which fails `serve` at
once when the port is taken by a server without SO_REUSEPORT; and it claims the port (port_claim), which fails a
second `serve --workers` on it, which SO_REUSEPORT alone would let join the port and take a share of its
connections to another database or another release."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

from uvicorn import Config
from uvicorn.supervisors import multiprocess


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """Bound, not listening: uvicorn listens on it when it starts serving."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_claim(port: int) -> socket.socket | None:
    """Held by one `serve --workers` per port at a time: an abstract UNIX socket named after the port, which lives in
    the same network namespace as the port and which the kernel drops with the process that holds it. Raises
    OSError (EADDRINUSE) when another server holds it. None where there are no abstract sockets (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    claim = socket.socket(socket.AF_UNIX)
    try:
        claim.bind(f"\0credits-graphql:port:{port}")
    except OSError:
        claim.close()
        raise
    return claim


class _OwnSocketProcess(multiprocess.Process):
    """Runs in the server process (spawned): serves on a socket it binds, not on the parent's."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover (child)
        config: Config = self.config
        super().target([reuse_port_socket(config.host, config.port)])


@contextlib.contextmanager
def own_sockets() -> Iterator[None]:
    """While the supervisor runs: the processes it starts (or restarts) bind their own socket. uvicorn's
    Multiprocess creates them through this module-level name only."""
    original = multiprocess.Process
    multiprocess.Process = _OwnSocketProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]
