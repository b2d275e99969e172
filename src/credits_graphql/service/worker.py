"""The recharge worker loop: settles due attempts, wakes at once when this process creates one,
and polls for attempts created by other processes or whose back-off has passed. Each pass also
recovers manual funds charges that a dead request left PENDING (funds_recovery), and every few minutes looks up
again the charges cancelled on a lookup lately (reconciliation) and checks this host's clock against the database's
(clock_check)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from credits_graphql.service import clock_check, funds_recovery, recharges, reconciliation
from credits_graphql.service.deps import Deps
from credits_graphql.service.transient import StoreUnavailable

log = logging.getLogger(__name__)


class RechargeWorker:
    def __init__(self, deps: Deps, poll_seconds: float = 1.0, lease: timedelta = recharges.LEASE) -> None:
        self._deps = deps
        self._poll_seconds = poll_seconds
        self._lease = lease
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_reconciliation: datetime | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ends `run()` after the attempt being charged, if any, is settled; claims nobody
        charges yet are released."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Runs until `stop()`."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except StoreUnavailable as error:
                log.warning("recharge worker: %s; retrying after the poll interval", error)
            except Exception:
                log.exception("recharge worker pass failed; retrying after the poll interval")
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)

    async def run_once(self) -> None:
        """One pass: the due attempts, the stale funds charges, and the cancelled charges when it is time. A step
        that fails (a bug, a row the database refuses) is logged, and the others still run: an attempt that cannot
        be settled must not keep funds charges from being recovered. Without a database, the pass ends."""
        for step in (self._settle_due, self._recover_funds, self._reconcile_if_due):
            try:
                await step()
            except StoreUnavailable:
                raise
            except Exception:
                log.exception("recharge worker: %s failed; the pass goes on", step.__name__.strip("_"))

    async def _settle_due(self) -> None:
        while not self._stopping.is_set():
            claim = await recharges.claim_next(self._deps, self._lease)
            if claim is None:
                return
            if self._stopping.is_set():  # stopped while claiming: hand the attempt over uncharged
                await recharges.release(self._deps, claim)
                return
            # From here the attempt is finished even when stop() comes: the charge may have happened.
            await recharges.settle(self._deps, claim, await recharges.charge(self._deps, claim))

    async def _recover_funds(self) -> None:
        while not self._stopping.is_set():
            charge = await funds_recovery.claim_stale(self._deps, grace=self._lease, lease=self._lease)
            if charge is None:
                return
            await funds_recovery.recover(self._deps, charge)

    async def _reconcile_if_due(self) -> None:
        now = self._deps.clock()
        due = self._next_reconciliation
        # A clock stepped back (NTP, a restored VM) would otherwise silence reconciliation and the clock check for
        # as long as the step, and the look-back window could pass the charges it is there to find.
        stepped_back = due is not None and now < due - reconciliation.RECONCILE_EVERY
        if self._stopping.is_set() or (due is not None and now < due and not stepped_back):
            return
        await clock_check.warn_on_clock_skew(self._deps)
        reconciled = await reconciliation.reconcile_cancelled(self._deps, since=now - reconciliation.RECONCILE_WINDOW)
        if reconciled.unanswered:
            log.warning("recharge worker: %d of %d cancelled charges could not be looked up; again in %s",
                        reconciled.unanswered, reconciled.looked_up, reconciliation.RECONCILE_EVERY)
        self._next_reconciliation = now + reconciliation.RECONCILE_EVERY
