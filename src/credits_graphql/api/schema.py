"""Schema assembly, and the way a query text seen before runs (api/prepared.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLError, execute
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import DisableIntrospection, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.await_maybe import await_maybe

from credits_graphql.api.document_caches import BoundedParserCache, BoundedValidationCache
from credits_graphql.api.errors import (
    TOO_COMPLEX,
    ErrorCodes,
    code_execution_errors,
    drop_suggestion,
    log_internal,
    request_id_of,
)
from credits_graphql.api.limits import EnforceLimits, QueryLimits, RefuseOversized, limit_error
from credits_graphql.api.mutations import Mutation
from credits_graphql.api.preflight import Preflight, preflight_error
from credits_graphql.api.prepared import (
    MAX_DOCUMENTS,
    RememberValidated,
    ValidatedDocuments,
    chosen_operation,
    operation_type,
)
from credits_graphql.api.queries import Query
from credits_graphql.api.scalars import SCALARS
from credits_graphql.api.types import AccountNode, RechargeAttemptNode, TransactionNode

_QUERIES_AND_MUTATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})


class CreditsSchema(strawberry.Schema):
    def __init__(self, *, limits: QueryLimits, documents: ValidatedDocuments, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.documents = documents

    remove_field_suggestion = staticmethod(drop_suggestion)

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Request errors are the client's: they are answered, not logged.
        log_internal(errors, request_id_of(execution_context.context if execution_context else None))

    async def execute(self, query: str | None, variable_values: dict[str, Any] | None = None,
                      context_value: Any | None = None, root_value: Any | None = None,
                      operation_name: str | None = None,
                      allowed_operation_types: Iterable[OperationType] | None = None,
                      operation_extensions: dict[str, Any] | None = None) -> ExecutionResult:
        if query is not None and len(query) > self.limits.max_query_length:
            return ExecutionResult(data=None, errors=[GraphQLError(
                f"The query text holds {len(query)} characters; the limit is {self.limits.max_query_length}. Send "
                "data in variables.", extensions={"code": TOO_COMPLEX})])
        # A text seen before goes the prepared way; anything else, and whatever Strawberry answers with an error
        # of its own (an operation the method may not run, an unknown operation name), goes the full way.
        document = self.documents.get(query) if query and not operation_extensions else None
        operation = chosen_operation(document, operation_name) if document is not None else None
        allowed = (_QUERIES_AND_MUTATIONS if allowed_operation_types is None
                   else _QUERIES_AND_MUTATIONS.intersection(allowed_operation_types))
        if document is None or operation is None or operation_type(operation) not in allowed:
            return await super().execute(query, variable_values, context_value, root_value, operation_name,
                                         allowed_operation_types, operation_extensions)
        return await self._execute_validated(document, variable_values, context_value, root_value, operation_name)

    async def _execute_validated(self, document: DocumentNode, variables: dict[str, Any] | None, context: Any,
                                 root_value: Any, operation_name: str | None) -> ExecutionResult:
        """What the extensions would do around the execution of a document that validated: the limits and the
        preflight refuse before anything runs; execution errors are logged, then given their codes."""
        error = (limit_error(document, operation_name, variables, self.limits)
                 or await preflight_error(self, document, operation_name, variables, context))
        if error is not None:
            return ExecutionResult(data=None, errors=[error])
        result = await await_maybe(execute(  # as Schema._execute_operation calls it
            self._schema, document, root_value=root_value, variable_values=variables, operation_name=operation_name,
            context_value=context, is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=self.execution_context_class))
        if not result.errors:
            return ExecutionResult(data=result.data, errors=None)
        # As Schema._execute_operation: suggestions dropped, logged as they are, then coded.
        errors, request_id = list(result.errors), request_id_of(context)
        if self.config.disable_field_suggestions:
            for error in errors:
                drop_suggestion(error)
        log_internal(errors, request_id)
        code_execution_errors(errors, request_id)
        return ExecutionResult(data=result.data, errors=errors)


def build_schema(*, introspection: bool = True, field_suggestions: bool = True,
                 limits: QueryLimits | None = None) -> CreditsSchema:
    limits = limits or QueryLimits()
    documents = ValidatedDocuments()
    # Order matters: ErrorCodes swaps in its validation rule before the validation cache validates (unless
    # RefuseOversized refused the document), and EnforceLimits, then Preflight, run on a document that validated;
    # RememberValidated sees the outcome of all. A text's repeat requests skip these hooks (api/prepared.py says
    # why): CreditsSchema._execute_validated calls the limits' and the preflight's checks itself, so a new
    # extension's checks must be called there too.
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        ErrorCodes, lambda: BoundedParserCache(maxsize=MAX_DOCUMENTS), lambda: RefuseOversized(limits),
        lambda: BoundedValidationCache(maxsize=MAX_DOCUMENTS),
        lambda: EnforceLimits(limits), Preflight]
    if not introspection:
        extensions.append(DisableIntrospection)
    extensions.append(lambda: RememberValidated(documents))
    return CreditsSchema(query=Query, mutation=Mutation, types=[AccountNode, TransactionNode, RechargeAttemptNode],
                         extensions=extensions, limits=limits, documents=documents, config=StrawberryConfig(
                             scalar_map=SCALARS, disable_field_suggestions=not field_suggestions))


schema = build_schema()
