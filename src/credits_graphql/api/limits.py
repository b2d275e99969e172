"""Query limits, checked after validation and before anything runs: depth, aliases, cost (the total
items a query may ask for, nested connections multiplying), pages (the lists it may read, likewise), and the
strings a request carries. Before validation,
the size of the document (selections, and what validation compares pair by pair).
Introspection fields count like any other. The parser's token limit counts comments too (one per
line), and the request body limit bounds everything else."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    value_from_ast_untyped,
    visit,
)
from graphql.language import Visitor
from strawberry.extensions import SchemaExtension

from credits_graphql.api.connections import DEFAULT_PAGE_SIZE, LIST_FIELDS, MAX_PAGE_SIZE
from credits_graphql.api.errors import BAD_USER_INPUT, TOO_COMPLEX

V = TypeVar("V")
TOO_COSTLY = "QUERY_COST_EXCEEDED"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_depth: int = 16  # GraphiQL's own introspection query nests 14 deep
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 5000
    max_string_length: int = 10_000
    max_query_length: int = 65_536
    """Characters of a query text, refused before it is parsed: a 1 MB comment, which no token limit counts, took
    0.33 s to parse. Clients' documents are far shorter (an introspection query: about 1,600); data goes in
    variables."""
    max_list_length: int = 10_000
    """Items of any one list in variables, refused before graphql-core coerces each: 100,000 `kinds` took 0.5 s. Ten
    times the longest list an operation takes (a recordUsageBatch's items)."""
    max_selections: int = 500  # GraphiQL's introspection query makes 80
    max_pages: int = 250
    """A page costs what about 55 of its items do (measured: 330 us against 6 us), so a query that asks for
    few items in each of thousands of nested pages (30 aliases of `transactions(first: 1)` on 100 accounts:
    1.5-2.4 s) is refused on its pages. 100 accounts with two nested lists each read 201."""


MAX_SAME_NAME = 10
"""Fields of one response name in one selection set (inline fragments' included): `id` in each of a node's five
types, say. Validation compares each such pair, and their selections, with each other."""
MAX_SAME_LEAF = 50
"""The same, for a field with no arguments and no selections, such as the `__typename` and `id` a client adds to
each of a page's colocated fragments: comparing those is cheap (100 `id` in one selection validate in 13 ms; 10
fragments of one page named `__typename` 11 times and were refused)."""
MAX_SPREADS = 20
"""Fragments spread in one selection set: validation compares each pair of them."""


class LimitExceeded(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Measure:
    """Of a selection set, per item of the list that holds it: how deep it nests, how many aliases it
    uses, how many list items it asks for and how many pages (lists) it reads. Costs and pages scale linearly
    with the enclosing page sizes."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0
    pages: int = 0

    def __add__(self, other: _Measure) -> _Measure:
        return _Measure(max(self.depth, other.depth), self.aliases + other.aliases, self.cost + other.cost,
                        self.pages + other.pages)


def check(document_operations: list[OperationDefinitionNode], fragments: Mapping[str, FragmentDefinitionNode],
          variables: Mapping[str, Any], limits: QueryLimits) -> None:
    """Raises LimitExceeded for the first limit the operations break."""
    for operation in document_operations:
        measure = _Measurer(fragments, variables_as_run(operation, variables)).selections(operation.selection_set)
        if measure.depth > limits.max_depth:
            raise LimitExceeded(TOO_COMPLEX, f"The query nests {measure.depth} levels deep; the limit is "
                                f"{limits.max_depth}.")
        if measure.aliases > limits.max_aliases:
            raise LimitExceeded(TOO_COMPLEX, f"The query uses {measure.aliases} aliases; the limit is "
                                f"{limits.max_aliases}.")
        if measure.cost > limits.max_cost:
            raise LimitExceeded(TOO_COSTLY, f"The query may return {measure.cost} items; the limit is "
                                f"{limits.max_cost}. Ask for smaller pages (first) or fewer nested lists.")
        if measure.pages > limits.max_pages:
            raise LimitExceeded(TOO_COSTLY, f"The query may read {measure.pages} lists; the limit is "
                                f"{limits.max_pages}. Ask for fewer nested lists, or page through them.")


def variables_as_run(operation: OperationDefinitionNode, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The variables the operation runs with: an omitted one takes the default the operation declares."""
    defaults = {definition.variable.name.value: value_from_ast_untyped(definition.default_value)
                for definition in operation.variable_definitions or ()
                if definition.default_value is not None and definition.variable.name.value not in variables}
    return {**defaults, **variables}


def check_size(document: DocumentNode, limits: QueryLimits) -> None:
    """Raises LimitExceeded for a document that validation would spend long on: validating costs about 70 us a
    field, and more where the rule that fields merge compares the fields of one response name, and the fragments of
    a selection set, pair by pair (600 `accounts { totalCount }` in one selection set took 1.7 s)."""
    selections = 0
    fragments = fragments_of(document)
    merged: dict[str, Counter[tuple[str, bool]]] = {}  # a fragment's fields by response name, its fragments' too

    def names_in(selection_set: SelectionSetNode, seen: frozenset[str]) -> Counter[tuple[str, bool]]:
        """The fields of a selection set by response name, as validation merges them (inline fragments and spread
        fragments too); checks the selection sets below it on the way."""
        nonlocal selections
        names: Counter[tuple[str, bool]] = Counter()  # (response name, whether a bare leaf)
        spread: set[str] = set()
        for selection in selection_set.selections:
            selections += 1
            if isinstance(selection, FieldNode):
                bare = not selection.arguments and selection.selection_set is None
                names[(selection.alias or selection.name).value, bare] += 1
                if selection.selection_set is not None:
                    names_in(selection.selection_set, seen)
            elif isinstance(selection, InlineFragmentNode):
                names += names_in(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                spread.add(selection.name.value)
        if len(spread) > MAX_SPREADS:
            raise LimitExceeded(TOO_COMPLEX, f"The query spreads {len(spread)} fragments in one selection; the "
                                f"limit is {MAX_SPREADS}.")
        for name in spread:
            if name not in merged and (fragment := fragments.get(name)) is not None:
                merged[name] = names_in(fragment.selection_set, seen | {name})  # a cycle is validation's to refuse
            names += merged.get(name, Counter())
        for (name, bare), count in names.items():
            if count > (limit := MAX_SAME_LEAF if bare else MAX_SAME_NAME):
                raise LimitExceeded(TOO_COMPLEX, f"The query selects `{name}` {count} times in one selection; the "
                                    f"limit is {limit}.")
        return names

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            names_in(definition.selection_set, frozenset())
    if selections > limits.max_selections:
        raise LimitExceeded(TOO_COMPLEX, f"The query makes {selections} selections; the limit is "
                            f"{limits.max_selections}.")


class _Measurer:
    """Measures each named fragment once, so that fragments spreading fragments cost linear time."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables
        self._measured: dict[str, _Measure] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._in_progress: set[str] = set()  # fragment cycles are a validation error; never loop on them

    def selections(self, selection_set: SelectionSetNode | None) -> _Measure:
        total = _Measure()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                total += self.field(selection)
            elif isinstance(selection, InlineFragmentNode):
                total += self.selections(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> _Measure:
        if name not in self._measured:
            fragment = self.fragments.get(name)
            if fragment is None or name in self._in_progress:
                return _Measure()
            self._in_progress.add(name)
            self._measured[name] = self.selections(fragment.selection_set)
            self._in_progress.discard(name)
        return self._measured[name]

    def field(self, field: FieldNode) -> _Measure:
        inner = self.selections(field.selection_set)
        aliases = inner.aliases + (field.alias is not None)
        page = self._page_size(field)
        if page is None:
            return _Measure(inner.depth + 1, aliases, inner.cost, inner.pages)
        items = max(page, 1)
        return _Measure(inner.depth + 1, aliases, items + items * inner.cost, 1 + items * inner.pages)

    def _page_size(self, field: FieldNode) -> int | None:
        """Fields that answer a connection are pages of items, whatever is selected of them (`totalCount` alone
        reads a page too); so are fields with a `first` argument, or with `edges` below them."""
        if field.selection_set is None:
            return None
        argument = next((arg for arg in field.arguments or () if arg.name.value == "first"), None)
        if argument is None:
            is_page = field.name.value in LIST_FIELDS or "edges" in self.field_names(field.selection_set)
            return DEFAULT_PAGE_SIZE if is_page else None
        value = argument.value
        given = self.variables.get(value.name.value) if isinstance(value, VariableNode) else None
        if isinstance(given, float) and given.is_integer():
            given = int(given)  # graphql-core takes 100.0 for an Int
        if isinstance(value, IntValueNode):
            size = int(value.value)
        elif isinstance(value, NullValueNode) or (isinstance(value, VariableNode) and given is None):
            size = DEFAULT_PAGE_SIZE  # null, or a variable left out with no default: the resolver's default
        elif isinstance(given, int) and not isinstance(given, bool):
            size = given
        else:
            size = MAX_PAGE_SIZE
        # A size out of range is the resolver's BAD_USER_INPUT, before it reads anything: it costs no items (measured
        # at 100, a nested `first: 101` answered QUERY_COST_EXCEEDED where the contract says BAD_USER_INPUT).
        return size if 0 <= size <= MAX_PAGE_SIZE else 0

    def field_names(self, selection_set: SelectionSetNode) -> frozenset[str]:
        """Names of the fields selected directly, through fragments too."""
        names: set[str] = set()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                names |= self.field_names(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                names |= self._fragment_names(selection.name.value)
        return frozenset(names)

    def _fragment_names(self, name: str) -> frozenset[str]:
        if name not in self._names:
            fragment = self.fragments.get(name)
            if fragment is None or name in self._in_progress:
                return frozenset()
            self._in_progress.add(name)
            self._names[name] = self.field_names(fragment.selection_set)
            self._in_progress.discard(name)
        return self._names[name]


def strings_in(value: Any, max_list_length: int) -> Iterator[str]:
    """The strings of variables (keys included); a list longer than `max_list_length` is refused."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item, max_list_length)
    elif isinstance(value, list | tuple):
        if len(value) > max_list_length:
            raise LimitExceeded(BAD_USER_INPUT, f"A list of {len(value)} items exceeds the limit of {max_list_length} "
                                "items in a list of variables.")
        for item in value:
            yield from strings_in(item, max_list_length)


class _LiteralStrings(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        self.found.append(node.value)


MAX_KEPT_QUERY_LENGTH = 32_768
"""A document of a longer query text is worked out anew on every request and never kept, by any cache: a kept
document keeps its text, and 1,024 request bodies of 1 MiB (a long comment, say) kept about 2 GB in a process.
Clients' documents are far shorter; a 1,000-item batch goes in variables."""


def is_kept(document: Any) -> bool:
    """Whether the caches keep this parsed document (its query text is not too long)."""
    location = getattr(document, "loc", None)
    return location is None or len(location.source.body) <= MAX_KEPT_QUERY_LENGTH


class PerDocument(Generic[V]):
    """What was worked out from a parsed document. The parse cache shares parsed documents between requests,
    so each is walked once; the oldest results go first beyond `maxsize`."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._found: dict[Hashable, tuple[Any, V]] = {}

    def get(self, document: Any, key: Hashable, work_out: Callable[[], V]) -> V:
        cached = self._found.get(key)
        if cached is not None and cached[0] is document:
            return cached[1]
        value = work_out()
        if not is_kept(document):
            return value
        if len(self._found) >= self._maxsize:
            self._found.pop(next(iter(self._found)))
        self._found[key] = (document, value)  # the document is kept, so its id is not reused meanwhile
        return value


def literal_strings(document: Any) -> list[str]:
    """The string literals of a document."""
    def walk() -> list[str]:
        literals = _LiteralStrings()
        visit(document, literals)
        return literals.found

    return _LITERALS.get(document, id(document), walk)


_LITERALS: PerDocument[list[str]] = PerDocument()
_VERDICTS: PerDocument[LimitExceeded | None] = PerDocument()
_SIZES: PerDocument[LimitExceeded | None] = PerDocument()


def check_strings(document: Any, variables: Mapping[str, Any] | None, limits: QueryLimits) -> None:
    for text in [*literal_strings(document), *strings_in(variables or {}, limits.max_list_length)]:
        if "\x00" in text:
            raise LimitExceeded(BAD_USER_INPUT, "Strings may not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, such as the JSON escape "\ud800"
            raise LimitExceeded(BAD_USER_INPUT, "Strings must be valid Unicode text.") from None
        if len(text) > limits.max_string_length:
            raise LimitExceeded(BAD_USER_INPUT, f"A string of {len(text)} characters exceeds the limit of "
                                f"{limits.max_string_length}.")


class RefuseOversized(SchemaExtension):
    """Before validation: a document too large to validate cheaply (check_size) is refused unvalidated."""

    def __init__(self, limits: QueryLimits) -> None:
        super().__init__()
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and (exceeded := _SIZES.get(document, (id(document), self.limits),
                                                             lambda: _size_verdict(document, self.limits))):
            context.pre_execution_errors = [GraphQLError(str(exceeded), extensions={"code": exceeded.code})]
        yield


def _size_verdict(document: DocumentNode, limits: QueryLimits) -> LimitExceeded | None:
    try:
        check_size(document, limits)
    except LimitExceeded as exceeded:
        return exceeded
    return None


class EnforceLimits(SchemaExtension):
    """Runs after validation (ValidationCache or Strawberry's own) and before execution."""

    def __init__(self, limits: QueryLimits) -> None:
        super().__init__()
        self.limits = limits

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.limits.max_tokens
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if (not context.pre_execution_errors and context.graphql_document is not None
                and (error := limit_error(context.graphql_document, context.operation_name, context.variables,
                                          self.limits)) is not None):
            context.pre_execution_errors = [error]
        yield


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def limit_error(document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any] | None,
                limits: QueryLimits) -> GraphQLError | None:
    """The error of the first limit a request breaks (`operation_name` chooses among the document's
    operations), or None."""
    given = variables or {}

    def verdict() -> LimitExceeded | None:
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
        try:
            check(operations, fragments_of(document), given, limits)
        except LimitExceeded as exceeded:
            return exceeded
        return None

    # The measure depends on the document and on number and null variables only (page sizes; a null one is not
    # one left out, which takes its declared default).
    key = (id(document), operation_name, limits,
           frozenset((name, value) for name, value in given.items() if value is None or type(value) in (int, float)))
    try:
        if (exceeded := _VERDICTS.get(document, key, verdict)) is not None:
            raise exceeded
        check_strings(document, variables, limits)
    except LimitExceeded as exceeded:
        return GraphQLError(str(exceeded), extensions={"code": exceeded.code})
    return None
