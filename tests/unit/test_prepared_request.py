"""Which request bodies are prepared requests (api/prepared_request.py), and which account their query reads first,
before it runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from graphql import parse

from credits_graphql.api.ids import global_id
from credits_graphql.api.prepared import ValidatedDocuments
from credits_graphql.api.prepared_request import prepared_request

ACCOUNT_7 = str(global_id("Account", 7))
TRANSACTION_7 = str(global_id("Transaction", 7))


def first_read(query: str, variables: Any = None, operation_name: Any = None, *, seen: bool = True) -> int | None:
    documents = ValidatedDocuments()
    if seen:
        documents.remember(query, parse(query))
    body = {"query": query, "variables": variables, "operationName": operation_name}
    prepared = prepared_request(documents, json.dumps(body).encode())
    return prepared.account_read_first() if prepared else None


@pytest.mark.parametrize("query", [
    "query($id: ID!) { balance(accountId: $id) { asOf } }",
    "query($id: ID!) { a: account(id: $id) { name } accounts { totalCount } }",
    "query($id: ID!) { transactions(accountId: $id) { totalCount } }",
    "query($id: ID!) { node(id: $id) { id } }",
])
def test_the_account_of_the_first_root_field_by_variable(query: str) -> None:
    assert first_read(query, {"id": ACCOUNT_7}) == 7


def test_an_id_written_in_the_query() -> None:
    assert first_read(f'{{ balance(accountId: "{ACCOUNT_7}") {{ asOf }} }}') == 7


def test_the_operation_named() -> None:
    query = ("query A { accounts { totalCount } } "
             f'query B {{ account(id: "{ACCOUNT_7}") {{ name }} }}')
    assert first_read(query, operation_name="B") == 7
    assert first_read(query, operation_name="A") is None
    assert first_read(query) is None  # several operations and no name: the request's error, found later


@pytest.mark.parametrize(("query", "variables"), [
    ("query($id: ID!) { balance(accountId: $id) { asOf } }", {"id": TRANSACTION_7}),  # another type's id
    ("query($id: ID!) { balance(accountId: $id) { asOf } }", {"id": "not an id"}),
    ("query($id: ID!) { balance(accountId: $id) { asOf } }", {"id": 7}),
    ("query($id: ID!) { balance(accountId: $id) { asOf } }", {}),
    ("query($id: ID!) { balance(accountId: $id) { asOf } }", ["not", "an", "object"]),
    ("query($id: ID!) { accounts { totalCount } balance(accountId: $id) { asOf } }", {"id": ACCOUNT_7}),
    ("query($id: ID!) { ... on Query { balance(accountId: $id) { asOf } } }", {"id": ACCOUNT_7}),
    ("mutation($id: ID!) { closeAccount(input: {accountId: $id}) { userErrors { code } } }", {"id": ACCOUNT_7}),
])
def test_nothing_to_read_first(query: str, variables: Any) -> None:
    assert first_read(query, variables) is None


def test_a_query_text_not_validated_before_is_not_looked_into() -> None:
    assert first_read("query($id: ID!) { balance(accountId: $id) { asOf } }", {"id": ACCOUNT_7}, seen=False) is None


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"query": 1}', b'{"query": null}', b"\xff\xfe",
                                  b"[" * 100_000])
def test_a_body_that_is_not_a_query_object_is_not_prepared(body: bytes) -> None:
    assert prepared_request(ValidatedDocuments(), body) is None


QUERY = "query($id: ID!) { balance(accountId: $id) { asOf } }"


def documents_seen(*queries: str) -> ValidatedDocuments:
    documents = ValidatedDocuments()
    for query in queries:
        documents.remember(query, parse(query))
    return documents


@pytest.mark.parametrize("body", [
    {"query": QUERY, "variables": ["not", "an", "object"]},  # Strawberry's 400
    {"query": QUERY, "variables": "{}"},
    {"query": QUERY, "operationName": 1},
    {"query": QUERY, "extensions": {"persistedQuery": {}}},  # request extensions go the full way
    {"query": QUERY, "extensions": "nope"},
    {"query": "query A { accounts { totalCount } } query B { accounts { totalCount } }"},  # no operation chosen
    {"query": QUERY, "operationName": "Unknown"},
])
def test_what_the_full_way_answers_is_not_prepared(body: dict[str, Any]) -> None:
    documents = documents_seen(QUERY, "query A { accounts { totalCount } } query B { accounts { totalCount } }")
    assert prepared_request(documents, json.dumps(body).encode()) is None


def test_a_prepared_request_runs_what_was_sent() -> None:
    query = "query A { accounts { totalCount } } mutation B { __typename }"
    body = {"query": query, "variables": {"n": 1}, "operationName": "B", "extensions": None, "other": 1}
    prepared = prepared_request(documents_seen(query), json.dumps(body).encode())
    assert prepared is not None
    assert (prepared.data.query, prepared.data.variables, prepared.data.operation_name, prepared.data.extensions) == (
        query, {"n": 1}, "B", None)
    assert prepared.operation.name is not None
    assert prepared.operation.name.value == "B"
    assert prepared.account_read_first() is None  # a mutation reads nothing first
