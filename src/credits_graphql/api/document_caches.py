"""Strawberry's parse and validation caches, for query texts of a bounded length: a longer one is parsed and
validated on every request, never kept (api/limits.py, MAX_KEPT_QUERY_LENGTH)."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import parse
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.schema import validate_document

from credits_graphql.api.limits import MAX_KEPT_QUERY_LENGTH


def _too_long(query: str | None) -> bool:
    return query is not None and len(query) > MAX_KEPT_QUERY_LENGTH


class BoundedParserCache(ParserCache):
    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if not _too_long(context.query):
            yield from super().on_parse()
            return
        assert context.query is not None
        context.graphql_document = parse(context.query, **context.parse_options)
        yield


class BoundedValidationCache(ValidationCache):
    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors:  # refused before validation (api/limits.py, RefuseOversized)
            yield
            return
        if not _too_long(context.query):
            yield from super().on_validate()
            return
        assert context.graphql_document is not None
        context.pre_execution_errors = validate_document(context.schema._schema, context.graphql_document,
                                                         context.validation_rules)
        yield
