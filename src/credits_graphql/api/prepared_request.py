"""A request that needs none of Strawberry's request handling: a small JSON POST of a query text validated before
(api/prepared.py). The endpoint (api/http.py) decodes its body once, reads the API key together with the account
the query reads first, and runs it through the same execution and error mapping as Strawberry's way would, without
the rest of Strawberry's request handling; anything else goes Strawberry's full way, which answers every malformed
request with its own error.

The account read first: when the first root field of a query reads an account by id (`balance`, `account`,
`transactions`, `node`), the key and that account are read in one statement (service/access.py's
`authenticate_reading`), so a balance read makes one read of the database instead of two. A revoked key is still
refused at once: the key is read with the account. A malformed id reads the key alone, and the field reports the
id as it always does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import FieldNode, OperationDefinitionNode, OperationType, StringValueNode, VariableNode
from strawberry.http import GraphQLRequestData

from credits_graphql.api.ids import account_row_id
from credits_graphql.api.media import load_json
from credits_graphql.api.prepared import ValidatedDocuments, chosen_operation

BODY_LIMIT = 4096
"""Reads and usage reports are a few hundred bytes. A larger body (a usage batch) goes the full way, and its key is
checked before the body is read (api/http.py) as well as after: a caller with a made-up key cannot have large
bodies held or decoded."""

# The root query fields that read one account by its id, and the argument that holds it.
_ACCOUNT_ID_ARGUMENTS = {"account": "id", "node": "id", "balance": "accountId", "transactions": "accountId"}


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    data: GraphQLRequestData
    operation: OperationDefinitionNode
    """The operation the request runs, of a document that validated."""

    def account_read_first(self) -> int | None:
        """The id of the account the query reads in its first root field, or None."""
        if self.operation.operation is not OperationType.QUERY:
            return None
        first = self.operation.selection_set.selections[0]
        if not isinstance(first, FieldNode) or (argument := _ACCOUNT_ID_ARGUMENTS.get(first.name.value)) is None:
            return None
        return _account_id(first, argument, self.data.variables or {})


def prepared_request(documents: ValidatedDocuments, body: bytes) -> PreparedRequest | None:
    """The request in a JSON body, when Strawberry's parsing would take it as it is and its query text validated
    before; None for anything else (the full way answers it)."""
    try:
        data = load_json(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(query := data.get("query"), str):
        return None
    variables, name = data.get("variables"), data.get("operationName")
    if (not isinstance(variables, dict | None) or not isinstance(name, str | None)
            or data.get("extensions") is not None):
        return None
    document = documents.get(query)
    operation = chosen_operation(document, name) if document is not None else None
    if operation is None:
        return None
    return PreparedRequest(GraphQLRequestData(query=query, variables=variables, operation_name=name,
                                              extensions=None, protocol="http"), operation)


def _account_id(field: FieldNode, argument: str, variables: Mapping[str, Any]) -> int | None:
    node = next((a.value for a in field.arguments or () if a.name.value == argument), None)
    return account_row_id(variables.get(node.name.value) if isinstance(node, VariableNode)
                          else node.value if isinstance(node, StringValueNode) else None)
