"""API key roles: ADMIN may do everything, USAGE_WRITER may read and record usage, READER may only read."""

from __future__ import annotations

import pytest

from credits_graphql.domain.access import Action, Principal, Role, allows

TABLE = {
    Role.ADMIN: {Action.READ, Action.RECORD_USAGE, Action.MANAGE_ACCOUNTS, Action.MOVE_FUNDS, Action.READ_AUDIT_TRAIL},
    Role.USAGE_WRITER: {Action.READ, Action.RECORD_USAGE},
    Role.READER: {Action.READ},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_each_role_may_do_exactly_what_the_role_table_grants(role: Role, action: Action) -> None:
    assert allows(role, action) is (action in TABLE[role])


def test_admin_may_do_every_action() -> None:
    assert all(allows(Role.ADMIN, action) for action in Action)


def test_a_reader_may_not_record_usage_manage_accounts_or_move_funds() -> None:
    assert allows(Role.READER, Action.READ)
    for action in (Action.RECORD_USAGE, Action.MANAGE_ACCOUNTS, Action.MOVE_FUNDS):
        assert not allows(Role.READER, action)


def test_a_usage_writer_may_record_usage_but_not_move_funds_or_manage_accounts() -> None:
    assert allows(Role.USAGE_WRITER, Action.READ)
    assert allows(Role.USAGE_WRITER, Action.RECORD_USAGE)
    assert not allows(Role.USAGE_WRITER, Action.MOVE_FUNDS)
    assert not allows(Role.USAGE_WRITER, Action.MANAGE_ACCOUNTS)


def test_a_principal_acts_with_its_keys_role_in_its_organization() -> None:
    writer = Principal(key_id=3, org_id=9, role=Role.USAGE_WRITER)
    assert writer.org_id == 9
    assert writer.may(Action.RECORD_USAGE)
    assert not writer.may(Action.MOVE_FUNDS)
    assert Principal(key_id=4, org_id=9, role=Role.ADMIN).may(Action.MANAGE_ACCOUNTS)


def test_the_roles_are_exactly_the_three_the_contract_names() -> None:
    assert {role.value for role in Role} == {"ADMIN", "USAGE_WRITER", "READER"}
    assert Role("READER") is Role.READER
