"""A bounded fuzz run through the public endpoint: hypothesis composes valid and invalid GraphQL documents
from the served schema's own names (random nesting, aliases, fragments, literals, punctuation) and random
variables (floats, NaN and Infinity as JSON, huge integers, nested objects, unicode), sends them with random
methods, media types and keys, and checks after every request:

- no 5xx and no unexpected (INTERNAL_SERVER_ERROR) error; every error carries `extensions.code`;
- the ledger (the number and total of all entries, and the pre-funded account's balance) is unchanged unless
  the request was a mutation that answered data and named a money-moving field; and it always balances.

Each database gets its own app, engine and event loop (an `asyncio.Runner` kept for the module), because
hypothesis drives a synchronous test."""

from __future__ import annotations

import asyncio
import json
import shutil
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from credits_graphql.api.schema import build_schema
from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime, bootstrap
from credits_graphql.domain.access import Role
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import access
from credits_graphql.service.rate_limit import RateLimit
from credits_graphql.settings import Environment, Settings
from tests.conftest import BACKENDS, _truncate

MONEY_MOVING = ("addFunds", "recordUsage")
MEDIA_TYPES = ["application/json", "application/json; charset=utf-8", "application/graphql-response+json",
               "text/plain", "application/x-www-form-urlencoded", "application/graphql", ""]
ACCEPTS = [None, "application/json", "application/graphql-response+json", "*/*",
           "application/graphql-response+json, application/json;q=0.9", "text/html"]


@dataclass
class Ledger:
    entries: int
    total_micros: int
    funded_balance_micros: int
    balanced: bool


@dataclass
class FuzzApi:
    """An app of its own on one database, with an organization, a funded and an empty account."""

    runtime: Runtime
    client: httpx.AsyncClient
    keys: dict[str, str]
    funded_id: str
    empty_id: str
    funded_pk: int
    requests: int = 0
    moved: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @classmethod
    async def start(cls, database_url: str) -> FuzzApi:
        # Dev settings with introspection on (the fuzz may ask for __schema); no rate limit for 150 fast requests.
        runtime = bootstrap(Settings(database_url=database_url, env=Environment.DEV, introspection=True,
                                     rate_limit=RateLimit(per_second=0, burst=1)), gateway=SandboxGateway())
        org = await access.create_organization(runtime.deps, "Fuzz")
        keys = {role.value: (await access.create_api_key(runtime.deps, org.id, role))[1] for role in Role}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(runtime, run_worker=False)),
                                   base_url="http://fuzz")
        headers = {"Authorization": f"Bearer {keys['ADMIN']}"}
        ids = []
        for name in ("Funded", "Empty"):
            created = await client.post("/graphql", headers=headers, json={"query": """mutation($name: String!) {
                createAccount(input: {name: $name, currencyCode: "SEK", paymentMethod: {token: "tok_visa"}})
                { account { id } } }""", "variables": {"name": name}})
            ids.append(created.json()["data"]["createAccount"]["account"]["id"])
        funded = await client.post("/graphql", headers=headers, json={"query": """mutation($id: ID!) {
            addFunds(input: {accountId: $id, amount: "1000", idempotencyKey: "seed"}) { transaction { id } } }""",
                                                                      "variables": {"id": ids[0]}})
        assert funded.json()["data"]["addFunds"]["transaction"], funded.text
        async with runtime.engine.connect() as connection:
            pk = (await connection.execute(text("SELECT id FROM accounts WHERE name = 'Funded'"))).scalar_one()
        return cls(runtime=runtime, client=client, keys=keys, funded_id=ids[0], empty_id=ids[1], funded_pk=pk)

    async def ledger(self) -> Ledger:
        async with self.runtime.engine.connect() as connection:
            entries, total = (await connection.execute(text(
                "SELECT COUNT(*), COALESCE(SUM(amount_micros), 0) FROM ledger_entries"))).one()
            balance = (await connection.execute(text("SELECT balance_micros FROM accounts WHERE id = :id"),
                                                {"id": self.funded_pk})).scalar_one()
            unbalanced = (await connection.execute(text(
                "SELECT COUNT(*) FROM accounts a WHERE a.balance_micros != (SELECT COALESCE(SUM(e.amount_micros), 0)"
                " FROM ledger_entries e WHERE e.account_id = a.id)"))).scalar_one()
        return Ledger(int(entries), int(total), int(balance), unbalanced == 0)

    async def close(self) -> None:
        await self.client.aclose()
        await self.runtime.close()


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[asyncio.Runner, FuzzApi]]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fuzz") / "credits.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_run_url")
        asyncio.run(_truncate(url))
    with asyncio.Runner() as runner:
        api = runner.run(FuzzApi.start(url))
        yield runner, api
        runner.run(api.close())
    if request.param == "postgresql":
        asyncio.run(_truncate(url))


# --- strategies ----------------------------------------------------------------------------------------------

SCHEMA: GraphQLSchema = build_schema()._schema
NAMES = sorted({name for type_ in SCHEMA.type_map.values() if not type_.name.startswith("__")
                for name in [type_.name, *getattr(type_, "fields", {}).keys()]})
PUNCTUATION = [*"{}()[]:!$@=|&,", "...", '"', '"""', "#", "\n", "\\u0000", "on", "fragment", "query", "mutation",
               "subscription", "null", "true", "false"]

def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in `one_in` draws; False is what hypothesis starts from and shrinks to."""
    return st.sampled_from([False] * (one_in - 1) + [True])


huge_ints = st.sampled_from([2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 10**30])
weird_strings = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e309", "-0", "0x10", "1e2", " 1", "1_000", "\u0661\u0660", "", "\u202e",
    "💸", "Account:1", "QWNjb3VudDox", "QWNjb3VudDow", "azE6MQ==", "tok_visa", "tok_chargeDeclined", "SEK", "JPY",
    "TOLL_FREE", "2026-11-25T14:03:00+00:00", "2026-11-25T14:03:00", "ä" * 300, "x" * 10_001, "a\x00b", "\ud7ff",
])
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), huge_ints,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), weird_strings,
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-200000, max_value=200000).map(str),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@st.composite
def literal(draw: st.DrawFn, type_: GraphQLInputType | None = None, depth: int = 0) -> str:
    """A GraphQL literal: usually of the right shape for `type_`, sometimes anything at all."""
    if type_ is None or draw(rarely(10)):
        return draw(st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.text(max_size=20).map(json.dumps), weird_strings.map(json.dumps),
            st.sampled_from(["null", "true", "false", "[]", "{}", "$v", "$missing", "ACTIVE", "NaN", "1e999"])))
    if isinstance(type_, GraphQLNonNull):
        return draw(literal(type_.of_type, depth))
    if isinstance(type_, GraphQLList):
        items = draw(st.lists(literal(type_.of_type, depth + 1), max_size=3))
        return "[" + ", ".join(items) + "]"
    if isinstance(type_, GraphQLEnumType):
        return str(draw(st.sampled_from([*type_.values.keys(), "NOPE"])))
    if isinstance(type_, GraphQLInputObjectType):
        if depth > 3:
            return "{}"
        fields = type_.fields
        chosen = [name for name, spec in fields.items()
                  if isinstance(spec.type, GraphQLNonNull) or draw(st.booleans())]
        parts = [f"{name}: {draw(literal(fields[name].type, depth + 1))}" for name in chosen]
        return "{" + ", ".join(parts) + "}"
    assert isinstance(type_, GraphQLScalarType)
    return draw(scalar_literal(type_.name))


@st.composite
def scalar_literal(draw: st.DrawFn, name: str) -> str:
    if name == "ID":
        return json.dumps(draw(st.sampled_from(["QWNjb3VudDox", "QWNjb3VudDoy", "QWNjb3VudDoz", "VHJhbnNhY3Rpb246MQ==",
                                                "bad id", "QWNjb3VudDo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", ""])))
    if name == "Decimal":
        return json.dumps(draw(st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-1, max_value=200000).map(str),
            weird_strings)))
    if name == "Int":
        return str(draw(st.one_of(st.integers(-5, 150), huge_ints)))
    if name == "Boolean":
        return draw(st.sampled_from(["true", "false"]))
    if name == "DateTime":
        return json.dumps(draw(st.sampled_from(["2026-11-25T14:03:00+00:00", "2026-11-25T14:03:00", "yesterday",
                                                "2026-02-30T00:00:00+00:00", "2026-11-25T14:03:00+14:00",
                                                "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-10:00"])))
    return json.dumps(draw(st.one_of(st.text(max_size=30), weird_strings,
                                     st.sampled_from(["tok_visa", "tok_mastercard", "tok_chargeDeclined", "SEK"]))))


def unwrap(type_: Any) -> GraphQLNamedType:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    named: GraphQLNamedType = type_
    return named


@st.composite
def selection_set(draw: st.DrawFn, type_: GraphQLNamedType, depth: int) -> str:
    """A selection set on `type_`: real fields (with arguments, aliases, inline fragments), nested up to about
    twenty levels so that the depth limit is sometimes passed, and now and then a field that does not exist."""
    if isinstance(type_, GraphQLUnionType | GraphQLInterfaceType) and draw(st.booleans()):
        possible = SCHEMA.get_possible_types(type_)
        target = draw(st.sampled_from(list(possible)))
        return "{ __typename ... on " + target.name + " " + draw(selection_set(target, depth)) + " }"
    fields = getattr(type_, "fields", {})
    if not fields:
        return "{ __typename }"
    names = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=4, unique=True))
    parts = []
    for name in names:
        spec = fields[name]
        alias = f"{draw(st.sampled_from(['a', 'b', 'c']))}{draw(st.integers(0, 40))}: " if draw(
            rarely(6)) else ""
        args = [f"{arg}: {draw(literal(arg_spec.type))}" for arg, arg_spec in spec.args.items()
                if isinstance(arg_spec.type, GraphQLNonNull) or draw(rarely(3))]
        head = alias + name + (f"({', '.join(args)})" if args else "")
        inner = unwrap(spec.type)
        if isinstance(inner, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            if depth >= draw(st.integers(3, 20)):
                head += " { __typename }"
            else:
                head += " " + draw(selection_set(inner, depth + 1))
        parts.append(head)
    if draw(rarely(10)):
        parts.append(draw(st.sampled_from(NAMES)) + "x")  # an unknown field
    return "{ " + " ".join(parts) + " }"


@st.composite
def schema_document(draw: st.DrawFn) -> str:
    operation = draw(st.sampled_from(["query", "mutation", "", "query Q", "mutation M"]))
    root = SCHEMA.mutation_type if operation.startswith("mutation") else SCHEMA.query_type
    assert root is not None
    body = draw(selection_set(root, 1))
    if draw(rarely(5)):
        variables = "($v: " + draw(st.sampled_from(["Int", "String", "ID!", "Decimal", "[Int]", "AddFundsInput"])) + ")"
        operation = (operation or "query") + variables
    document = f"{operation} {body}".strip()
    if draw(rarely(6)):  # cut it somewhere
        document = document[:draw(st.integers(0, len(document)))]
    return document


@st.composite
def money_document(draw: st.DrawFn, ids: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """A money-moving or settings mutation with input variables that are often valid, so that the resolvers,
    not only the validator, see the fuzz."""
    kind = draw(st.sampled_from(["AddFunds", "RecordUsage", "UpdateRechargeSettings", "CreateAccount"]))
    field_name = kind[0].lower() + kind[1:]
    selection = draw(st.sampled_from(["userErrors { code field }", "transaction { id amount { amount } }",
                                      "account { balance { available { amount } } }"]))
    if kind == "CreateAccount" or kind == "UpdateRechargeSettings":
        selection = "userErrors { code } account { id }"
    account = draw(json_scalars) if draw(rarely(5)) else draw(st.sampled_from(ids))
    amount = draw(st.one_of(
        st.sampled_from(["10", "12.50", "0.0125", "1", "99.99", "100000.01", "-5"]),
        st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=0, max_value=2000).map(str),
        st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=0, max_value=5).map(str)))
    if draw(rarely(4)):
        amount = draw(json_values)
    key = draw(st.text(min_size=1, max_size=12))
    inputs: dict[str, dict[str, Any]] = {
        "AddFunds": {"accountId": account, "amount": amount, "idempotencyKey": key},
        "RecordUsage": {"accountId": account, "amount": amount, "idempotencyKey": key,
                        "service": draw(st.sampled_from(["TOLL_FREE", "DOMESTIC_CALLING", "toll_free", 3])),
                        "minutes": draw(st.one_of(st.none(), st.integers(-3, 2**31 - 1), huge_ints)),
                        "reference": draw(st.one_of(st.none(), st.text(max_size=300), weird_strings))},
        "UpdateRechargeSettings": {"accountId": account, "enabled": draw(st.one_of(st.booleans(), json_scalars)),
                                   "rechargeAmount": amount, "triggerBalance": draw(json_scalars)},
        "CreateAccount": {"name": draw(st.one_of(st.text(max_size=250), weird_strings)),
                          "currencyCode": draw(st.sampled_from(["SEK", "JPY", "XXX", "sek", "", "€"])),
                          "paymentMethod": draw(st.one_of(st.none(), st.fixed_dictionaries(
                              {"token": st.sampled_from(["tok_visa", "tok_chargeDeclined", "tok_nope", ""])})))},
    }
    values = inputs[kind]
    if draw(rarely(5)):  # an extra, unknown or mistyped input field
        values = {**values, draw(st.sampled_from(NAMES)): draw(json_values)}
    document = f"mutation($input: {kind}Input!) {{ {field_name}(input: $input) {{ {selection} }} }}"
    return document, {"input": values}


token_soup = st.lists(st.one_of(st.sampled_from(NAMES), st.sampled_from(PUNCTUATION), literal()),
                      min_size=1, max_size=60).map(" ".join)


@dataclass(frozen=True)
class Attempt:
    method: str
    document: str
    variables: Any
    body: bytes | None
    media_type: str
    accept: str | None
    key: str


@st.composite
def attempts(draw: st.DrawFn, ids: tuple[str, str]) -> Attempt:
    variables: Any = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["v", "input", "n"]), json_values,
                                                                max_size=3)))
    if draw(rarely(20)):  # variables that are not an object
        variables = draw(json_values)
    choice = draw(st.sampled_from(["money"] * 3 + ["schema"] * 4 + ["soup"] * 2 + ["text"]))
    if choice == "schema":
        document = draw(schema_document())
    elif choice == "money":
        document, variables = draw(money_document(ids))
    elif choice == "soup":
        document = draw(token_soup)
    else:
        document = draw(st.text(alphabet=string.printable + "{}()$ä\u0000💸", max_size=200))
    method = draw(st.sampled_from(["POST"] * 18 + ["GET", "PUT"]))
    raw = draw(st.sampled_from(["object"] * 18 + ["any", "batch"]))
    body: bytes | None = None
    if raw == "any":  # a body that is not the usual object: any JSON, or broken JSON
        body = draw(st.one_of(json_values.map(lambda value: json.dumps(value).encode()),
                              st.binary(max_size=64)))
    elif raw == "batch":
        body = json.dumps([{"query": document, "variables": variables}]).encode()
    media_type = draw(st.sampled_from(MEDIA_TYPES)) if draw(rarely(10)) else "application/json"
    accept = draw(st.sampled_from(ACCEPTS))
    key = draw(st.sampled_from(["ADMIN"] * 16 + ["READER", "USAGE_WRITER", "none", "garbage"]))
    return Attempt(method, document, variables, body, media_type, accept, key)


# --- the run -------------------------------------------------------------------------------------------------


async def send(api: FuzzApi, attempt: Attempt) -> httpx.Response:
    headers = {}
    if attempt.key == "garbage":
        headers["Authorization"] = "Bearer cgk_not-a-key"
    elif attempt.key != "none":
        headers["Authorization"] = f"Bearer {api.keys[attempt.key]}"
    if attempt.accept:
        headers["Accept"] = attempt.accept
    if attempt.method == "GET":
        params = {"query": attempt.document}
        if attempt.variables is not None:
            params["variables"] = json.dumps(attempt.variables)
        return await api.client.get("/graphql", params=params, headers=headers)
    body = attempt.body
    if body is None:  # NaN and Infinity go out as the bare words Python writes (not JSON, but common)
        body = json.dumps({"query": attempt.document, "variables": attempt.variables}).encode()
    if attempt.media_type:
        headers["Content-Type"] = attempt.media_type
    return await api.client.request(attempt.method, "/graphql", content=body, headers=headers)


def could_move_money(attempt: Attempt, response: httpx.Response) -> bool:
    """A request that answered data for a mutation naming addFunds or recordUsage may move money."""
    if response.status_code != 200 or not attempt.document.lstrip().startswith("mutation"):
        return False
    if not any(name in attempt.document for name in MONEY_MOVING):
        return False
    return bool(response.json().get("data"))


async def run_one(api: FuzzApi, attempt: Attempt) -> None:
    before = await api.ledger()
    response = await send(api, attempt)
    after = await api.ledger()
    api.requests += 1
    api.statuses[response.status_code] = api.statuses.get(response.status_code, 0) + 1
    context = f"{attempt!r:.1500}\n-> {response.status_code} {response.text[:600]}"
    assert response.status_code < 500, context
    assert response.headers.get("x-request-id"), context
    if response.status_code in (204, 304):
        return
    body = response.json()
    assert isinstance(body, dict), context
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert isinstance(code, str), context
        assert code, context
        assert code != "INTERNAL_SERVER_ERROR", context
    assert after.balanced, context
    if after != before:
        assert could_move_money(attempt, response), f"the ledger changed: {before} -> {after}\n{context}"
        api.moved += 1


@pytest.fixture(scope="module")
def fuzz_report(fuzz_api: tuple[asyncio.Runner, FuzzApi]) -> Iterator[FuzzApi]:
    """Prints what the fuzz run did, and checks it was not all refusals: some requests were served and some
    moved money (whenever the fuzz test ran, alone or in any order)."""
    _, api = fuzz_api
    yield api
    print(f"\nfuzz: {api.requests} requests, statuses {dict(sorted(api.statuses.items()))}, "
          f"{api.moved} moved money")
    if api.requests:
        assert api.requests >= 150
        assert api.statuses.get(200, 0) >= 40, api.statuses
        assert api.moved >= 1, api.statuses


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_generated_requests_never_fail_the_server_nor_move_money_unasked(
        fuzz_api: tuple[asyncio.Runner, FuzzApi], fuzz_report: FuzzApi, data: st.DataObject) -> None:
    runner, api = fuzz_api
    attempt = data.draw(attempts((api.funded_id, api.empty_id)))
    runner.run(run_one(api, attempt))
