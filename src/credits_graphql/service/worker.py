"""The recharge worker loop: settles due attempts, wakes at once when this process creates one,
and polls for attempts created by other processes or whose back-off has passed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from credits_graphql.service import recharges
from credits_graphql.service.deps import Deps

log = logging.getLogger(__name__)


class RechargeWorker:
    def __init__(self, deps: Deps, poll_seconds: float = 1.0) -> None:
        self._deps = deps
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Runs until `stop()`. An attempt being charged is settled before the loop ends."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await recharges.run_due(self._deps)
            except Exception:
                log.exception("recharge worker pass failed; retrying after the poll interval")
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
