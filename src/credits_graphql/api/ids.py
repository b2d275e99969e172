"""Relay global ids and keyset cursors. Both are opaque to clients; malformed ones are BAD_USER_INPUT, and so is
a cursor of another list (another account's transactions, say), which would page from a stranger's position."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.relay import GlobalID, GlobalIDValueError, to_base64
from strawberry.types.base import get_object_definition

from credits_graphql.api.errors import BAD_USER_INPUT

_CURSOR_PREFIX = "k2:"
MAX_ID = 2**63 - 1  # ids are 64-bit integer columns
NO_ROW = 0
"""A row id no row has: rows are numbered from 1."""


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": BAD_USER_INPUT})


def global_id(type_name: str, row_id: int) -> GlobalID:
    return GlobalID(type_name, str(row_id))


def node_id_field() -> Any:
    """A node's `id`, given when the node is made: as an attribute it costs a field lookup, where relay.Node's own
    `id` runs a resolver per node (a sixth of a 1,000-item recordUsageBatch's answer)."""
    return strawberry.field(description="The Globally Unique ID of this object")


def node_id(node: type, row_id: int) -> strawberry.ID:
    """The id of the row `row_id` as a node of the Strawberry type `node`: str(global_id(...)), made once."""
    return strawberry.ID(to_base64(get_object_definition(node, strict=True).name, row_id))


@functools.lru_cache(maxsize=4096)  # a usage batch names its few accounts up to 1,000 times
def decode_id(value: str, expected_type: str | None = None) -> tuple[str, int] | None:
    """(type, row id) of a well-formed global id; None for one of another type than expected.

    A string that is not a global id at all raises BAD_USER_INPUT."""
    try:
        gid = GlobalID.from_id(value)
        row_id = int(gid.node_id)
    except (GlobalIDValueError, ValueError, TypeError):
        raise bad_input(f"{value[:80]!r} is not a valid id") from None
    # Only the spelling this service hands out: int() and base64 also take " 1", non-ASCII digits, "01" and
    # stray characters, and one row must not answer to several ids.
    if not 0 < row_id <= MAX_ID or str(global_id(gid.type_name, row_id)) != value:
        raise bad_input(f"{value[:80]!r} is not a valid id")
    if expected_type is not None and gid.type_name != expected_type:
        return None
    return gid.type_name, row_id


def decode_id_at(value: str, where: str, expected_type: str | None = None) -> tuple[str, int] | None:
    """decode_id, whose BAD_USER_INPUT names `where` in the input the id is (such as input.items[3].accountId): one
    of up to 1,000 items. Outside decode_id's cache, which would otherwise keep an entry per place."""
    try:
        return decode_id(value, expected_type)
    except GraphQLError as error:
        raise bad_input(f"{error.message} at {where}") from None


def account_row_id(value: object) -> int | None:
    """The row id of a well-formed Account id; None for anything else (the field that reads it reports that)."""
    if not isinstance(value, str):
        return None
    try:
        decoded = decode_id(value, "Account")
    except GraphQLError:
        return None
    return decoded[1] if decoded else None


def encode_cursor(list_name: str, row_id: int) -> str:
    """`list_name` names the list the cursor pages (e.g. "transactions.7", account 7's transactions)."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{list_name}:{row_id}".encode()).decode()


def decode_cursor(cursor: str | None, list_name: str | None) -> int | None:
    """The row id of a cursor that `encode_cursor(list_name, ...)` handed out (any list's, for None)."""
    if cursor is None:
        return None
    named, row_id = _decoded_cursor(cursor)
    if list_name is not None and named != list_name:
        raise another_lists_cursor(cursor)
    return row_id


def another_lists_cursor(cursor: str) -> GraphQLError:
    return bad_input(f"{cursor[:80]!r} is a cursor of another list: pass `after` the endCursor this list gave")


def cursor_list(cursor: str) -> str:
    """The name of the list a cursor this service handed out pages."""
    return _decoded_cursor(cursor)[0]


def _decoded_cursor(cursor: str) -> tuple[str, int]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        named, _, digits = text[len(_CURSOR_PREFIX):].rpartition(":")
        row_id = int(digits)
    except (ValueError, UnicodeError, binascii.Error):
        raise bad_input(f"{cursor[:80]!r} is not a valid cursor") from None
    if not 0 < row_id <= MAX_ID or encode_cursor(named, row_id) != cursor:  # as for ids: only the spelling handed out
        raise bad_input(f"{cursor[:80]!r} is not a valid cursor")
    return named, row_id
