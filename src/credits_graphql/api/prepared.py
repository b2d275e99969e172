"""Query texts whose document validated: their next requests skip Strawberry's extension machinery.

For every request Strawberry builds each schema extension, an execution context, and a context manager per
extension and hook, then parses (ParserCache), validates (ValidationCache) and runs our checks: about 30 % of
a balance read's CPU and 15 % of a usage report's, measured in process. Whether a document validates depends on the
document and the schema only, so a query text whose document got through parsing, validation, the query limits
and the preflight once is remembered here, per schema. CreditsSchema.execute runs such a text's next requests
with the checks that depend on the request (the limits' variables, the preflight's roles and ids) and the error
codes as plain calls around graphql-core's execution: the same functions the extensions call."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import DocumentNode, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from credits_graphql.api.limits import MAX_KEPT_QUERY_LENGTH

MAX_DOCUMENTS = 1024  # as the parse and validation caches' (api/document_caches.py)


class ValidatedDocuments:
    """Documents that validated on one schema, by query text; beyond `maxsize`, the oldest are forgotten."""

    def __init__(self, maxsize: int = MAX_DOCUMENTS, max_query_length: int = MAX_KEPT_QUERY_LENGTH) -> None:
        self._maxsize = maxsize
        self._max_query_length = max_query_length
        self._documents: dict[str, DocumentNode] = {}

    def get(self, query: str) -> DocumentNode | None:
        return self._documents.get(query)

    def remember(self, query: str, document: DocumentNode) -> None:
        if self._maxsize <= 0 or len(query) > self._max_query_length or query in self._documents:
            return
        if len(self._documents) >= self._maxsize:
            self._documents.pop(next(iter(self._documents)))
        self._documents[query] = document

    def __len__(self) -> int:
        return len(self._documents)


class RememberValidated(SchemaExtension):
    """The last extension: its validation hook runs after the others' (validation, limits, preflight), so a
    document without errors there has validated."""

    def __init__(self, documents: ValidatedDocuments) -> None:
        super().__init__()
        self.documents = documents

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and context.graphql_document is not None and not context.pre_execution_errors:
            self.documents.remember(context.query, context.graphql_document)
        yield


def chosen_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation a request runs: the one named, or the only one; None where the request must go the full
    way to get its error (several operations without a name, an unknown name)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def operation_type(operation: OperationDefinitionNode) -> OperationType:
    return OperationType(operation.operation.value)
