"""schema.graphql at the repository root is exactly what `credits-graphql export-schema` prints, and it
keeps every promise of the shared contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from graphql import GraphQLEnumType, GraphQLObjectType, get_named_type

from credits_graphql.api.connections import LIST_FIELDS
from credits_graphql.api.schema import build_schema

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / ".venv" / "bin" / "credits-graphql"
CONTRACT_CHECK = REPO / ".." / "shared" / "tools" / "contract-check.py"

pytestmark = pytest.mark.slow


def _exported_schema() -> str:
    completed = subprocess.run([str(CLI), "export-schema"], capture_output=True, text=True, check=False, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_schema_graphql_is_what_export_schema_prints() -> None:
    committed = (REPO / "schema.graphql").read_text().rstrip("\n")
    assert _exported_schema().rstrip("\n") == committed, (
        "schema.graphql differs from `credits-graphql export-schema`: run `make schema` and commit the result")


def test_the_served_schema_keeps_every_promise_of_the_contract() -> None:
    if not CONTRACT_CHECK.exists():
        pytest.skip(f"the contract checker {CONTRACT_CHECK.resolve()} is not present beside this repository")
    completed = subprocess.run([sys.executable, str(CONTRACT_CHECK)], cwd=REPO, capture_output=True, text=True,
                               check=False, timeout=60)
    assert completed.returncode == 0, f"contract gaps:\n{completed.stdout}{completed.stderr}"
    assert "0 gap(s)" in completed.stdout


def test_every_enum_value_is_described_for_graphiql_and_client_code_generators() -> None:
    schema = build_schema(introspection=True, field_suggestions=False)._schema
    enums = [t for name, t in schema.type_map.items() if isinstance(t, GraphQLEnumType) and not name.startswith("__")]
    assert {e.name for e in enums} >= {"TransactionKind", "RechargeStatus", "RechargeAttemptStatus", "UserErrorCode"}
    undescribed = [f"{e.name}.{name}" for e in enums for name, value in e.values.items() if not value.description]
    assert undescribed == []
    # the contract's own words, where it has them
    assert schema.type_map["RechargeStatus"].values["SUSPENDED"].description == (  # type: ignore[attr-defined]
        "Auto-recharge stopped itself after repeated payment failures; saving settings or a new payment method "
        "re-activates it.")


def test_the_query_limits_know_every_field_that_answers_a_list() -> None:
    """Each reads a page whatever is selected of it, so the list limit counts it (api/limits.py)."""
    schema = build_schema(introspection=True, field_suggestions=False)._schema
    answering_lists = {name for type_ in schema.type_map.values() if isinstance(type_, GraphQLObjectType)
                       for name, field in type_.fields.items()
                       if getattr(get_named_type(field.type), "name", "").endswith("Connection")}
    assert answering_lists == LIST_FIELDS
