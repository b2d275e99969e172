"""One failure of work shared by several callers (service/shared_work.py): each caller raises its own copy."""

from __future__ import annotations

from credits_graphql.service.shared_work import for_one_caller
from credits_graphql.service.transient import StoreUnavailable


class _Unrebuildable(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def test_a_shared_failure_that_cannot_be_copied_reaches_each_caller_as_it_is() -> None:
    error = _Unrebuildable(7, "the store's own failure")
    assert for_one_caller(error) is error
    copied = for_one_caller(StoreUnavailable("gone"))
    assert isinstance(copied, StoreUnavailable)
    assert str(copied) == "gone"
