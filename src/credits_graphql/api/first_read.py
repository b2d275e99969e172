"""The account a query reads first, known before it runs, so that it is read with the API key in one statement
(service/access.py's `authenticate_reading`): a balance read, an account or its transactions, make one read of
the database instead of two. A revoked key is still refused at once: the key is read with the account.

Only for a query text validated before (api/prepared.py), sent as a small JSON POST; any other request, or one
whose argument is not a well-formed account id, reads the key alone, and the account when its field runs (which
reports a malformed id as it always does)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from graphql import FieldNode, OperationType, StringValueNode, VariableNode

from credits_graphql.api.ids import account_row_id
from credits_graphql.api.prepared import ValidatedDocuments, chosen_operation

BODY_LIMIT = 4096
"""A read's body is a few hundred bytes; larger ones (usage batches) are not decoded twice. A small mutation's
is (a few µs), and reads nothing first."""

# The root query fields that read one account by its id, and the argument that holds it.
_ACCOUNT_ID_ARGUMENTS = {"account": "id", "node": "id", "balance": "accountId", "transactions": "accountId"}


def account_read_first(documents: ValidatedDocuments, body: bytes) -> int | None:
    """The id of the account the request's query reads in its first root field, or None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(query := data.get("query"), str):
        return None
    name, variables = data.get("operationName"), data.get("variables")
    document = documents.get(query)
    operation = chosen_operation(document, name if isinstance(name, str) else None) if document else None
    if operation is None or operation.operation is not OperationType.QUERY:
        return None
    first = operation.selection_set.selections[0]
    if not isinstance(first, FieldNode) or (argument := _ACCOUNT_ID_ARGUMENTS.get(first.name.value)) is None:
        return None
    return _account_id(first, argument, variables if isinstance(variables, dict) else {})


def _account_id(field: FieldNode, argument: str, variables: Mapping[str, Any]) -> int | None:
    node = next((a.value for a in field.arguments or () if a.name.value == argument), None)
    return account_row_id(variables.get(node.name.value) if isinstance(node, VariableNode)
                          else node.value if isinstance(node, StringValueNode) else None)
