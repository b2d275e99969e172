"""Every GraphQL error carries `extensions.code`; unexpected ones are masked and logged."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import GraphQLError, ValuesOfCorrectTypeRule
from strawberry.extensions import SchemaExtension

from credits_graphql.service.transient import StoreUnavailable, TransientConflict

log = logging.getLogger("credits_graphql.errors")

BAD_USER_INPUT = "BAD_USER_INPUT"
BAD_REQUEST = "BAD_REQUEST"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL = "INTERNAL_SERVER_ERROR"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
INTERNAL_MESSAGE = "Internal server error."
UNAVAILABLE = "SERVICE_UNAVAILABLE"


class BadLiteralRule(ValuesOfCorrectTypeRule):
    """A literal of the wrong shape ("1e2" as a Decimal, an unknown enum value) is bad input, not
    a malformed document: the same value sent as a variable is BAD_USER_INPUT too."""

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {**(error.extensions or {}), "code": BAD_USER_INPUT}
        super().report_error(error)


def code_for_message(message: str) -> str | None:
    """The parser reports by message only: a token limit is a complexity limit, the rest a syntax error."""
    if message.startswith("Syntax Error: Document contains more than"):
        return TOO_COMPLEX
    if message.startswith("Syntax Error"):
        return PARSE_FAILED
    return None


_SUGGESTION = re.compile(r" Did you mean (?:the [a-z ]+ )?'[_A-Za-z][_0-9A-Za-z]*'"
                         r"(?:(?:,| or|, or) '[_A-Za-z][_0-9A-Za-z]*')*\?(?=\s|$)")
"""graphql-core's `did_you_mean` sentence: the schema names nearest a misspelt one."""


def drop_suggestion(error: GraphQLError) -> None:
    """Strawberry's `disable_field_suggestions` drops only a field's; this drops every one graphql-core makes
    (arguments, types, enum values, input fields), in validation and in the coercion of variables alike."""
    error.message = _SUGGESTION.sub("", error.message)


def _tag(errors: list[GraphQLError] | None, code: str) -> None:
    for error in errors or ():
        if not (error.extensions or {}).get("code"):
            error.extensions = {**(error.extensions or {}), "code": code}


def only_unavailable(response: Mapping[str, Any]) -> bool:
    """A response with no data (none at all, or every field asked for null) and only the database's trouble to show
    (lost in the middle of a request): answered 503 with Retry-After, as one that found the database down before it
    began. A null the client could take for "not found" is never answered 200 then."""
    errors, data = response.get("errors") or [], response.get("data")
    return (bool(errors) and (data is None or (isinstance(data, Mapping) and all(v is None for v in data.values())))
            and all((error.get("extensions") or {}).get("code") == UNAVAILABLE for error in errors))


def is_internal(error: GraphQLError) -> bool:
    return (error.path is not None and not (error.extensions or {}).get("code")
            and not isinstance(error.original_error, StoreUnavailable | TransientConflict))


def log_internal(errors: list[GraphQLError], request_id: str) -> None:
    for error in errors:
        if is_internal(error):
            log.error("unexpected error at %s (request %s)", ".".join(map(str, error.path or ())), request_id,
                      exc_info=error.original_error or error)


def request_id_of(context: object) -> str:
    return str(getattr(context, "request_id", "") or "")


class ErrorCodes(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = tuple(
            BadLiteralRule if rule is ValuesOfCorrectTypeRule else rule for rule in context.validation_rules)
        yield
        _tag(context.pre_execution_errors, VALIDATION_FAILED)

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            _tag([error], code_for_message(error.message) or PARSE_FAILED)

    def on_execute(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            code_execution_errors(result.errors, request_id_of(self.execution_context.context))


def code_execution_errors(errors: list[GraphQLError], request_id: str) -> None:
    """Gives each error of an execution its code, in place: the database's trouble is SERVICE_UNAVAILABLE,
    anything unexpected is masked as INTERNAL_SERVER_ERROR, the rest is the client's input."""
    for index, error in enumerate(errors):
        if isinstance(error.original_error, StoreUnavailable | TransientConflict):
            log.warning("request %s failed on the database at %s: %s", request_id,
                        ".".join(map(str, error.path or ())), error.original_error)
            errors[index] = GraphQLError(
                "The database is unavailable; retry shortly (with the same idempotency key).",
                nodes=error.nodes, path=error.path, extensions={"code": UNAVAILABLE})
        elif is_internal(error):
            errors[index] = GraphQLError(INTERNAL_MESSAGE, nodes=error.nodes, path=error.path,
                                         extensions={"code": INTERNAL, "requestId": request_id})
        else:
            # Errors before execution starts, such as a variable that does not coerce.
            _tag([error], BAD_USER_INPUT)
