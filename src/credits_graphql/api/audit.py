"""The audit trail in the API: mutations marked `audited(...)` record an event after they answer, and
ADMINs read the events, newest first."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry import relay
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import AsyncExtensionResolver
from strawberry.types import Info

from credits_graphql.api.context import Context
from credits_graphql.api.enums import described
from credits_graphql.api.errors import INTERNAL, UNAVAILABLE
from credits_graphql.api.ids import account_row_id, global_id, node_id, node_id_field
from credits_graphql.api.types import AccountNode
from credits_graphql.domain.money import format_plain_decimal
from credits_graphql.service import audit
from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.service.unit_of_work import AuditEvent, AuditOutcome

log = logging.getLogger(__name__)

strawberry.enum(AuditOutcome, name="AuditOutcome")
described(AuditOutcome, {
    AuditOutcome.OK: "The mutation did what it was asked.",
    AuditOutcome.USER_ERROR: "The mutation answered userErrors and changed nothing.",
    AuditOutcome.ERROR: "The mutation answered a GraphQL error (FORBIDDEN, BAD_USER_INPUT, INTERNAL_SERVER_ERROR, "
                        "...).",
})

# Input fields an audit event may repeat, by GraphQL name. Anything else that was given (payment methods and
# their tokens, fields added later) shows only as REDACTED.
_SAFE_FIELDS = frozenset({"name", "currencyCode", "amount", "idempotencyKey", "enabled", "rechargeAmount",
                          "triggerBalance", "service", "minutes", "reference", "occurredAt"})
REDACTED = "[redacted]"


def _given(value: object) -> Mapping[str, Any]:
    """An input's fields by GraphQL name: as Strawberry built it (a dataclass) or as sent (a mapping)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: getattr(value, attribute) for attribute, name in _graphql_names(type(value))}
    return value if isinstance(value, Mapping) else {}


@functools.cache
def _graphql_names(input_type: type) -> tuple[tuple[str, str], ...]:
    """An input type's (attribute, GraphQL name) pairs; one per input type, so cached for good."""
    return tuple((item.name, _camel(item.name)) for item in dataclasses.fields(input_type))


def input_summary(value: object) -> dict[str, str | None]:
    """The input's safe fields as text; fields not given are left out."""
    summary: dict[str, str | None] = {}
    for name, given in _given(value).items():
        if given is None or name == "accountId":
            continue
        if isinstance(given, list):  # a batch: its size only, never its items
            summary[name] = str(len(given))
            continue
        summary[name] = _text(given) if name in _SAFE_FIELDS else REDACTED
    return summary


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        return format_plain_decimal(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")  # as the DateTime scalar answers it
    return str(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _account_id_of(value: object) -> int | None:
    return account_row_id(_given(value).get("accountId"))


def _error_code(error: Exception) -> str:
    extensions: Mapping[str, Any] = getattr(error, "extensions", None) or {}
    code = extensions.get("code")
    return code if isinstance(code, str) else INTERNAL


class Audited(FieldExtension):
    """Records one audit event per call of the field, whatever the outcome (OK, userErrors, or a
    GraphQL error such as FORBIDDEN). The OK event is appended in the write transaction that makes the change
    (`in_transaction`; the use case opens the others `unaudited`), so that neither commits without the other; when
    none commits (a replay), and for other outcomes, it is recorded after the mutation answered."""

    def __init__(self, operation: str, *, in_transaction: bool = True) -> None:
        self.operation = operation
        self.in_transaction = in_transaction

    async def resolve_async(self, next_: AsyncExtensionResolver, source: Any, info: Info[Context, None],
                            **kwargs: Any) -> Any:
        given = kwargs.get("input")
        summary, account_id = summarize(given)
        deps, principal = info.context.deps, info.context.principal
        scope = None
        if self.in_transaction:
            scope = audit.stage_with_next_commit(deps, audit.new_audit_event(
                deps, principal, self.operation, account_id, summary, AuditOutcome.OK))
        try:
            payload = await next_(source, info, **kwargs)
        except Exception as error:
            if scope is not None:
                scope.unstage_audit_event()  # or the ERROR event's own commit would append the OK one with it
            if isinstance(error, StoreUnavailable):
                # The database refused the call (busy, down, read-only, full): it would refuse its event too, after
                # as long a wait. Nothing changed; the log keeps the call.
                log.warning("audit event of %s by key %s (ERROR %s) was not recorded: %s", self.operation,
                            principal.key_id, UNAVAILABLE, error)
            else:
                await record(info.context, self.operation, summary, account_id, AuditOutcome.ERROR,
                             [_error_code(error)])
            raise
        finally:
            if scope is not None:
                scope.unstage_audit_event()
        codes = [str(error.code) for error in getattr(payload, "user_errors", ())]
        if not codes and scope is not None and scope.audit_committed:
            return payload
        account = getattr(payload, "account", None)
        if account_id is None and isinstance(account, AccountNode):
            account_id = account.row_id
        await record(info.context, self.operation, summary, account_id, *audit.answered(codes))
        return payload


def summarize(given: object) -> tuple[dict[str, str | None], int | None]:
    """An input's audit summary and the account it names, if any."""
    return input_summary(given), _account_id_of(given)


async def record(context: Context, operation: str, summary: dict[str, str | None], account_id: int | None,
                 outcome: AuditOutcome, codes: Sequence[str]) -> None:
    """Records one call of `operation`, in a transaction of its own."""
    try:
        await audit.record_audit_event(context.deps, audit.new_audit_event(
            context.deps, context.principal, operation, account_id, summary, outcome, codes))
    except Exception:
        # The mutation may have committed: turning its answer into an error would invite a retry that
        # creates a second account. The failure is logged loudly instead.
        log.exception("audit event of %s by key %s (%s) was not recorded", operation, context.principal.key_id,
                      outcome)


def audited(operation: str, *, in_transaction: bool = True) -> Audited:
    return Audited(operation, in_transaction=in_transaction)


@strawberry.type
class AuditField:
    name: str
    value: str | None = strawberry.field(description=f'"{REDACTED}" for secrets such as payment tokens.')


@strawberry.type(name="AuditEvent", description="A mutation call as it was made: who, what, when, the outcome. "
                 "Never changed or removed.")
class AuditEventNode(relay.Node):
    id: strawberry.ID = node_id_field()
    row_id: relay.NodeID[int]
    model: strawberry.Private[AuditEvent]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventNode:
        assert event.id is not None
        return cls(id=node_id(cls, event.id), row_id=event.id, model=event)

    @strawberry.field(description="The API key that made the call, as `list-api-keys` shows it.")
    def api_key_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.model.api_key_id))

    @strawberry.field(description='The mutation, e.g. "addFunds".')
    def operation(self) -> str:
        return self.model.operation

    @strawberry.field(description="The account the call named or created; it may be unknown.")
    def account_id(self) -> strawberry.ID | None:
        account_id = self.model.account_id
        return strawberry.ID(str(global_id("Account", account_id))) if account_id is not None else None

    @strawberry.field(description="The input as given, without secrets.")
    def input(self) -> list[AuditField]:
        return [AuditField(name=name, value=value) for name, value in self.model.input_summary.items()]

    @strawberry.field
    def outcome(self) -> AuditOutcome:
        return self.model.outcome

    @strawberry.field(description="The userError codes (USER_ERROR) or the GraphQL error code (ERROR).")
    def error_codes(self) -> list[str]:
        return list(self.model.error_codes)

    @strawberry.field
    def occurred_at(self) -> datetime:
        return self.model.occurred_at
