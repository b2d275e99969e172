"""Schema assembly."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, ParserCache, SchemaExtension, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from credits_graphql.api.errors import ErrorCodes, log_internal, request_id_of
from credits_graphql.api.limits import EnforceLimits, QueryLimits
from credits_graphql.api.mutations import Mutation
from credits_graphql.api.preflight import Preflight
from credits_graphql.api.queries import Query
from credits_graphql.api.scalars import SCALARS
from credits_graphql.api.types import AccountNode, RechargeAttemptNode, TransactionNode


class CreditsSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Request errors are the client's: they are answered, not logged.
        log_internal(errors, request_id_of(execution_context.context if execution_context else None))


def build_schema(*, introspection: bool = True, field_suggestions: bool = True,
                 limits: QueryLimits | None = None) -> CreditsSchema:
    # Order matters: ErrorCodes swaps in its validation rule before ValidationCache validates, and
    # EnforceLimits, then Preflight, run on a document that validated.
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        ErrorCodes, lambda: ParserCache(maxsize=1024), lambda: ValidationCache(maxsize=1024),
        lambda: EnforceLimits(limits or QueryLimits()), Preflight]
    if not introspection:
        extensions.append(DisableIntrospection)
    return CreditsSchema(query=Query, mutation=Mutation, types=[AccountNode, TransactionNode, RechargeAttemptNode],
                         extensions=extensions, config=StrawberryConfig(
                             scalar_map=SCALARS, disable_field_suggestions=not field_suggestions))


schema = build_schema()
