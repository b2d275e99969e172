"""Who a request is made as: its API key's role and what that role may do, so that a client shows only that."""

from __future__ import annotations

import strawberry

from credits_graphql.api.enums import described
from credits_graphql.domain.access import Action, Principal, Role

strawberry.enum(Role, name="ApiKeyRole")
described(Role, {
    Role.ADMIN: "Every query and mutation, the audit trail included.",
    Role.USAGE_WRITER: "Queries (not the audit trail) and usage reports: a partner integration's key.",
    Role.READER: "Queries, not the audit trail.",
})


@strawberry.type(description="The API key this request is made with.")
class Viewer:
    principal: strawberry.Private[Principal]

    @strawberry.field(description="Its id, as `list-api-keys` and audit events show it.")
    def api_key_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.principal.key_id))

    @strawberry.field
    def role(self) -> Role:
        return self.principal.role

    @strawberry.field(description="recordUsage and recordUsageBatch.")
    def may_record_usage(self) -> bool:
        return self.principal.may(Action.RECORD_USAGE)

    @strawberry.field(description="createAccount, updateRechargeSettings, updatePaymentMethod and closeAccount.")
    def may_manage_accounts(self) -> bool:
        return self.principal.may(Action.MANAGE_ACCOUNTS)

    @strawberry.field(description="addFunds.")
    def may_move_funds(self) -> bool:
        return self.principal.may(Action.MOVE_FUNDS)

    @strawberry.field(description="auditEvents.")
    def may_read_audit_trail(self) -> bool:
        return self.principal.may(Action.READ_AUDIT_TRAIL)
