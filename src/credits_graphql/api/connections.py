"""Relay cursor connections paged by keyset (newest first), with a lazily counted `totalCount`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import strawberry
from strawberry import relay

from credits_graphql.api.ids import bad_input, decode_cursor, encode_cursor

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
LIST_FIELDS = frozenset({"accounts", "transactions", "rechargeAttempts", "auditEvents"})
"""The schema's fields that answer a connection, each of which reads a page whatever is selected of it (the query
limits count them; a test checks this against the schema)."""

NodeT = TypeVar("NodeT")
RowT = TypeVar("RowT")


@strawberry.type
class Edge(Generic[NodeT]):
    node: NodeT
    cursor: str


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: relay.PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="All matches, on every page.")
    async def total_count(self) -> int:
        return await self.count()


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise bad_input(f"first must be between 0 and {MAX_PAGE_SIZE}, got {first}")
    return first


def after_id(after: str | None, list_name: str | None) -> int | None:
    """The keyset position of `after`, a cursor of the list named `list_name` (see api.ids.encode_cursor); for
    None, of any list (the cursor is only checked to be one this service handed out)."""
    return decode_cursor(after, list_name)


def build(rows: Sequence[RowT], has_next: bool, after: str | None, list_name: str, row_id: Callable[[RowT], int],
          to_node: Callable[[RowT], NodeT], count: Callable[[], Awaitable[int]]) -> Connection[NodeT]:
    edges = [Edge(node=to_node(row), cursor=encode_cursor(list_name, row_id(row))) for row in rows]
    return Connection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        count=count,
    )
