"""Where the machine's CPU went during a load run, read from /proc (Linux): the service's processes, the database
server's, the load generator's, and the cores left idle. A scale-out factor means little without it: the service,
PostgreSQL and wrk share the same cores, so a second process of the service gets what the database and the load
generator leave of the second core, not a core of its own."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
DATABASE_SERVER = "postgres"  # the process name of PostgreSQL's server and backends; SQLite runs in the service


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds used so far by each party, and the machine's idle seconds (all cores), at a monotonic time."""

    at: float
    service: float
    database: float
    load_generator: float
    idle: float


@dataclass(frozen=True)
class CpuPerRequest:
    service_us: float
    database_us: float
    load_generator_us: float
    idle_cores: float


def snapshot(service_pid: int) -> Snapshot:
    """`service_pid` and its descendants (serve --workers N: the supervisor and its workers) make the service; the
    load generator is every child of this process that has ended (each wrk run is reaped before the next)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    service, stack = 0.0, [service_pid]
    while stack:
        pid = stack.pop()
        if pid in processes:
            service += processes[pid][2]
        stack += children.get(pid, [])
    database = sum(seconds for _, name, seconds in processes.values() if name == DATABASE_SERVER)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(time.monotonic(), service, database, ended.ru_utime + ended.ru_stime, _idle_seconds())


def per_request(before: Snapshot, after: Snapshot, requests: float) -> CpuPerRequest:
    def share(used: float) -> float:
        return used / requests * 1e6 if requests else 0.0

    return CpuPerRequest(share(after.service - before.service), share(after.database - before.database),
                         share(after.load_generator - before.load_generator),
                         (after.idle - before.idle) / (after.at - before.at))


def _processes() -> dict[int, tuple[int, str, float]]:
    """Each process's parent, name and CPU seconds (user and system, its threads included)."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        # After the name: state, ppid, ..., utime and stime are the 14th and 15th fields of the whole line.
        found[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND)
    return found


def _idle_seconds() -> float:
    """Idle and I/O-wait time of all cores together, from the first line of /proc/stat."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / TICKS_PER_SECOND
