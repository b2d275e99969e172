"""The built-in sandbox gateway: card test tokens, no network, charges remembered per idempotency key.

The charges are kept in memory, or, with CREDITS_SANDBOX_JOURNAL=/path/file.db, in a small SQLite file
that every process of a deployment shares, as a real gateway remembers keys whichever process calls it."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from credits_graphql.domain.money import Money
from credits_graphql.service.payments import CardDetails, ChargeResult, UnknownPaymentToken
from credits_graphql.store.sqlite_wal import switch_to_wal

TEST_CARDS: dict[str, CardDetails] = {
    "tok_visa": CardDetails(brand="visa", last4="4242"),
    "tok_mastercard": CardDetails(brand="mastercard", last4="4444"),
    "tok_chargeDeclined": CardDetails(brand="visa", last4="0002"),
}
DECLINING_TOKENS = frozenset({"tok_chargeDeclined"})
JOURNAL_VARIABLE = "CREDITS_SANDBOX_JOURNAL"
# Test-only fault injection: SIGKILL this process right after a successful charge is journaled, i.e.
# between the gateway charge and the worker's commit. Never set it in a real deployment.
CRASH_VARIABLE = "CREDITS_SANDBOX_CRASH_AFTER_CHARGE"

Charge = tuple[str, Money, ChargeResult]
Decide = Callable[[], ChargeResult]


class ChargeJournal(Protocol):
    async def charge_once(self, key: str, token: str, amount: Money, decide: Decide) -> ChargeResult:
        """The result journaled for `key`, or `decide()`'s, journaled first."""
        ...

    async def find(self, key: str) -> ChargeResult | None:
        """The result journaled for `key`, if any."""
        ...

    def charges(self) -> list[Charge]: ...


class MemoryJournal:
    """Remembers keys for the life of the process."""

    def __init__(self) -> None:
        self._charges: dict[str, Charge] = {}
        self._lock = asyncio.Lock()

    async def charge_once(self, key: str, token: str, amount: Money, decide: Decide) -> ChargeResult:
        async with self._lock:
            if (first := self._charges.get(key)) is None:
                first = self._charges[key] = (token, amount, decide())
            return first[2]

    async def find(self, key: str) -> ChargeResult | None:
        async with self._lock:
            first = self._charges.get(key)
        return first[2] if first is not None else None

    def charges(self) -> list[Charge]:
        return list(self._charges.values())


class SqliteJournal:
    """Remembers keys in a SQLite file shared by processes; BEGIN IMMEDIATE makes check-and-record atomic."""

    _SCHEMA = """CREATE TABLE IF NOT EXISTS sandbox_charges (
        idempotency_key TEXT PRIMARY KEY, token TEXT NOT NULL, amount_micros INTEGER NOT NULL,
        currency TEXT NOT NULL, succeeded INTEGER NOT NULL, charge_id TEXT, failure_reason TEXT,
        seq INTEGER NOT NULL)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as connection:
            connection.execute(self._SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        switch_to_wal(connection, timeout_seconds=30)  # processes started together open a new journal at once
        return connection

    async def charge_once(self, key: str, token: str, amount: Money, decide: Decide) -> ChargeResult:
        return await asyncio.to_thread(self._charge_once, key, token, amount, decide)

    def _charge_once(self, key: str, token: str, amount: Money, decide: Decide) -> ChargeResult:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            if (first := _journaled(connection, key)) is not None:
                connection.execute("ROLLBACK")
                return first
            result = decide()
            connection.execute(
                "INSERT INTO sandbox_charges VALUES (?, ?, ?, ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM sandbox_charges))",
                (key, token, amount.micros, amount.currency, int(result.succeeded), result.charge_id,
                 result.failure_reason))
            connection.execute("COMMIT")
            return result
        finally:
            connection.close()

    async def find(self, key: str) -> ChargeResult | None:
        return await asyncio.to_thread(self._find, key)

    def _find(self, key: str) -> ChargeResult | None:
        connection = self._connect()
        try:
            return _journaled(connection, key)
        finally:
            connection.close()

    def charges(self) -> list[Charge]:
        connection = self._connect()
        try:
            rows = connection.execute("SELECT token, amount_micros, currency, succeeded, charge_id, failure_reason "
                                      "FROM sandbox_charges ORDER BY seq").fetchall()
        finally:
            connection.close()
        return [(token, Money(micros, currency), ChargeResult(succeeded=bool(ok), charge_id=charge_id,
                                                               failure_reason=reason))
                for token, micros, currency, ok, charge_id, reason in rows]


def _journaled(connection: sqlite3.Connection, key: str) -> ChargeResult | None:
    row = connection.execute("SELECT succeeded, charge_id, failure_reason FROM sandbox_charges "
                             "WHERE idempotency_key = ?", (key,)).fetchone()
    return ChargeResult(succeeded=bool(row[0]), charge_id=row[1], failure_reason=row[2]) if row else None


class SandboxGateway:
    """Succeeds for every test card but `tok_chargeDeclined`, which is declined on every charge.

    A repeated idempotency key returns the first result, as a real gateway does."""

    def __init__(self, journal: ChargeJournal | None = None, *, crash_after_charge: bool = False) -> None:
        self._journal = journal or MemoryJournal()
        self._crash_after_charge = crash_after_charge

    async def describe(self, token: str) -> CardDetails:
        try:
            return TEST_CARDS[token]
        except KeyError:
            raise UnknownPaymentToken(token) from None

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        result = await self._journal.charge_once(idempotency_key, token, amount, lambda: _decide(token))
        if self._crash_after_charge and result.succeeded:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self._journal.find(idempotency_key)

    @property
    def charges(self) -> list[Charge]:
        """Every charge made, in order (for tests and the dev console)."""
        return self._journal.charges()


def _decide(token: str) -> ChargeResult:
    if token not in TEST_CARDS:
        return ChargeResult(succeeded=False, failure_reason="unknown payment method")
    if token in DECLINING_TOKENS:
        return ChargeResult(succeeded=False, failure_reason="card declined")
    return ChargeResult(succeeded=True, charge_id=f"ch_{uuid.uuid4().hex[:24]}")


def sandbox_from_env(environ: Mapping[str, str] | None = None) -> SandboxGateway:
    """The sandbox as the CREDITS_SANDBOX_* variables configure it (journal file, test fault hook)."""
    env = os.environ if environ is None else environ
    path = env.get(JOURNAL_VARIABLE, "").strip()
    crash = env.get(CRASH_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}
    return SandboxGateway(SqliteJournal(Path(path)) if path else None, crash_after_charge=crash)
