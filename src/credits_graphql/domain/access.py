"""Who may do what: API key roles and the principal a request acts as."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "ADMIN"
    USAGE_WRITER = "USAGE_WRITER"
    READER = "READER"


class Action(StrEnum):
    READ = "READ"
    RECORD_USAGE = "RECORD_USAGE"
    MANAGE_ACCOUNTS = "MANAGE_ACCOUNTS"
    MOVE_FUNDS = "MOVE_FUNDS"
    READ_AUDIT_TRAIL = "READ_AUDIT_TRAIL"


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.READER: frozenset({Action.READ}),
    Role.USAGE_WRITER: frozenset({Action.READ, Action.RECORD_USAGE}),
    Role.ADMIN: frozenset(Action),
}


def allows(role: Role, action: Action) -> bool:
    return action in _ALLOWED[role]


def roles_allowed(action: Action) -> list[Role]:
    return [role for role in Role if allows(role, action)]


@dataclass(frozen=True, slots=True)
class Principal:
    """The API key a request is made with: every read and write is scoped to its organization."""

    key_id: int
    org_id: int
    role: Role

    def may(self, action: Action) -> bool:
        return allows(self.role, action)
