"""Checks of the whole operation before any of it runs, where running part of it would leave the caller
guessing what happened.

- A document of several operations needs `operationName` (Strawberry would run the first one).
- A mutation whose root fields include one the key's role may not call runs none of them: otherwise the
  fields before it would move money while the answer, nulled by the FORBIDDEN error, shows nothing.
  (A mutation of one forbidden field is refused by its field, which records the attempt in the audit trail.)
- A mutation's page arguments (`first`, `after`) are checked before it moves money, not when its payload is
  read afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension
from strawberry.permission import PermissionExtension
from strawberry.schema import Schema

from credits_graphql.api.connections import after_id, page_size
from credits_graphql.api.context import Context
from credits_graphql.api.errors import FORBIDDEN
from credits_graphql.api.permissions import Allowed

BAD_REQUEST = "BAD_REQUEST"
_PERMISSIONS: dict[int, dict[str, Allowed]] = {}


class Preflight(SchemaExtension):
    """Runs after validation and the query limits, before execution."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if not context.pre_execution_errors and document is not None:
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
            # Strawberry's ExecutionContext.operation_name falls back to the first operation's name.
            named = getattr(context, "_provided_operation_name", None)
            if len(operations) > 1 and named is None:
                context.pre_execution_errors = [GraphQLError(
                    "The document holds several operations: send operationName to choose one.",
                    extensions={"code": BAD_REQUEST})]
            else:
                chosen = [o for o in operations if named is None or (o.name and o.name.value == named)]
                if chosen and chosen[0].operation is OperationType.MUTATION and isinstance(context.context, Context):
                    try:
                        _check_roles(context.schema, chosen[0], fragments, context.context)
                        _check_page_arguments(chosen[0], fragments, context.variables or {})
                    except GraphQLError as error:
                        context.pre_execution_errors = [error]
        yield


def _fields(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode], *,
            nested: bool, seen: set[str] | None = None) -> Iterator[FieldNode]:
    """The fields selected, through inline fragments and each named fragment once (linear in the document);
    with `nested`, at every depth."""
    seen = set() if seen is None else seen
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            yield selection
            if nested:
                yield from _fields(selection.selection_set, fragments, nested=True, seen=seen)
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, nested=nested, seen=seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            if (fragment := fragments.get(selection.name.value)) is not None:
                yield from _fields(fragment.selection_set, fragments, nested=nested, seen=seen)


def _check_roles(schema: Schema, operation: OperationDefinitionNode,
                 fragments: Mapping[str, FragmentDefinitionNode], context: Context) -> None:
    fields = [field for field in _fields(operation.selection_set, fragments, nested=False)
              if field.name.value != "__typename"]
    if len(fields) < 2:
        return
    permissions = _mutation_permissions(schema)
    for field in fields:
        permission = permissions.get(field.name.value)
        if permission is not None and not context.principal.may(permission.action):
            key = field.alias.value if field.alias else field.name.value
            raise GraphQLError(f"{permission.message} Nothing in this request was run.", nodes=[field], path=[key],
                               extensions={"code": FORBIDDEN})


def _mutation_permissions(schema: Schema) -> dict[str, Allowed]:
    """The Allowed check of each mutation field, by GraphQL field name."""
    if id(schema) not in _PERMISSIONS:
        definition = schema.get_type_by_name("Mutation")
        found: dict[str, Allowed] = {}
        for field in getattr(definition, "fields", ()):
            for extension in field.extensions:
                if isinstance(extension, PermissionExtension):
                    for permission in extension.permissions:
                        if isinstance(permission, Allowed):
                            found[schema.config.name_converter.get_graphql_name(field)] = permission
        _PERMISSIONS[id(schema)] = found
    return _PERMISSIONS[id(schema)]


def _check_page_arguments(operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode],
                          variables: Mapping[str, Any]) -> None:
    """Raises the BAD_USER_INPUT the connection's resolver would raise for a bad `first` or `after`."""
    for field in _fields(operation.selection_set, fragments, nested=True):
        for argument in field.arguments or ():
            value = argument.value
            given = (variables.get(value.name.value) if isinstance(value, VariableNode)
                     else value.value if isinstance(value, IntValueNode | StringValueNode) else None)
            if argument.name.value == "first" and given is not None:
                page_size(int(given))
            elif argument.name.value == "after" and isinstance(given, str):
                after_id(given)
