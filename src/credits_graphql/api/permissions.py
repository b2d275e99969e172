"""Role checks on fields, from the domain's table of what each role may do."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info

from credits_graphql.api.errors import FORBIDDEN
from credits_graphql.domain.access import Action, roles_allowed


class Allowed(BasePermission):
    error_extensions = {"code": FORBIDDEN}

    def __init__(self, action: Action) -> None:
        self.action = action
        roles = " and ".join(role.value for role in roles_allowed(action))
        self.message = f"This API key's role may not {action.lower().replace('_', ' ')} ({roles} keys may)."

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return bool(info.context.principal.may(self.action))


def allowed(action: Action) -> PermissionExtension:
    return PermissionExtension(permissions=[Allowed(action)], use_directives=False)
