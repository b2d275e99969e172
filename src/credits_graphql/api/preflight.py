"""Checks of the whole operation before any of it runs, where running part of it would leave the caller
guessing what happened: the fields of a mutation run one after the other, and a GraphQL error in one of them
nulls the whole answer (their payloads are non-null), hiding what the fields before it did.

- A document of several operations needs `operationName` (Strawberry would run the first one).
- A mutation with a root field the key's role may not call runs none of its fields: FORBIDDEN, recorded in
  the audit trail. (A mutation of one forbidden field is refused by its field, which records it the same way.)
- A mutation's ids, page arguments (`first`, `after`) and batch sizes are checked before any of its fields runs:
  a malformed one is BAD_USER_INPUT, as its resolver would answer after the fields before it moved money."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLScalarType,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    Undefined,
    get_nullable_type,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension
from strawberry.permission import PermissionExtension
from strawberry.schema import Schema

from credits_graphql.api.audit import record, summarize
from credits_graphql.api.connections import page_size
from credits_graphql.api.context import Context
from credits_graphql.api.errors import BAD_REQUEST, FORBIDDEN
from credits_graphql.api.ids import account_row_id, another_lists_cursor, bad_input, cursor_list, decode_id_at
from credits_graphql.api.inputs import check_batch_size
from credits_graphql.api.limits import PerDocument, fragments_of, variables_as_run
from credits_graphql.api.permissions import Allowed
from credits_graphql.api.prepared import chosen_operation
from credits_graphql.service.unit_of_work import AuditOutcome

SEVERAL_OPERATIONS = "The document holds several operations: send operationName to choose one."
_PERMISSIONS: dict[int, dict[str, Allowed]] = {}
_PAGE_ARGUMENTS = frozenset({"first", "after"})
_ACCOUNT_LISTS = frozenset({"transactions", "rechargeAttempts"})
_CHECKED: PerDocument[bool] = PerDocument()


class Preflight(SchemaExtension):
    """Runs after validation and the query limits, before execution."""

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if not context.pre_execution_errors and document is not None:
            # Strawberry's ExecutionContext.operation_name falls back to the first operation's name.
            named = getattr(context, "_provided_operation_name", None)
            if (error := await preflight_error(context.schema, document, named, context.variables,
                                               context.context)) is not None:
                context.pre_execution_errors = [error]
        yield


def several_operations() -> GraphQLError:
    """A document of several operations sent without operationName: a request error, answered like the others."""
    return GraphQLError(SEVERAL_OPERATIONS, extensions={"code": BAD_REQUEST})


async def preflight_error(schema: Schema, document: DocumentNode, operation_name: str | None,
                          variables: Mapping[str, Any] | None, context: object) -> GraphQLError | None:
    """The error that refuses the whole operation before any of it runs, or None. `operation_name` as the
    client sent it."""
    operation = chosen_operation(document, operation_name)
    if operation is None:
        several = operation_name is None and sum(isinstance(d, OperationDefinitionNode)
                                                 for d in document.definitions) > 1
        return several_operations() if several else None
    if operation.operation is not OperationType.MUTATION or not isinstance(context, Context):
        return None
    if not _CHECKED.get(document, (id(document), id(operation)),
                        lambda: _has_checks(operation, fragments_of(document))):
        return None
    mutation = _Mutation(schema, operation, fragments_of(document), variables or {})
    try:
        await mutation.check_roles(context)
        await mutation.check_arguments(context)
    except GraphQLError as error:
        return error
    return None


class _Mutation:
    def __init__(self, schema: Schema, operation: OperationDefinitionNode,
                 fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments = fragments
        # Not coerced yet: a value of the wrong type is skipped here, and refused when the variables are coerced,
        # before anything runs.
        self.variables = variables_as_run(operation, variables)

    def root_fields(self) -> list[tuple[FieldNode, GraphQLField]]:
        mutation_type = self.schema._schema.mutation_type
        assert mutation_type is not None
        return [(node, mutation_type.fields[node.name.value])
                for node in _fields(self.operation.selection_set, self.fragments, nested=False,
                                    variables=self.variables)
                if node.name.value in mutation_type.fields]

    async def check_roles(self, context: Context) -> None:
        """Before the arguments: a key that may not call a field is told FORBIDDEN, whatever else is wrong."""
        fields = self.root_fields()
        permissions = _mutation_permissions(self.schema)
        refused = [(node, definition, permission) for node, definition in fields
                   if (permission := permissions.get(node.name.value)) is not None
                   and not context.principal.may(permission.action)]
        recorded: set[str] = set()
        for node, definition, _ in refused:
            if node.name.value not in recorded:  # one event per mutation, however many times the document names it
                recorded.add(node.name.value)
                await record(context, node.name.value, *summarize(self._input(node, definition)), AuditOutcome.ERROR,
                             [FORBIDDEN])
        if refused:
            node, _, permission = refused[0]
            key = node.alias.value if node.alias else node.name.value
            raise GraphQLError(f"{permission.message} Nothing in this request was run.", nodes=[node], path=[key],
                               extensions={"code": FORBIDDEN})

    async def check_arguments(self, context: Context) -> None:
        """Raises the BAD_USER_INPUT a resolver would raise for a malformed id, a batch's size, `first` or `after`
        (another account's cursor included), and records the root field it belongs to in the audit trail, as the
        field itself would have."""
        roots = self.root_fields()
        for root, definition in roots:
            given = self._argument(root, "input")
            try:
                # A lone field's resolver checks its ids and its batch before it does anything (and is audited).
                if len(roots) > 1:
                    for argument in root.arguments or ():
                        if (argument_definition := definition.args.get(argument.name.value)) is not None:
                            _check_ids(self._argument(root, argument.name.value), argument_definition.type,
                                       argument.name.value)
                    if (root.name.value == "recordUsageBatch" and isinstance(given, Mapping)
                            and given.get("items") is not None):
                        check_batch_size(given["items"])
                accounts = _accounts_named(given)
                for node in _fields(root.selection_set, self.fragments, nested=True, variables=self.variables):
                    self._check_page(node, accounts)
            except GraphQLError as error:
                code = str((error.extensions or {}).get("code"))
                await record(context, root.name.value, *summarize(self._input(root, definition)), AuditOutcome.ERROR,
                             [code])
                raise

    def _check_page(self, node: FieldNode, accounts: set[int]) -> None:
        """`accounts`: those the root field's input names, whose lists its payload may page."""
        first, after = self._argument(node, "first"), self._argument(node, "after")
        if isinstance(first, float) and first.is_integer():
            first = int(first)
        if isinstance(first, int) and not isinstance(first, bool):
            page_size(first)
        if isinstance(after, str):
            listed = cursor_list(after)
            # A payload's lists are its accounts' (as types.py names them): another's cursor would be refused
            # by the list's field, after the mutation ran.
            if node.name.value in _ACCOUNT_LISTS and listed not in {f"{node.name.value}.{a}" for a in accounts}:
                raise another_lists_cursor(after)

    def _input(self, node: FieldNode, definition: GraphQLField) -> Any:
        """The field's `input` as given, with only the fields its type declares: as the resolver gets it, and not
        what a caller added to fill the audit trail (the variables are not coerced yet)."""
        given, argument = self._argument(node, "input"), definition.args.get("input")
        input_type = get_nullable_type(argument.type) if argument is not None else None
        if not isinstance(given, Mapping) or not isinstance(input_type, GraphQLInputObjectType):
            return given
        return {name: value for name, value in given.items() if name in input_type.fields}

    def _argument(self, node: FieldNode, name: str) -> Any:
        """The argument's value as given (a literal, or a variable's value), or None."""
        argument = next((a for a in node.arguments or () if a.name.value == name), None)
        if argument is None:
            return None
        value = value_from_ast_untyped(argument.value, self.variables)
        return None if value is Undefined else value


def _accounts_named(given: Any) -> set[int]:
    """The row ids of the well-formed account ids in a mutation's input (its `accountId`, its items')."""
    if not isinstance(given, Mapping):
        return set()
    items = given.get("items")
    named = [given] + (items if isinstance(items, list) else [items])
    return {row_id for item in named if isinstance(item, Mapping)
            and (row_id := account_row_id(item.get("accountId"))) is not None}


def _check_ids(value: Any, type_: GraphQLInputType, where: str) -> None:
    """Every ID in an input value is one this service could have handed out (BAD_USER_INPUT naming `where` it is,
    such as input.items[3].accountId, otherwise)."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            _check_ids(item, nullable.of_type, f"{where}[{index}]")
    elif isinstance(nullable, GraphQLInputObjectType) and isinstance(value, Mapping):
        for name, field in nullable.fields.items():
            if name in value:
                _check_ids(value[name], field.type, f"{where}.{name}")
    elif isinstance(nullable, GraphQLScalarType) and nullable.name == "ID":
        if isinstance(value, int | float) and not isinstance(value, bool):
            # ID takes an integer too, as its digits: never an id this service hands out (nor a float, which ID
            # does not take at all: validation says so, if this does not)
            raise bad_input(f"A number is not a valid id, at {where}")
        if isinstance(value, str):
            decode_id_at(value, where)


def _fields(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode], *,
            nested: bool, variables: dict[str, Any] | None = None, seen: set[str] | None = None,
            ) -> Iterator[FieldNode]:
    """The fields selected, through inline fragments and each named fragment once (linear in the document);
    with `nested`, at every depth. With `variables`, those that @skip and @include leave out are left out."""
    seen = set() if seen is None else seen
    for selection in selection_set.selections if selection_set else ():
        if variables is not None and not _included(selection, variables):
            continue
        if isinstance(selection, FieldNode):
            yield selection
            if nested:
                yield from _fields(selection.selection_set, fragments, nested=True, variables=variables, seen=seen)
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, nested=nested, variables=variables, seen=seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            if (fragment := fragments.get(selection.name.value)) is not None:
                yield from _fields(fragment.selection_set, fragments, nested=nested, variables=variables, seen=seen)


def _included(selection: SelectionNode, variables: dict[str, Any]) -> bool:
    """As execution decides by @skip(if:) and @include(if:); a value not a boolean counts as given (it is refused
    when the variables are coerced, before anything runs)."""
    for directive in selection.directives or ():
        if directive.name.value not in ("skip", "include"):
            continue
        condition = next((a.value for a in directive.arguments or () if a.name.value == "if"), None)
        value = value_from_ast_untyped(condition, variables) if condition is not None else None
        if (directive.name.value == "skip" and value is True) or (directive.name.value == "include" and value is False):
            return False
    return True


def _has_checks(operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]) -> bool:
    """Whether a mutation has anything for the preflight to check: several root fields (roles, ids), or a page
    argument at any depth. A usage report of one field and no pages has not."""
    roots = list(_fields(operation.selection_set, fragments, nested=False))
    return len(roots) > 1 or any(argument.name.value in _PAGE_ARGUMENTS for root in roots
                                 for node in _fields(root.selection_set, fragments, nested=True)
                                 for argument in node.arguments or ())


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
