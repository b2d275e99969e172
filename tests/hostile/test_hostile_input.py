"""Hostile input through the public endpoint: each request gets a clear 4xx (or a coded GraphQL error)
and changes nothing: the funded account keeps its name, status, balance and entries, and no account
appears. Each request is timed; the module prints the table at the end (`pytest -s`)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from credits_graphql.bootstrap import Runtime
from tests.conftest import GraphQLClient, Org
from tests.hostile.conftest import Snapshot, Stopwatch, client_for, codes_of, messages_of, prod_settings, snapshot

MiB = 1024 * 1024
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"

pytestmark = pytest.mark.usefixtures("ledger_rule_holds_afterwards")


def add_funds(account_id: str, key: str = "hostile", selection: str = "transaction { id } userErrors { code }",
              ) -> str:
    return (f'addFunds(input: {{accountId: "{account_id}", amount: "10", idempotencyKey: "{key}"}}) '
            f"{{ {selection} }}")


def auth(org: Org) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.admin}"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def unchanged(gql: GraphQLClient, account_id: str, before: Snapshot) -> None:
    assert await snapshot(gql, account_id) == before


def nested(fields: list[str], leaf: str = "__typename") -> str:
    """`a { b { c { leaf } } }`: the leaf sits len(fields) + 1 levels deep."""
    return "".join(f"{field} {{ " for field in fields) + leaf + " }" * len(fields)


def account_chain(levels: int, start: int = 0) -> list[str]:
    """account { transactions { edges { node { account { ... : `levels` fields (from `start` in the cycle)."""
    cycle = ["account", "transactions(first: 1)", "edges", "node"]
    return [cycle[index % 4] for index in range(start, start + levels)]


# --- the body: JSON, batches, size -------------------------------------------------------------------


async def test_the_snapshot_counts_the_cards_charged_so_a_refused_request_must_charge_none(
        gql: GraphQLClient, funded_id: str) -> None:
    before = await snapshot(gql, funded_id)
    assert (await gql(f"mutation {{ {add_funds(funded_id, 'charged')} }}"))["addFunds"]["userErrors"] == []
    after = await snapshot(gql, funded_id)
    assert after.card_charges == before.card_charges + 1
    assert after == replace(before, balance=after.balance, transactions=before.transactions + 1,
                            card_charges=after.card_charges)


async def test_a_body_of_broken_json_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    body = json.dumps({"query": f"mutation {{ {add_funds(funded_id)} }}"})[:-7]
    response = await stopwatch.time("broken JSON", lambda: http.post(
        "/graphql", content=body, headers={**auth(org), "Content-Type": "application/json"}))
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    await unchanged(gql, funded_id, before)


@pytest.mark.parametrize(("label", "payload"), [
    ("JSON string body", "mutation { MUTATION }"),
    ("JSON number body", 42),
    ("JSON null body", None),
    ("JSON true body", True),
    ("JSON array of operations (BatchHttpLink)", [{"query": "mutation { MUTATION }"}] * 2),
])
async def test_a_json_body_that_is_not_an_object_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, payload: Any) -> None:
    before = await snapshot(gql, funded_id)
    if isinstance(payload, str):
        payload = payload.replace("MUTATION", add_funds(funded_id))
    if isinstance(payload, list):
        payload = [{"query": item["query"].replace("MUTATION", add_funds(funded_id))} for item in payload]
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", content=json.dumps(payload), headers={**auth(org), "Content-Type": "application/json"}))
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    await unchanged(gql, funded_id, before)


async def post_raw(runtime: Runtime, org: Org, stopwatch: Stopwatch, label: str, content: str | bytes,
                   ) -> httpx.Response:
    """POSTs `content` as application/json through a client that answers what the app raises, as uvicorn does."""
    async with client_for(runtime, runtime.settings, raise_app_exceptions=False) as client:
        return await stopwatch.time(label, lambda: client.post(
            "/graphql", content=content, headers={**auth(org), "Content-Type": "application/json"}))


async def test_a_json_body_that_is_not_utf8_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, runtime: Runtime, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    body = json.dumps({"query": f"mutation {{ {add_funds(funded_id)} }}"}).encode().replace(b"hostile", b"\xff\xfe")
    response = await post_raw(runtime, org, stopwatch, "JSON body that is not UTF-8", body)
    await unchanged(gql, funded_id, before)
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_a_json_body_in_another_unicode_encoding_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, runtime: Runtime, org: Org, funded_id: str, stopwatch: Stopwatch, encoding: str) -> None:
    """JSON exchanged between systems is UTF-8 (RFC 8259, 8.1), as GraphQL over HTTP requires; Python's json
    would read UTF-16 and UTF-32 too. The same operation in UTF-8 first, so that the short way (a document
    validated before) is the one that must refuse it."""
    query = "mutation($key: String!) { addFunds(input: {accountId: $id, amount: \"10\", idempotencyKey: $key}) " \
            "{ transaction { id } } }".replace("$id", json.dumps(funded_id))
    utf8 = await post_raw(runtime, org, stopwatch, "JSON body in UTF-8",
                          json.dumps({"query": query, "variables": {"key": "utf-8"}}))
    assert utf8.json()["data"]["addFunds"]["transaction"]["id"]
    before = await snapshot(gql, funded_id)
    body = json.dumps({"query": query, "variables": {"key": encoding}}).encode(encoding)
    response = await post_raw(runtime, org, stopwatch, f"JSON body in {encoding.upper()}", body)
    await unchanged(gql, funded_id, before)
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    assert "JSON" in messages_of(response)[0]  # UTF-16-LE of ASCII is valid UTF-8 (with NULs), but not JSON


@pytest.mark.parametrize(("label", "body"), [
    ("JSON integer of 4,400 digits", '{"query": "QUERY", "pad": 1' + "0" * 4400 + "}"),
    ("JSON nested 5,000 levels deep", '{"query": "QUERY", "variables": {"pad": ' + "[" * 5000 + "]" * 5000 + "}}"),
])
async def test_json_that_python_cannot_load_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, runtime: Runtime, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, body: str) -> None:
    before = await snapshot(gql, funded_id)
    content = body.replace("QUERY", f"mutation {{ {add_funds(funded_id)} }}".replace('"', '\\"'))
    response = await post_raw(runtime, org, stopwatch, label, content)
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    await unchanged(gql, funded_id, before)


async def test_a_lone_surrogate_in_the_operation_name_is_bad_request_and_changes_nothing(
        gql: GraphQLClient, runtime: Runtime, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    body = json.dumps({"query": f"mutation M {{ {add_funds(funded_id)} }}", "operationName": "M\ud800"})
    response = await post_raw(runtime, org, stopwatch, "lone surrogate in operationName", body)
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    assert response.headers["content-type"].startswith("application/json")
    await unchanged(gql, funded_id, before)


async def test_two_operations_without_an_operation_name_run_neither(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    document = f"mutation Fund {{ {add_funds(funded_id)} }} query Read {{ accounts {{ totalCount }} }}"
    response = await stopwatch.time("two operations, no operationName", lambda: http.post(
        "/graphql", json={"query": document}, headers=auth(org)))
    assert response.status_code == 200, response.text  # a request error, answered as application/json asks
    assert response.json()["data"] is None
    assert codes_of(response) == ["BAD_REQUEST"]
    assert "operationName" in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


async def test_a_batch_of_operations_is_bad_request_and_runs_none_of_them(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    batch = [{"query": f"mutation {{ {add_funds(funded_id, f'batch-{n}')} }}"} for n in range(3)]
    response = await stopwatch.time("JSON array (batch) body", lambda: http.post(
        "/graphql", json=batch, headers=auth(org)))
    assert response.status_code == 400, response.text
    assert codes_of(response) == ["BAD_REQUEST"]
    await unchanged(gql, funded_id, before)


def padded_mutation(account_id: str, padding: int) -> bytes:
    """A valid addFunds whose body carries `padding` bytes of an unused variable."""
    return json.dumps({"query": f"mutation {{ {add_funds(account_id)} }}", "variables": {"pad": "x" * padding}}
                      ).encode()


async def test_a_body_over_the_limit_with_its_length_declared_is_413_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    body = padded_mutation(funded_id, MiB + 1)
    response = await stopwatch.time("1 MiB + body, Content-Length", lambda: http.post(
        "/graphql", content=body, headers={**auth(org), "Content-Type": "application/json"}))
    assert response.request.headers["content-length"] == str(len(body))
    assert response.status_code == 413, response.text
    assert codes_of(response) == ["PAYLOAD_TOO_LARGE"]
    assert str(MiB) in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


async def test_a_streamed_body_over_the_limit_is_413_without_reading_all_of_it(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    body = padded_mutation(funded_id, 8 * MiB)
    chunk = 64 * 1024
    chunks = [body[start:start + chunk] for start in range(0, len(body), chunk)]
    sent: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        for part in chunks:
            sent.append(len(part))
            yield part

    response = await stopwatch.time("8 MiB body, chunked (no Content-Length)", lambda: http.post(
        "/graphql", content=stream(), headers={**auth(org), "Content-Type": "application/json"}))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413, response.text
    assert codes_of(response) == ["PAYLOAD_TOO_LARGE"]
    assert sum(sent) <= MiB + 2 * chunk, f"read {sum(sent)} of {len(body)} bytes before refusing"
    await unchanged(gql, funded_id, before)


async def test_a_body_that_stops_arriving_is_408_after_the_timeout_and_changes_nothing(
        gql: GraphQLClient, runtime: Runtime, org: Org, funded_id: str) -> None:
    before = await snapshot(gql, funded_id)
    body = padded_mutation(funded_id, 10)
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield body[:20]
        await never.wait()  # the client sends nothing more, and does not leave
        yield body[20:]

    async with client_for(runtime, prod_settings(runtime.settings, body_timeout_seconds=1)) as client:
        started = time.monotonic()
        response = await client.post("/graphql", content=stalled(), headers={
            **auth(org), "Content-Type": "application/json"})
        waited = time.monotonic() - started
        assert response.status_code == 408, response.text
        assert codes_of(response) == ["REQUEST_TIMEOUT"]
        assert messages_of(response) == ["The request body did not arrive within 1 seconds."]
        assert response.headers["connection"] == "close"
        assert 1 <= waited < 10
        served = await client.post("/graphql", content=body, headers={**auth(org), "Content-Type": "application/json"})
        assert served.status_code == 200, served.text  # a body that arrives in time, on the same settings
    await unchanged(gql, funded_id, replace(before, balance="110.00", transactions=before.transactions + 1,
                                            card_charges=before.card_charges + 1))


async def test_a_large_body_with_a_made_up_key_is_401_before_it_is_read(
        gql: GraphQLClient, http: httpx.AsyncClient, funded_id: str, stopwatch: Stopwatch) -> None:
    """Else anyone could have the server hold a megabyte per connection until the body timeout."""
    before = await snapshot(gql, funded_id)
    body = padded_mutation(funded_id, MiB - 1000)
    chunk = 64 * 1024
    sent: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            sent.append(len(body[start:start + chunk]))
            yield body[start:start + chunk]

    for length in ({}, {"Content-Length": str(len(body))}):
        sent.clear()
        headers = {"Authorization": "Bearer cgk_madeup", "Content-Type": "application/json", **length}
        response = await stopwatch.time("1 MiB body, made-up key", lambda headers=headers: http.post(
            "/graphql", content=stream(), headers=headers))
        assert response.status_code == 401, response.text
        assert codes_of(response) == ["UNAUTHENTICATED"]
        assert sum(sent) <= chunk, f"read {sum(sent)} of {len(body)} bytes before refusing"
    await unchanged(gql, funded_id, before)


async def test_a_body_just_under_the_limit_is_served(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    body = json.dumps({"query": "{ accounts { totalCount } }"}).encode()  # padded with insignificant JSON spaces
    body = body[:-1] + b" " * (MiB - len(body)) + b"}"
    assert len(body) == MiB
    response = await http.post("/graphql", content=body, headers={**auth(org), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"accounts": {"totalCount": 1}}


async def test_a_huge_comment_padding_over_the_body_limit_is_413_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = "#" + " padding" * (MiB // 8 + 10) + f"\nmutation {{ {add_funds(funded_id)} }}"
    response = await stopwatch.time("1 MiB of comment padding", lambda: http.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 413, response.text
    assert codes_of(response) == ["PAYLOAD_TOO_LARGE"]
    await unchanged(gql, funded_id, before)


async def test_many_comment_lines_under_the_body_limit_count_against_the_token_limit(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    comments = "#\n" * 6000
    response = await stopwatch.time("6000 comment lines (12 kB)", lambda: http.post(
        "/graphql", json={"query": f"{comments}mutation {{ {add_funds(funded_id)} }}"}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    await unchanged(gql, funded_id, before)


async def test_a_long_comment_is_one_token_and_the_query_runs(gql: GraphQLClient, funded_id: str) -> None:
    query = "{ accounts { totalCount } }"
    data = await gql("# " + "x" * (65_536 - len(query) - 3) + "\n" + query)  # the longest query text taken
    assert data == {"accounts": {"totalCount": 1}}


async def test_a_query_text_over_its_limit_is_refused_before_it_is_parsed_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = f"mutation {{ {add_funds(funded_id)} }}"
    text = "# " + "x" * (MiB - 1000) + "\n" + query  # a 1 MB comment took 0.33 s to parse
    response = await stopwatch.time("query text of 1 MB (a comment)", lambda: http.post(
        "/graphql", json={"query": text}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert messages_of(response) == [f"The query text holds {len(text)} characters; the limit is 65536. Send data "
                                     "in variables."]
    assert "data" not in response.json() or response.json()["data"] is None
    await unchanged(gql, funded_id, before)


async def test_a_list_in_variables_over_its_limit_is_refused_before_its_items_are_coerced(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    query = "query($id: ID!, $k: [TransactionKind!]) { account(id: $id) { transactions(kinds: $k) { totalCount } } }"
    served = await gql(query, {"id": funded_id, "k": ["USAGE"] * 10_000})
    assert served["account"]["transactions"]["totalCount"] == 0
    response = await stopwatch.time("10,001 kinds in a variable", lambda: http.post(
        "/graphql", json={"query": query, "variables": {"id": funded_id, "k": ["USAGE"] * 10_001}},
        headers=auth(org)))
    assert codes_of(response) == ["BAD_USER_INPUT"]
    assert messages_of(response) == ["A list of 10001 items exceeds the limit of 10000 items in a list of variables."]


# --- the document: depth, aliases, tokens, cost -------------------------------------------------------


async def test_a_mutation_nested_over_the_depth_limit_is_refused_before_it_moves_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    selection = nested(account_chain(16))  # addFunds + 16 levels + the leaf: 18 deep
    response = await stopwatch.time("mutation 18 levels deep", lambda: http.post(
        "/graphql", json={"query": f"mutation {{ {add_funds(funded_id, selection=selection)} }}"}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert response.json()["data"] is None
    assert "18" in messages_of(response)[0]
    assert "16" in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


async def test_a_query_exactly_at_the_depth_limit_runs(gql: GraphQLClient, funded_id: str) -> None:
    document = "query($id: ID!) { " + nested(["account(id: $id)", *account_chain(14, start=1)]) + " }"  # 16 deep
    data = await gql(document, {"id": funded_id})
    inner = data["account"]["transactions"]["edges"][0]["node"]["account"]["transactions"]["edges"][0]["node"]
    assert inner["account"]["transactions"]["edges"][0]["node"]["account"]["transactions"]["edges"] == [
        {"__typename": "TransactionEdge"}]


COST_5000 = "a: accounts(first: 100) { edges { node { transactions(first: 49) { edges { node { id } } } } } }"
LISTS_250 = "a: accounts(first: 83) { edges { node { x: transactions(first: 0) { totalCount } " \
            "y: transactions(first: 0) { totalCount } z: transactions(first: 0) { totalCount } } } }"


@pytest.mark.parametrize(("label", "document", "refused"), [
    ("16 levels deep", nested(["account(id: $id)", *account_chain(14, start=1)]), None),
    ("17 levels deep", nested(["account(id: $id)", *account_chain(15, start=1)]), "nests 17 levels deep"),
    ("5000 items", COST_5000, None),
    ("5001 items", COST_5000 + " b: accounts(first: 1) { totalCount }", "may return 5001 items"),
    ("250 lists", LISTS_250, None),
    ("251 lists", LISTS_250 + " b: accounts(first: 1) { totalCount }", "may read 251 lists"),
])
async def test_a_query_at_a_limit_runs_and_one_past_it_is_refused(
        http: httpx.AsyncClient, org: Org, funded_id: str, label: str, document: str, refused: str | None) -> None:
    declared = "($id: ID!)" if "$id" in document else ""
    response = await http.post("/graphql", json={"query": f"query{declared} {{ {document} }}",
                                                 "variables": {"id": funded_id} if declared else {}}, headers=auth(org))
    assert response.status_code == 200, response.text
    if refused is None:
        assert codes_of(response) == [], (label, response.text[:300])
    else:
        assert codes_of(response) in (["QUERY_TOO_COMPLEX"], ["QUERY_COST_EXCEEDED"]), label
        assert refused in messages_of(response)[0], messages_of(response)[0]


async def test_introspection_nested_over_the_depth_limit_is_refused(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = "{ " + nested(["__schema", "types", "fields", "type", *["ofType"] * 13], leaf="name") + " }"  # 18 deep
    response = await stopwatch.time("introspection __schema/types/fields/type/ofType x13", lambda: http.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert response.json()["data"] is None
    await unchanged(gql, funded_id, before)


async def test_a_mutation_over_the_alias_limit_is_refused_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = "mutation { " + " ".join(f"a{n}: {add_funds(funded_id, f'alias-{n}')}" for n in range(31)) + " }"
    response = await stopwatch.time("31 aliased addFunds", lambda: http.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert "31" in messages_of(response)[0]
    assert "30" in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


async def test_thirty_aliases_are_allowed(gql: GraphQLClient) -> None:
    data = await gql("{ " + " ".join(f"a{n}: __typename" for n in range(30)) + " }")
    assert len(data) == 30


def _fragments(count: int, body: str) -> str:
    """`count` fragments F0, F1, ... of `body`, in which NEXT names the fragment after."""
    return " ".join(f"fragment F{n} on Query {{ {body.replace('NEXT', f'F{n + 1}')} }}" for n in range(count))


ACCOUNTS_COUNT = "accounts { totalCount }"


# Documents within the token limit that validation spent long on (on this machine: 1.7 s, 0.14 s, 0.20 s, 0.26 s),
# comparing repeated fields, or fragments, pair by pair: refused before validation.
@pytest.mark.parametrize(("label", "query", "message"), [
    ("600 times one field", "{ " + " ".join([ACCOUNTS_COUNT] * 600) + " }", "selects `accounts` 600 times"),
    ("20 fragments of 10 times one field", "{ " + " ".join(f"...F{n}" for n in range(20)) + " } "
     + _fragments(20, " ".join([ACCOUNTS_COUNT] * 10)), "selects `accounts` 200 times"),
    ("a chain of 150 fragments", "{ ...F0 } " + _fragments(150, ACCOUNTS_COUNT + " ...NEXT")
     + " fragment F150 on Query { __typename }", "selects `accounts` 11 times"),
    ("250 fragments spread at once", "{ " + " ".join(f"...F{n}" for n in range(250)) + " } "
     + _fragments(250, "a: __typename"), "spreads 250 fragments in one selection; the limit is 20"),
    ("501 selections", "{ " + " ".join(f"a{n}: __typename" for n in range(501)) + " }",
     "makes 501 selections; the limit is 500"),
])
async def test_a_document_too_large_to_validate_cheaply_is_refused_before_validation(
        http: httpx.AsyncClient, org: Org, stopwatch: Stopwatch, label: str, query: str, message: str) -> None:
    response = await stopwatch.time(label, lambda: http.post("/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert message in messages_of(response)[0]


async def test_a_mutation_selecting_one_field_too_many_times_is_refused_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    before = await snapshot(gql, funded_id)
    query = f"mutation {{ {add_funds(funded_id, selection='userErrors { code } ' + '__typename ' * 51)} }}"
    response = await http.post("/graphql", json={"query": query}, headers=auth(org))
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert "selects `__typename` 51 times in one selection; the limit is 50" in messages_of(response)[0]
    query = f"mutation {{ {add_funds(funded_id, selection='userErrors { code } ' + 'a: account { id } ' * 11)} }}"
    response = await http.post("/graphql", json={"query": query}, headers=auth(org))
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert "selects `a` 11 times in one selection; the limit is 10" in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


async def test_a_page_of_many_colocated_fragments_each_adding_typename_and_id_is_served(
        gql: GraphQLClient, funded_id: str) -> None:
    # Apollo adds __typename, and Relay id, to each fragment: an account page of 12 fragments names each 13 times.
    fields = ["name", "status", "createdAt", "currencyCode", "balance { available { amount } }",
              "rechargeSettings { status }", "paymentMethod { last4 }", "transactions { totalCount }",
              "rechargeAttempts { totalCount }", "balance { belowTrigger }", "name", "status"]
    fragments = " ".join(f"fragment F{n} on Account {{ __typename id {field} }}" for n, field in enumerate(fields))
    spreads = " ".join(f"...F{n}" for n in range(len(fields)))
    data = await gql(f"query($id: ID!) {{ account(id: $id) {{ __typename id {spreads} }} }} {fragments}",
                     {"id": funded_id})
    assert data["account"]["id"] == funded_id
    assert data["account"]["transactions"]["totalCount"] == 1


async def test_documents_at_the_size_limits_are_served(gql: GraphQLClient, funded_id: str) -> None:
    """500 selections; a field ten times in one selection, as `id` in each of a node's types would be."""
    node = "id " * 10 + "name " * 10 + "currencyCode " * 10 + "status " * 10 + "createdAt " * 10
    query = ("{ " + f"accounts {{ edges {{ node {{ {node} }} }} }} " * 9 + "__typename " * 10
             + "accounts { " + "totalCount " * 10 + "edges { cursor } } }")  # 9 x 53 + 10 + 13 selections
    data = await gql(query)
    assert data["accounts"]["totalCount"] == 1
    assert data["accounts"]["edges"][0]["node"]["id"] == funded_id
    node = await gql("query($id: ID!) { node(id: $id) { id " + " ".join(
        f"... on {kind} {{ id }}" for kind in ("Account", "Transaction", "RechargeAttempt", "AuditEvent"))
        + " ... on Account { id name } ... on Node { id } } }", {"id": funded_id})
    assert node == {"node": {"id": funded_id, "name": node["node"]["name"]}}


async def test_a_mutation_over_the_token_limit_is_refused_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    selection = "userErrors { code } " + "__typename " * 5000
    query = f"mutation {{ {add_funds(funded_id, selection=selection)} }}"
    response = await stopwatch.time("5000+ tokens", lambda: http.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_TOO_COMPLEX"]
    assert "5000" in messages_of(response)[0]
    await unchanged(gql, funded_id, before)


COSTLY_QUERY = "{ accounts(first: FIRST) { edges { node { transactions(first: 100) { edges { node { id } } } } } } }"


def aliased_pages(aliases: int) -> str:
    lists = " ".join(f"t{n}: transactions(first: 1) {{ edges {{ node {{ id }} }} }}" for n in range(aliases))
    return f"{{ accounts(first: 100) {{ edges {{ node {{ id {lists} }} }} }} }}"


@pytest.mark.parametrize(("label", "query", "variables", "says"), [
    ("cost 10100: accounts(first:100) x transactions(first:100)", COSTLY_QUERY.replace("FIRST", "100"), {},
     ("10100 items", "5000")),
    ("cost 10100 with first as a variable",
     "query($n: Int) " + COSTLY_QUERY.replace("FIRST", "$n"), {"n": 100}, ("10100 items", "5000")),
    # 28 aliases x 100 accounts ask for 2,900 items, within the cost limit, but read 2,801 lists: 1.5-2.4 s of a
    # process's time (a list costs about what 55 items do), from any READER key, 50 times a second.
    ("2801 lists of 1", aliased_pages(28), {}, ("2801 lists", "250")),
    # a list asked only for its totalCount (or pageInfo, or __typename) reads its page of 20 all the same
    ("29 lists asked only for totalCount, on 100 accounts", "{ accounts(first: 100) { edges { node { "
     + " ".join(f"t{n}: transactions {{ totalCount }}" for n in range(29)) + " } } } }", {}, ("58100 items", "5000")),
    ("3 lists asked only for __typename, on 100 accounts", "{ accounts(first: 100) { edges { node { "
     + " ".join(f"t{n}: rechargeAttempts {{ __typename }}" for n in range(3)) + " } } } }", {},
     ("6100 items", "5000")),
])
async def test_a_query_over_the_cost_limit_is_refused_with_its_cost_and_the_limit(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, query: str, variables: dict[str, Any], says: tuple[str, str]) -> None:
    before = await snapshot(gql, funded_id)
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_COST_EXCEEDED"]
    assert response.json()["data"] is None
    message = messages_of(response)[0]
    assert says[0] in message, message
    assert says[1] in message, message
    await unchanged(gql, funded_id, before)


async def test_a_mutation_whose_payload_costs_too_much_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    selection = ("account { transactions(first: 100) { edges { node { account { transactions(first: 100) "
                 "{ edges { node { id } } } } } } } }")
    response = await stopwatch.time("addFunds with a 10100-item payload", lambda: http.post(
        "/graphql", json={"query": f"mutation {{ {add_funds(funded_id, selection=selection)} }}"}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_COST_EXCEEDED"]
    await unchanged(gql, funded_id, before)


async def test_a_nested_connection_query_within_the_cost_limit_runs(gql: GraphQLClient, funded_id: str) -> None:
    data = await gql(COSTLY_QUERY.replace("FIRST", "10"))  # 10 + 10 * 100 = 1010
    edges = data["accounts"]["edges"]
    assert len(edges) == 1
    assert len(edges[0]["node"]["transactions"]["edges"]) == 1


async def test_an_account_list_with_two_nested_lists_each_is_within_the_limit_on_lists(
        gql: GraphQLClient, funded_id: str) -> None:
    data = await gql(aliased_pages(2))  # 1 + 100 * 2 = 201 lists
    account = data["accounts"]["edges"][0]["node"]
    assert len(account["t0"]["edges"]) == len(account["t1"]["edges"]) == 1


NESTED_PAGES = "{ accounts(first: FIRST) { edges { node { transactions(first: FIRST) { edges { node { id } } } } } } }"


@pytest.mark.parametrize(("label", "query", "variables"), [
    ("first: null (pages of 20: cost 420)", NESTED_PAGES.replace("FIRST", "null"), {}),
    ("a variable left out (20)", "query($f: Int) " + NESTED_PAGES.replace("FIRST", "$f"), {}),
    ("a variable sent as null (20)", "query($f: Int) " + NESTED_PAGES.replace("FIRST", "$f"), {"f": None}),
    ("a variable's declared default (1)", "query($f: Int = 1) " + NESTED_PAGES.replace("FIRST", "$f"), {}),
])
async def test_pages_left_to_their_default_size_are_measured_at_it(
        http: httpx.AsyncClient, org: Org, funded_id: str, label: str, query: str, variables: dict[str, Any]) -> None:
    response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=auth(org))
    assert response.status_code == 200, response.text
    assert codes_of(response) == [], (label, response.text[:300])
    assert len(response.json()["data"]["accounts"]["edges"]) == 1


async def test_a_page_size_variable_left_out_costs_its_default_and_sent_as_null_the_resolvers(
        http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    query = "query($f: Int = 100) " + NESTED_PAGES.replace("FIRST", "$f")  # left out: 100 + 100 * 100 = 10100
    for variables, codes in [({}, ["QUERY_COST_EXCEEDED"]), ({"f": None}, []), ({}, ["QUERY_COST_EXCEEDED"])]:
        response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=auth(org))
        assert response.status_code == 200, response.text
        assert codes_of(response) == codes, (variables, response.text[:300])


async def test_a_page_size_sent_as_a_float_is_measured_as_the_integer_it_runs_as(
        http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    query = "query($f: Int) " + NESTED_PAGES.replace("FIRST", "$f")  # left out: 20 + 20 * 20 = 420
    for variables, codes in [({}, []), ({}, []), ({"f": 100.0}, ["QUERY_COST_EXCEEDED"]), ({"f": 10.0}, [])]:
        response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=auth(org))
        assert response.status_code == 200, response.text
        assert codes_of(response) == codes, (variables, response.text[:300])


FRAGMENTED_COSTLY_QUERY = """{ accounts { ...AccountPage } }
fragment AccountPage on AccountConnection { edges { node { transactions { ...Page } } } }
fragment Page on TransactionConnection { edges { node { account { transactions { ... on TransactionConnection {
  edges { node { account { transactions { ... on TransactionConnection { edges { node { id } } } } } } } } } } } } }"""
PLAIN_COSTLY_QUERY = """{ accounts { edges { node { transactions { edges { node { account { transactions {
  edges { node { account { transactions { edges { node { id } } } } } } } } } } } } } } }"""


async def test_default_sized_connections_nested_over_the_cost_limit_are_refused(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    response = await stopwatch.time("cost 168420: four nested default (20) pages", lambda: http.post(
        "/graphql", json={"query": PLAIN_COSTLY_QUERY}, headers=auth(org)))
    assert codes_of(response) == ["QUERY_COST_EXCEEDED"]
    assert "168420" in messages_of(response)[0]


async def test_connections_whose_edges_sit_in_fragments_cost_the_same_as_plain_ones(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    response = await stopwatch.time("cost 168420 with edges inside fragments", lambda: http.post(
        "/graphql", json={"query": FRAGMENTED_COSTLY_QUERY}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["QUERY_COST_EXCEEDED"], response.text[:300]
    assert "168420" in messages_of(response)[0]


def fragment_bomb(levels: int) -> str:
    """F0 spreads F1 twice, F1 spreads F2 twice, ...: about 20 tokens a level, 2**levels paths."""
    return "\n".join(["query { ...F0 }",
                      *(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(levels)),
                      f"fragment F{levels} on Query {{ __typename }}"])


async def test_a_fragment_bomb_is_answered_at_once(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = fragment_bomb(30)
    assert len(query) < 1500
    started = time.perf_counter()
    response = await stopwatch.time("fragment bomb: 30 fragments spreading the next twice (1.3 kB)",
                                    lambda: http.post("/graphql", json={"query": query}, headers=auth(org)))
    elapsed = time.perf_counter() - started
    # Each fragment is walked once: the document asks for one field, and gets it.
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}
    await unchanged(gql, funded_id, before)
    # Walked path by path (2**30 paths), the document would hold the event loop for about ten minutes. The
    # bound leaves a slow machine room and still catches that.
    assert elapsed < 10, f"{elapsed:.2f} s for a 1.3 kB document"


async def test_a_nested_page_size_out_of_range_is_bad_user_input_not_a_cost(
        http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    query = "query($n: Int) { accounts(first: 100) { edges { node { transactions(first: $n) { totalCount } } } } }"
    response = await http.post("/graphql", json={"query": query, "variables": {"n": 101}}, headers=auth(org))
    assert response.status_code == 200, response.text
    assert set(codes_of(response)) == {"BAD_USER_INPUT"}


# --- arguments: page sizes, ids, cursors, strings ------------------------------------------------------


@pytest.mark.parametrize("first", [101, -1])
async def test_a_page_size_out_of_range_is_bad_user_input(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        first: int) -> None:
    before = await snapshot(gql, funded_id)
    query = "query($id: ID!, $first: Int) { transactions(accountId: $id, first: $first) { totalCount } }"
    response = await stopwatch.time(f"first: {first}", lambda: http.post(
        "/graphql", json={"query": query, "variables": {"id": funded_id, "first": first}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    assert response.json()["data"] == {"transactions": None}
    await unchanged(gql, funded_id, before)


BAD_IDS = [
    ("garbage id", "not an id!"),
    ('base64 "Account:abc"', b64("Account:abc")),
    ('base64 "Account:0"', b64("Account:0")),
    ("base64 of a 30-digit Account number", b64("Account:" + "9" * 30)),
    ("empty id", ""),
]


@pytest.mark.parametrize(("label", "bad_id"), BAD_IDS)
async def test_a_malformed_global_id_is_bad_user_input_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, bad_id: str) -> None:
    before = await snapshot(gql, funded_id)
    query = """mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "10", idempotencyKey: "bad-id"})
        { transaction { id } userErrors { code } } }"""
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", json={"query": query, "variables": {"id": bad_id}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    assert response.json()["data"] is None
    await unchanged(gql, funded_id, before)


async def test_another_types_id_is_an_unknown_account(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    page = await gql("query($id: ID!) { account(id: $id) { transactions { edges { node { id } } } } }",
                     {"id": funded_id})
    transaction_id = page["account"]["transactions"]["edges"][0]["node"]["id"]
    query = """mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "10", idempotencyKey: "other-type"})
        { transaction { id } userErrors { code } } }"""
    response = await stopwatch.time("a Transaction id as accountId", lambda: http.post(
        "/graphql", json={"query": query, "variables": {"id": transaction_id}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"addFunds": {"transaction": None,
                                                     "userErrors": [{"code": "ACCOUNT_NOT_FOUND"}]}}}
    assert await gql("query($id: ID!) { account(id: $id) { id } }", {"id": transaction_id}) == {"account": None}
    untyped = await http.post("/graphql", json={"query": query, "variables": {"id": b64(":1")}}, headers=auth(org))
    assert untyped.json()["data"]["addFunds"]["userErrors"] == [{"code": "ACCOUNT_NOT_FOUND"}], untyped.text
    await unchanged(gql, funded_id, before)


BAD_CURSORS = [
    ("garbage cursor", "%%%not a cursor%%%"),
    ('base64 "k1:abc"', b64("k1:abc")),
    ('base64 "k1:-1"', b64("k1:-1")),
    ("base64 of a 30-digit cursor", b64("k1:" + "9" * 30)),
    ("base64 of another prefix", b64("arrayconnection:1")),
    ("non-ASCII cursor", "ä€"),
    ("base64 of non-UTF-8 bytes", base64.b64encode(b"\xff\xfe\x00").decode()),
]


@pytest.mark.parametrize(("label", "cursor"), BAD_CURSORS)
async def test_a_malformed_cursor_is_bad_user_input(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, cursor: str) -> None:
    before = await snapshot(gql, funded_id)
    query = "query($id: ID!, $after: String) { account(id: $id) { transactions(after: $after) { totalCount } } }"
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", json={"query": query, "variables": {"id": funded_id, "after": cursor}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    await unchanged(gql, funded_id, before)


CREATE = """mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { account { id } userErrors { code } } }"""
ADD = """mutation($input: AddFundsInput!) { addFunds(input: $input) { transaction { id } userErrors { code } } }"""
USAGE = """mutation($input: RecordUsageInput!) {
  recordUsage(input: $input) { transaction { id } userErrors { code } } }"""


def hostile_inputs(account_id: str, text: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each string input of a mutation that would otherwise succeed, set to `text`."""
    return {
        "name": (CREATE, {"name": text, "currencyCode": "SEK"}),
        "reference": (USAGE, {"accountId": account_id, "service": "TOLL_FREE", "amount": "1",
                              "idempotencyKey": "usage", "reference": text}),
        "idempotencyKey": (ADD, {"accountId": account_id, "amount": "10", "idempotencyKey": text}),
    }


@pytest.mark.parametrize("field", ["name", "reference", "idempotencyKey"])
async def test_a_nul_byte_in_a_string_input_is_bad_user_input_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        field: str) -> None:
    before = await snapshot(gql, funded_id)
    document, values = hostile_inputs(funded_id, "call\x00-42")[field]
    response = await stopwatch.time(f"NUL byte in {field} (variable)", lambda: http.post(
        "/graphql", json={"query": document, "variables": {"input": values}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    assert response.json()["data"] is None
    await unchanged(gql, funded_id, before)


async def test_a_nul_byte_in_a_string_literal_is_bad_user_input_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    query = (f'mutation {{ recordUsage(input: {{accountId: "{funded_id}", service: TOLL_FREE, amount: "1", '
             f'idempotencyKey: "nul-literal", reference: "call\\u0000-42"}}) {{ transaction {{ id }} }} }}')
    response = await stopwatch.time("NUL byte in reference (literal \\u0000)", lambda: http.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    await unchanged(gql, funded_id, before)


@pytest.mark.parametrize("field", ["name", "reference", "idempotencyKey"])
async def test_a_lone_surrogate_in_a_string_input_is_bad_user_input_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        field: str) -> None:
    before = await snapshot(gql, funded_id)
    document, values = hostile_inputs(funded_id, "call-\ud800")[field]
    body = json.dumps({"query": document, "variables": {"input": values}})  # ASCII: the surrogate as \ud800
    assert "\\ud800" in body
    response = await stopwatch.time(f"lone surrogate \\ud800 in {field}", lambda: http.post(
        "/graphql", content=body, headers={**auth(org), "Content-Type": "application/json"}))
    await unchanged(gql, funded_id, before)
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"], response.text


@pytest.mark.parametrize("field", ["name", "reference", "idempotencyKey"])
async def test_a_string_over_the_string_limit_is_bad_user_input_naming_its_length(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        field: str) -> None:
    before = await snapshot(gql, funded_id)
    document, values = hostile_inputs(funded_id, "r" * 20_000)[field]
    response = await stopwatch.time(f"20,000-char {field}", lambda: http.post(
        "/graphql", json={"query": document, "variables": {"input": values}}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"]
    message = messages_of(response)[0]
    assert "20000" in message, message
    assert "10000" in message, message
    await unchanged(gql, funded_id, before)


async def test_a_one_megabyte_string_input_is_413_and_records_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    document, values = hostile_inputs(funded_id, "r" * MiB)["reference"]
    response = await stopwatch.time("1 MiB reference string", lambda: http.post(
        "/graphql", json={"query": document, "variables": {"input": values}}, headers=auth(org)))
    assert response.status_code == 413, response.text
    assert codes_of(response) == ["PAYLOAD_TOO_LARGE"]
    await unchanged(gql, funded_id, before)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-10:00"])
async def test_an_occurred_at_at_the_edge_of_the_calendar_is_bad_user_input(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        occurred_at: str) -> None:
    before = await snapshot(gql, funded_id)
    values = {"accountId": funded_id, "service": "TOLL_FREE", "amount": "1", "idempotencyKey": "edge",
              "occurredAt": occurred_at}
    response = await stopwatch.time(f"occurredAt {occurred_at}", lambda: http.post(
        "/graphql", json={"query": USAGE, "variables": {"input": values}}, headers=auth(org)))
    await unchanged(gql, funded_id, before)
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["BAD_USER_INPUT"], response.text


# --- methods and content types -------------------------------------------------------------------------


async def test_a_mutation_over_get_is_405_with_allow_post_and_moves_no_money(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    response = await stopwatch.time("mutation over GET", lambda: http.get(
        "/graphql", params={"query": f"mutation {{ {add_funds(funded_id, 'get')} }}"}, headers=auth(org)))
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert codes_of(response) == ["METHOD_NOT_ALLOWED"]
    await unchanged(gql, funded_id, before)


CREATE_LITERAL = 'mutation { createAccount(input: {name: "CSRF", currencyCode: "SEK"}) { account { id } } }'


def cross_site_requests(org: Org) -> dict[str, dict[str, Any]]:
    """What a browser form or a no-preflight fetch can send to another origin, each holding a mutation."""
    return {
        "text/plain": {"content": json.dumps({"query": CREATE_LITERAL}),
                       "headers": {**auth(org), "Content-Type": "text/plain"}},
        "application/x-www-form-urlencoded": {"data": {"query": CREATE_LITERAL}, "headers": auth(org)},
        "multipart/form-data": {"data": {"operations": json.dumps({"query": CREATE_LITERAL, "variables": {}}),
                                         "map": "{}", "query": CREATE_LITERAL},
                                "files": {"ignored": ("a.txt", b"x", "text/plain")}, "headers": auth(org)},
    }


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_cross_site_content_type_is_415_and_creates_no_account(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        content_type: str) -> None:
    before = await snapshot(gql, funded_id)
    request = cross_site_requests(org)[content_type]
    response = await stopwatch.time(f"{content_type} POST with a mutation", lambda: http.post("/graphql", **request))
    assert response.request.headers["content-type"].startswith(content_type)
    assert response.status_code == 415, response.text
    assert codes_of(response) == ["UNSUPPORTED_MEDIA_TYPE"]
    await unchanged(gql, funded_id, before)


async def test_graphql_response_json_on_a_parse_error_is_400_without_data(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    response = await stopwatch.time("parse error, Accept graphql-response+json", lambda: http.post(
        "/graphql", json={"query": f"mutation {{ {add_funds(funded_id)} "},
        headers={**auth(org), "Accept": GRAPHQL_RESPONSE_JSON}))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert "data" not in response.json()
    assert codes_of(response) == ["GRAPHQL_PARSE_FAILED"]
    await unchanged(gql, funded_id, before)


@pytest.mark.parametrize(("label", "query", "variables", "code"), [
    ("validation error", "{ nope }", {}, "GRAPHQL_VALIDATION_FAILED"),
    ("variable that does not coerce", "query($n: Int) { accounts(first: $n) { totalCount } }", {"n": "ten"},
     "BAD_USER_INPUT"),
    ("depth limit", "{ " + nested(["__schema", "types", "fields", "type", *["ofType"] * 13], "name") + " }", {},
     "QUERY_TOO_COMPLEX"),
    ("cost limit", COSTLY_QUERY.replace("FIRST", "100"), {}, "QUERY_COST_EXCEEDED"),
    ("NUL in a variable", "query($s: String) { accounts(after: $s) { totalCount } }", {"s": "a\x00"},
     "BAD_USER_INPUT"),
    ("token limit", "{ " + "__typename " * 5001 + "}", {}, "QUERY_TOO_COMPLEX"),
])
async def test_graphql_response_json_on_any_request_error_is_400_without_data(
        http: httpx.AsyncClient, org: Org, stopwatch: Stopwatch, label: str, query: str, variables: dict[str, Any],
        code: str) -> None:
    response = await stopwatch.time(f"{label}, Accept graphql-response+json", lambda: http.post(
        "/graphql", json={"query": query, "variables": variables},
        headers={**auth(org), "Accept": GRAPHQL_RESPONSE_JSON}))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert "data" not in response.json()
    assert codes_of(response) == [code]


async def test_graphql_response_json_on_a_field_error_is_200_with_data(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch) -> None:
    before = await snapshot(gql, funded_id)
    response = await stopwatch.time("field error, Accept graphql-response+json", lambda: http.post(
        "/graphql", json={"query": '{ account(id: "garbage") { id } accounts { totalCount } }'},
        headers={**auth(org), "Accept": GRAPHQL_RESPONSE_JSON}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert response.json()["data"] == {"account": None, "accounts": {"totalCount": 1}}
    assert codes_of(response) == ["BAD_USER_INPUT"]
    await unchanged(gql, funded_id, before)


# --- production defaults -------------------------------------------------------------------------------


@pytest.fixture
async def prod(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(runtime, prod_settings(runtime.settings)) as client:
        yield client


async def test_production_refuses_introspection(
        prod: httpx.AsyncClient, org: Org, stopwatch: Stopwatch) -> None:
    response = await stopwatch.time("prod: introspection query", lambda: prod.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert set(codes_of(response)) == {"GRAPHQL_VALIDATION_FAILED"}
    assert all("introspection" in message for message in messages_of(response))
    assert response.json()["data"] is None


async def test_production_still_answers_typename(prod: httpx.AsyncClient, org: Org) -> None:
    response = await prod.post("/graphql", json={"query": "{ __typename }"}, headers=auth(org))
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_production_suggests_no_field_names(
        prod: httpx.AsyncClient, runtime: Runtime, org: Org, stopwatch: Stopwatch) -> None:
    query = "{ acounts { totalCount } accounts { totalCont } }"
    response = await stopwatch.time("prod: misspelt fields", lambda: prod.post(
        "/graphql", json={"query": query}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert set(codes_of(response)) == {"GRAPHQL_VALIDATION_FAILED"}
    assert len(messages_of(response)) == 2
    assert not any("Did you mean" in message for message in messages_of(response)), response.text
    # The same document where suggestions are turned on does suggest: the check above can fail.
    async with client_for(runtime, replace(runtime.settings, field_suggestions=True)) as suggesting:
        helpful = await suggesting.post("/graphql", json={"query": query}, headers=auth(org))
    assert all("Did you mean" in message for message in messages_of(helpful)), helpful.text


MISSPELT_NAMES = {
    "argument": ("{ accounts(frist: 1) { totalCount } }", None),
    "variable type": ("query($service: CreditServce) { __typename }", None),
    "enum literal": ("""mutation($id: ID!) { recordUsage(input: {accountId: $id, service: DOMESTIC_CALLNG,
        amount: "1", idempotencyKey: "misspelt"}) { transaction { id } } }""", {}),
    "enum in a variable": ("""mutation($input: RecordUsageInput!) { recordUsage(input: $input)
        { transaction { id } } }""", {"service": "DOMESTIC_CALLNG"}),
    "input field in a variable": ("""mutation($input: RecordUsageInput!) { recordUsage(input: $input)
        { transaction { id } } }""", {"idempotencyKy": "misspelt"}),
}
"""Misspelt names that graphql-core answers with a suggestion (`None`: no variables; a dict: changes to a valid
recordUsage input, given as `$input`)."""


def without_suggestion(message: str) -> str:
    head, found, rest = message.partition(" Did you mean ")
    return head + rest.partition("?")[2] if found else message


@pytest.mark.parametrize("where", list(MISSPELT_NAMES))
async def test_production_suggests_no_schema_names_anywhere(
        prod: httpx.AsyncClient, runtime: Runtime, org: Org, gql: GraphQLClient, funded_id: str, where: str) -> None:
    query, changes = MISSPELT_NAMES[where]
    variables: dict[str, Any] | None = None
    if changes is not None:
        variables = {"id": funded_id, "input": {"accountId": funded_id, "service": "DOMESTIC_CALLING",
                                                 "amount": "1", "idempotencyKey": "misspelt", **changes}}
    before = await snapshot(gql, funded_id)
    body = {"query": query, "variables": variables}
    async with client_for(runtime, replace(runtime.settings, field_suggestions=True)) as suggesting:
        helpful = [await suggesting.post("/graphql", json=body, headers=auth(org)) for _ in range(2)]
    # Twice each: the second request of a document that validated goes the prepared way (api/prepared.py).
    quiet = [await prod.post("/graphql", json=body, headers=auth(org)) for _ in range(2)]
    for response in helpful:
        assert any("Did you mean" in message for message in messages_of(response)), response.text
    for response, suggested in zip(quiet, helpful, strict=True):
        assert response.status_code == suggested.status_code
        assert codes_of(response) == codes_of(suggested) != []
        messages = messages_of(response)
        assert not any("Did you mean" in message for message in messages), response.text
        # The message is the suggesting one without its suggestion.
        assert messages == [without_suggestion(message) for message in messages_of(suggested)]
    await unchanged(gql, funded_id, before)


async def test_production_serves_no_graphiql(
        prod: httpx.AsyncClient, http: httpx.AsyncClient, stopwatch: Stopwatch) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    response = await stopwatch.time("prod: browser GET /graphql", lambda: prod.get("/graphql", headers=browser))
    assert not response.headers["content-type"].startswith("text/html")
    assert "graphiql" not in response.text.lower()
    assert 400 <= response.status_code < 500, response.text
    assert codes_of(response)
    # In dev GraphiQL is served to the same request: the check above can fail.
    dev = await http.get("/graphql", headers=browser)
    assert dev.headers["content-type"].startswith("text/html")
    assert "graphiql" in dev.text.lower()


# --- request ids ---------------------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    responses = [
        await http.post("/graphql", json={"query": "{ accounts { totalCount } }"}, headers=auth(org)),
        await http.post("/graphql", json={"query": "{ accounts { "}, headers=auth(org)),
        await http.post("/graphql", json={"query": "{ accounts { totalCount } }"}),
        await http.post("/graphql", content=b"{", headers={**auth(org), "Content-Type": "application/json"}),
        await http.post("/graphql", content=b"x" * (MiB + 1), headers={**auth(org), "Content-Type": "text/plain"}),
        await http.post("/graphql", content=b"query=x", headers={**auth(org), "Content-Type": "text/plain"}),
        await http.get("/graphql", params={"query": "mutation { __typename }"}, headers=auth(org)),
        await http.get("/healthz"),
        await http.get("/nowhere"),
    ]
    assert sorted({r.status_code for r in responses}) == [200, 400, 401, 404, 405, 413, 415]
    ids = [response.headers.get("x-request-id") for response in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_sane_client_request_id_is_echoed(http: httpx.AsyncClient, org: Org) -> None:
    response = await http.post("/graphql", json={"query": "{ __typename }"},
                               headers={**auth(org), "X-Request-ID": "client-42.retry_1"})
    assert response.headers["x-request-id"] == "client-42.retry_1"


@pytest.mark.parametrize(("label", "given"), [
    ("200 characters", "a" * 200),
    ("a newline", "abc\ndef"),
    ("a carriage return and a header", "abc\r\nSet-Cookie: x=1"),
    ("markup", "<script>alert(1)</script>"),
    ("spaces", "a b"),
])
async def test_an_insane_client_request_id_is_replaced(http: httpx.AsyncClient, org: Org, label: str,
                                                       given: str) -> None:
    request = http.build_request("POST", "/graphql", json={"query": "{ __typename }"}, headers=auth(org))
    # httpx refuses to send some of these itself; a raw client could, so put them in the ASGI headers directly.
    request.headers.update({"X-Request-ID": "placeholder"})
    raw = [(k, v) for k, v in request.headers.raw if k.lower() != b"x-request-id"]
    request.headers = httpx.Headers([*raw, (b"x-request-id", given.encode())])
    response = await http.send(request)
    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    assert echoed != given
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", echoed), echoed


async def test_the_same_query_text_is_measured_again_for_each_page_size_it_is_sent_with(
        http: httpx.AsyncClient, org: Org, funded_id: str) -> None:
    # A verdict is kept per parsed document; a page size sent as a variable must still count every time.
    query = "query($n: Int) " + COSTLY_QUERY.replace("FIRST", "$n")
    for n, codes in [(10, []), (100, ["QUERY_COST_EXCEEDED"]), (10, []), (100, ["QUERY_COST_EXCEEDED"])]:
        response = await http.post("/graphql", json={"query": query, "variables": {"n": n}}, headers=auth(org))
        assert response.status_code == 200, response.text
        assert codes_of(response) == codes, (n, response.text[:300])


@pytest.mark.parametrize(("label", "definitions", "arguments", "variables"), [
    ("page of 500 in a mutation's payload", "", "first: 500", {}),
    ("malformed cursor in a mutation's payload", "", 'after: "junk"', {}),
    ("page of 101 by a variable's default", "($f: Int = 101)", "first: $f", {}),
    ("malformed cursor by a variable's default", '($c: String = "junk")', "after: $c", {}),
    ("page of 500 by a variable", "($f: Int)", "first: $f", {"f": 500}),
    ("page size of the wrong type by a variable", "($f: Int)", "first: $f", {"f": "abc"}),
])
async def test_a_bad_page_argument_in_a_mutations_payload_refuses_the_mutation_before_it_runs(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, definitions: str, arguments: str, variables: dict[str, Any]) -> None:
    before = await snapshot(gql, funded_id)
    document = (f'mutation{definitions} {{ recordUsage(input: {{accountId: "{funded_id}", service: TOLL_FREE, '
                f'amount: "3", idempotencyKey: "paged"}}) {{ transaction {{ id }} account {{ '
                f"transactions({arguments}) {{ totalCount }} }} }} }}")
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", json={"query": document, "variables": variables}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert response.json()["data"] is None
    assert codes_of(response) == ["BAD_USER_INPUT"]
    await unchanged(gql, funded_id, before)


@pytest.mark.parametrize(("label", "second", "variables"), [
    # "Account:01": account 1, spelled otherwise than handed out
    ("a malformed id", add_funds("QWNjb3VudDowMQ==", "second"), {}),
    ("a number as an id (ID takes one)", add_funds("QWNjb3VudDowMQ==", "second").replace('"QWNjb3VudDowMQ=="', "5"),
     {}),
    ("a number as an id in a batch item's variable",
     "recordUsageBatch(input: {items: $items}) { results { userErrors { code } } }",
     {"items": [{"accountId": 5, "service": "TOLL_FREE", "amount": "1", "idempotencyKey": "n"}]}),
    ("an integral float as an id", "closeAccount(input: {accountId: $id}) { userErrors { code } }", {"id": 12.0}),
    ("a number beyond any float as an id", "closeAccount(input: {accountId: $id}) { userErrors { code } }",
     {"id": 10**400}),
    ("a literal number beyond any float as an id",
     f"closeAccount(input: {{accountId: {10**400}}}) {{ account {{ id }} }}", {}),
])
async def test_a_malformed_id_in_a_later_field_of_a_mutation_runs_none_of_its_fields(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, funded_id: str, stopwatch: Stopwatch,
        label: str, second: str, variables: dict[str, Any]) -> None:
    before = await snapshot(gql, funded_id)
    definitions = "($items: [RecordUsageInput!]!)" if "items" in variables else "($id: ID!)" if variables else ""
    document = f"mutation{definitions} {{ a: {add_funds(funded_id, 'first')} b: {second} }}"
    response = await stopwatch.time(label, lambda: http.post(
        "/graphql", json={"query": document, "variables": variables}, headers=auth(org)))
    assert response.status_code == 200, response.text
    assert response.json()["data"] is None
    assert codes_of(response) == ["BAD_USER_INPUT"]
    await unchanged(gql, funded_id, before)
