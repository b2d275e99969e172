"""GraphQL over HTTP media types: request bodies of JSON in UTF-8, and as response media types
`application/graphql-response+json` when the client asks for it (with 400 and no `data` for requests that never
reached execution), else `application/json`."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from strawberry.http.parse_content_type import parse_content_type

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"


def load_json(body: str | bytes) -> object:
    """A JSON request body, read as UTF-8 only (RFC 8259, 8.1): Python's json would also take UTF-16 and UTF-32.
    Raises UnicodeDecodeError or another ValueError."""
    return json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)


def _quality(accept: str, media_type: str) -> float:
    best = 0.0
    for part in accept.split(","):
        kind, *params = (piece.strip() for piece in part.split(";"))
        if kind.lower() != media_type:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = max(best, quality)
    return best


@lru_cache(maxsize=64)
def media_type_of(content_type: str) -> str:
    """The media type of a Content-Type header (clients send the same few; parsing one costs ~10 us)."""
    return parse_content_type(content_type)[0]


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header names JSON, the only media type operations are sent as (media types are
    case-insensitive, RFC 9110, 8.3.1)."""
    return media_type_of((content_type or "").lower()) == JSON


@lru_cache(maxsize=64)
def prefers_graphql_response_json(accept: str | None) -> bool:
    """Legacy clients that send no Accept header, `*/*` or only JSON keep `application/json`."""
    if not accept:
        return False
    return _quality(accept, GRAPHQL_RESPONSE_JSON) > 0 and (
        _quality(accept, GRAPHQL_RESPONSE_JSON) >= _quality(accept, JSON))


def is_request_error(response_data: dict[str, Any]) -> bool:
    """The request failed before execution (parse, validation, variables, limits): no `data` at all."""
    errors = response_data.get("errors") or []
    return response_data.get("data") is None and bool(errors) and all("path" not in e for e in errors)
