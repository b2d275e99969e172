"""What every use case runs with; `bootstrap` builds it, tests build it with their own parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from credits_graphql.domain.policy import Policy
from credits_graphql.service.payments import PaymentGateway
from credits_graphql.service.unit_of_work import Clock, UnitOfWorkFactory


def utc_now() -> datetime:
    return datetime.now(UTC)


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Deps:
    uow: UnitOfWorkFactory
    gateway: PaymentGateway
    policy: Policy = field(default_factory=Policy)
    clock: Clock = utc_now
    # Called after a commit that created a recharge attempt, so an in-process worker starts at once.
    recharge_created: Callable[[], None] = _nothing
    # The database runs one write transaction at a time (SQLite), whatever the organization or account: a process
    # runs one usage transaction at a time (service/usage_combiner.py).
    one_writer: bool = False
