"""schema.graphql at the repository root is exactly what `credits-graphql export-schema` prints, and it
keeps every promise of the shared contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
