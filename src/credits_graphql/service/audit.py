"""The audit trail: who changed money or settings, what they asked for, when, and how it ended."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from credits_graphql.domain.access import Principal
from credits_graphql.service.deps import Deps
from credits_graphql.service.queries import Page
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.unit_of_work import AuditEvent, AuditOutcome

MAX_VALUE_LENGTH = 200


def new_audit_event(deps: Deps, principal: Principal, operation: str, account_id: int | None,
                input_summary: Mapping[str, str | None], outcome: AuditOutcome,
                error_codes: Sequence[str] = ()) -> AuditEvent:
    """A new event, not yet recorded. `input_summary` must hold no secrets (payment tokens); values are
    cut to MAX_VALUE_LENGTH characters."""
    return AuditEvent(
        org_id=principal.org_id, api_key_id=principal.key_id, operation=operation, account_id=account_id,
        input_summary={name: _cut(value) for name, value in input_summary.items()}, outcome=outcome,
        error_codes=tuple(error_codes), occurred_at=deps.clock())


def answered(user_error_codes: Iterable[str]) -> tuple[AuditOutcome, tuple[str, ...]]:
    """The outcome of a call that answered, and the codes it shows (each once, in the order given): USER_ERROR
    when a userError was answered (by any item of a batch), else OK."""
    codes = tuple(dict.fromkeys(user_error_codes))
    return (AuditOutcome.USER_ERROR if codes else AuditOutcome.OK), codes


def concluded(event: AuditEvent, user_error_codes: Iterable[str]) -> AuditEvent:
    """A staged event with the outcome its call came to."""
    outcome, codes = answered(user_error_codes)
    return replace(event, outcome=outcome, error_codes=codes)


def stage_with_next_commit(deps: Deps, event: AuditEvent) -> RequestScope | None:
    """Has the request's next committing write transaction append the event (for a use case that makes
    one write transaction and refuses by raising before it commits); None where there is no request."""
    if not isinstance(deps.uow, RequestScope):
        return None
    deps.uow.stage_audit_event(event)
    return deps.uow


async def record_audit_event(deps: Deps, event: AuditEvent) -> AuditEvent:
    """Appends the event in a transaction of its own."""
    async with deps.uow(write=True) as uow:
        event = await uow.audit_events.append(event)
        await uow.commit()
    return event


async def audit_page(deps: Deps, org_id: int, before_id: int | None, limit: int) -> Page[AuditEvent]:
    async with deps.uow() as uow:
        return Page.of(await uow.audit_events.page(org_id, before_id, limit + 1), limit)


async def audit_event(deps: Deps, org_id: int, event_id: int) -> AuditEvent | None:
    async with deps.uow() as uow:
        return await uow.audit_events.get(org_id, event_id)


async def count_audit_events(deps: Deps, org_id: int) -> int:
    async with deps.uow() as uow:
        return await uow.audit_events.count(org_id)


def _cut(value: str | None) -> str | None:
    return value if value is None or len(value) <= MAX_VALUE_LENGTH else value[:MAX_VALUE_LENGTH] + "…"
