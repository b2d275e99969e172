"""ASGI middleware in front of everything: a request id on every response (and in the logs of any
unexpected error), and a request body limit enforced while reading, so an oversized body is refused
with 413 without being buffered; a body that takes too long to arrive is refused too (408), so that a client
sending it slowly holds no request open for long."""

from __future__ import annotations

import asyncio
import re
import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BodyTooLarge(Exception):
    """Raised from `receive` once the body passes the limit; the GraphQL endpoint answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds the limit of {limit} bytes.")


class BodyTimedOut(Exception):
    """Raised from `receive` when the body has not all arrived in time; the GraphQL endpoint answers 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body did not arrive within {seconds:g} seconds.")


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"errors": [{"message": str(BodyTooLarge(limit)),
                                     "extensions": {"code": "PAYLOAD_TOO_LARGE"}}]}, status_code=413)


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _too_large(self.max_body_bytes)(scope, receive, send_with_id)
            return

        received, body_done = 0, False
        deadline = asyncio.get_running_loop().time() + self.body_timeout  # counted from the headers' arrival

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # what comes after the body (a disconnect) comes whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimedOut(self.body_timeout) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send_with_id)
