"""The layer rules of src/credits_graphql, checked on the imports of every module (read with ast, not run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = "credits_graphql"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved), including ones under TYPE_CHECKING."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            # `from credits_graphql import store` imports the subpackage
            found.update(f"{target}.{alias.name}" for alias in node.names if target == PACKAGE)
    return found


def _layer_modules(layer: str) -> list[Path]:
    modules = sorted((SOURCE / layer).rglob("*.py"))
    assert modules, f"no modules under {SOURCE / layer}"
    return modules


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def _violations(layer: str, forbidden: tuple[str, ...] = (), allowed: tuple[str, ...] | None = None) -> list[str]:
    out = []
    for path in _layer_modules(layer):
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            bad = _within(name, forbidden) or (
                allowed is not None and top not in sys.stdlib_module_names and not _within(name, allowed))
            if bad:
                out.append(f"{path.relative_to(SOURCE.parent)} imports {name}")
    return out


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    assert _violations("domain", allowed=(f"{PACKAGE}.domain",)) == []


def test_the_service_layer_knows_no_storage_transport_or_entry_point() -> None:
    forbidden = tuple(f"{PACKAGE}.{name}" for name in ("store", "api", "app", "cli", "bootstrap"))
    assert _violations("service", forbidden=(*forbidden, "sqlalchemy", "strawberry", "starlette")) == []


def test_the_store_does_not_import_the_api() -> None:
    assert _violations("store", forbidden=(f"{PACKAGE}.api",)) == []


def test_the_api_does_not_touch_the_store_or_sqlalchemy() -> None:
    assert _violations("api", forbidden=(f"{PACKAGE}.store", "sqlalchemy")) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import sqlalchemy.orm", {"sqlalchemy.orm"}),
    ("from credits_graphql import store", {"credits_graphql", "credits_graphql.store"}),
    ("from ..store import tables", {"credits_graphql.store"}),
    ("from . import money", {"credits_graphql.domain"}),
])
def test_the_import_reader_resolves_absolute_and_relative_imports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: set[str]) -> None:
    fake_source = tmp_path / PACKAGE
    (fake_source / "domain").mkdir(parents=True)
    module = fake_source / "domain" / "example.py"
    module.write_text(source + "\n")
    monkeypatch.setattr(sys.modules[__name__], "SOURCE", fake_source)
    assert _imports(module) == expected


def test_the_checker_sees_the_imports_the_layers_really_make() -> None:
    assert _violations("store", forbidden=("sqlalchemy",)), "the store is built on SQLAlchemy"
    assert _violations("api", forbidden=("strawberry",)), "the api is built on Strawberry"
