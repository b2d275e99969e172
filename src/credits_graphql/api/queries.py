"""Query resolvers: decode ids, read through `service.queries`, wrap in types."""

from __future__ import annotations

import strawberry
from strawberry import relay
from strawberry.types import Info

import credits_graphql.api.enums  # noqa: F401  (names the enums)
from credits_graphql.api import connections
from credits_graphql.api.audit import AuditEventNode
from credits_graphql.api.context import Context
from credits_graphql.api.ids import decode_id
from credits_graphql.api.permissions import allowed
from credits_graphql.api.types import (
    AccountNode,
    Balance,
    RechargeAttemptNode,
    TransactionNode,
    transactions_of,
)
from credits_graphql.api.viewer import Viewer
from credits_graphql.domain import ledger
from credits_graphql.domain.access import Action
from credits_graphql.domain.ledger import Account
from credits_graphql.service import audit, queries


async def _account(info: Info[Context, None], account_id: strawberry.ID) -> Account | None:
    decoded = decode_id(account_id, "Account")
    return await info.context.loaders.accounts.load(decoded[1]) if decoded else None


@strawberry.type
class Query:
    @strawberry.field(description="The API key this request is made with: its role and what it may do, so that "
                                  "a client shows only that.")
    def viewer(self, info: Info[Context, None]) -> Viewer:
        return Viewer(principal=info.context.principal)

    @strawberry.field(description="Any object by its global id; null when unknown or another organization's.")
    async def node(self, info: Info[Context, None], id: strawberry.ID) -> relay.Node | None:
        type_name, row_id = decode_id(id) or ("", 0)
        loaders = info.context.loaders
        if type_name == "Account":
            account = await loaders.accounts.load(row_id)
            return AccountNode.of(account) if account else None
        if type_name == "Transaction":
            entry = await loaders.entries.load(row_id)
            return TransactionNode.of(entry) if entry else None
        if type_name == "RechargeAttempt":
            attempt = (await queries.attempts_by_id(info.context.deps, info.context.org_id, [row_id])).get(row_id)
            return RechargeAttemptNode.of(attempt) if attempt else None
        if type_name == "AuditEvent" and info.context.principal.may(Action.READ_AUDIT_TRAIL):
            event = await audit.audit_event(info.context.deps, info.context.org_id, row_id)
            return AuditEventNode.of(event) if event else None
        return None

    @strawberry.field(description="Null when the id is unknown or belongs to another organization.")
    async def account(self, info: Info[Context, None], id: strawberry.ID) -> AccountNode | None:
        account = await _account(info, id)
        return AccountNode.of(account) if account else None

    @strawberry.field(description="The organization's accounts, newest first; with `status`, only those (ACTIVE "
                                  "hides closed accounts), `totalCount` counting them.")
    async def accounts(self, info: Info[Context, None], first: int | None = None, after: str | None = None,
                       status: ledger.AccountStatus | None = None) -> connections.Connection[AccountNode]:
        deps, org_id = info.context.deps, info.context.org_id
        listed = f"accounts.{org_id}"  # another organization's cursor pages no list of this one
        page = await queries.accounts_page(deps, org_id, status, connections.after_id(after, listed),
                                           connections.page_size(first))
        info.context.prime_accounts(page.items)
        return connections.build(page.items, page.has_next, after, listed, lambda a: a.id, AccountNode.of,
                                 lambda: queries.count_accounts(deps, org_id, status))

    @strawberry.field
    async def balance(self, info: Info[Context, None], account_id: strawberry.ID) -> Balance | None:
        account = await _account(info, account_id)
        return Balance(model=account, as_of=info.context.deps.clock()) if account else None

    @strawberry.field(description="Newest first; null when the account is unknown.")
    async def transactions(self, info: Info[Context, None], account_id: strawberry.ID, first: int | None = None,
                           after: str | None = None, kinds: list[ledger.EntryKind] | None = None,
                           ) -> connections.Connection[TransactionNode] | None:
        account = await _account(info, account_id)
        if account is None:
            return None
        return await transactions_of(info, account, first, after, kinds)

    @strawberry.field(extensions=[allowed(Action.READ_AUDIT_TRAIL)],
                      description="The organization's audit trail of mutations, newest first. ADMIN only: "
                                  "for another role, null with a FORBIDDEN error, and the rest of the query "
                                  "answered.")
    async def audit_events(self, info: Info[Context, None], first: int | None = None,
                           after: str | None = None) -> connections.Connection[AuditEventNode] | None:
        deps, org_id = info.context.deps, info.context.org_id
        listed = f"auditEvents.{org_id}"
        page = await audit.audit_page(deps, org_id, connections.after_id(after, listed),
                                      connections.page_size(first))
        return connections.build(page.items, page.has_next, after, listed, lambda e: e.id or 0,
                                 AuditEventNode.of,
                                 lambda: audit.count_audit_events(deps, org_id))
