"""The GraphQL-over-HTTP audit suite (npm graphql-http `auditServer`) against a real `serve` process
with production settings: every MUST and every SHOULD audit passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Launcher, cli_env, create_org_and_key, migrated, start_server

pytestmark = pytest.mark.slow

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"


def test_every_must_and_should_audit_of_graphql_over_http_passes(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    node = shutil.which("node")
    installed = (CONFORMANCE / "node_modules" / "graphql-http").is_dir()
    if not (node and installed) and not os.environ.get("CREDITS_REQUIRE_CONFORMANCE"):
        pytest.skip("the audit suite needs Node.js and npm (`make dev` installs it in tests/conformance)")
    assert node, "Node.js runs the audit suite; `make dev` installs it with npm (tests/conformance)"
    assert installed, "run `make dev` to install tests/conformance"
    url = migrated(sqlite_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    # Production defaults, but for introspection: the suite's variables audit asks `__type(name: $name)`.
    server = start_server(launch, cli_env(url, CREDITS_INTROSPECTION="true"))

    run = subprocess.run([node, str(CONFORMANCE / "audit.mjs"), server.graphql_url, key],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    audits = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    required = [a for a in audits if a["name"].startswith(("MUST", "SHOULD"))]
    failed = [a for a in required if a["status"] != "ok"]

    musts = [a for a in required if a["name"].startswith("MUST")]
    shoulds = [a for a in required if a["name"].startswith("SHOULD")]
    print(f"\ngraphql-http audit: MUST {sum(a['status'] == 'ok' for a in musts)}/{len(musts)}, "
          f"SHOULD {sum(a['status'] == 'ok' for a in shoulds)}/{len(shoulds)}")
    assert len(musts) >= 13
    assert len(shoulds) >= 23
    assert failed == [], json.dumps(failed, indent=1)
