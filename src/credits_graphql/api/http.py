"""The GraphQL HTTP endpoint: API key authentication, JSON error bodies, 405 for GET mutations, and a short way for
the requests that need none of Strawberry's request handling (api/prepared_request.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException, StarletteRequestAdapter
from graphql import GraphQLError, OperationDefinitionNode, parse
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.types import HTTPMethod
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from credits_graphql.api import rate_limit
from credits_graphql.api.context import Context
from credits_graphql.api.errors import (
    BAD_REQUEST,
    INTERNAL,
    INTERNAL_MESSAGE,
    UNAUTHENTICATED,
    code_for_message,
    only_unavailable,
)
from credits_graphql.api.media import (
    GRAPHQL_RESPONSE_JSON,
    JSON,
    is_json,
    is_request_error,
    load_json,
    prefers_graphql_response_json,
)
from credits_graphql.api.preflight import several_operations
from credits_graphql.api.prepared_request import BODY_LIMIT, PreparedRequest, prepared_request
from credits_graphql.api.request_guard import BodyTimedOut, BodyTooLarge
from credits_graphql.api.schema import CreditsSchema
from credits_graphql.domain.access import Principal
from credits_graphql.domain.ledger import Account
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from credits_graphql.service.key_reads import KeyReads
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.usage_combiner import UsageCombiner

_STATUS_CODES = {400: BAD_REQUEST, 401: UNAUTHENTICATED, 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                 408: "REQUEST_TIMEOUT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
                 429: rate_limit.RATE_LIMITED}


_METHODS = frozenset({"GET", "HEAD", "POST"})


class HTTPError(HTTPException):
    def __init__(self, status_code: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, reason)
        self.headers = headers or {}


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    code = _STATUS_CODES.get(status_code, BAD_REQUEST)
    # A message may repeat what the client sent (an unknown operation's name), which need not be valid
    # Unicode: a lone surrogate cannot be encoded as UTF-8.
    text = message.encode("utf-8", "replace").decode("utf-8")
    return JSONResponse({"errors": [{"message": text, "extensions": {"code": code}}]},
                        status_code=status_code, headers=headers)


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _RequestAdapter(StarletteRequestAdapter):
    @property
    def content_type(self) -> str | None:
        # Media types are case-insensitive (RFC 9110, 8.3.1); Strawberry compares them as given.
        content_type = super().content_type
        return content_type.lower() if content_type else content_type


class GraphQLEndpoint(GraphQL[Context | None, None]):
    request_adapter_class = _RequestAdapter

    def __init__(self, schema: CreditsSchema, deps: Deps, *, graphiql: bool, usage_transactions: int = 0) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None, allow_queries_via_get=True)
        self.deps = deps
        self.usage = UsageCombiner(deps, max_transactions=usage_transactions)
        self.key_reads = KeyReads(deps)
        self.documents = schema.documents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await error_response(404, "Not Found")(scope, receive, send)
            return
        request = Request(scope, receive)
        reads = RequestScope(self.deps.uow)
        request.state.deps = replace(self.deps, uow=reads)
        try:
            response = await self._run(request)
        except ClientDisconnect:
            return  # the client left before its request was read: there is no one to answer
        except HTTPException as error:
            response = error_response(error.status_code, error.reason, getattr(error, "headers", None))
        except BodyTooLarge as error:
            response = error_response(413, str(error))
        except BodyTimedOut as error:  # the rest of the body may still be on its way: the connection goes
            response = error_response(408, str(error), {"Connection": "close"})
        finally:
            await reads.close()
        await response(scope, receive, send)

    async def _run(self, request: Request) -> Response:
        """A prepared request (api/prepared_request.py) goes straight to its execution; anything else the full
        way, Strawberry's."""
        if request.method not in _METHODS:  # whoever asks: the method is wrong before the key is looked at
            raise HTTPError(405, f"{request.method} is not served here: GET for queries, POST for any operation.",
                            {"Allow": "GET, POST"})
        token = bearer_token(request)
        if request.method == "POST":
            length = request.headers.get("content-length", "")
            if not (length.isdigit() and int(length) <= BODY_LIMIT):
                # A large body (a usage batch), or one of no declared length, is read only for a live key within
                # its rate: a caller with a made-up key cannot have the server hold a megabyte for it.
                await self.authenticate(request, token, None)
                await request.state.deps.uow.close()  # no database connection held while the body arrives
            # The key is (looked at again) once the whole body is in, on every path: a key revoked or expired while
            # the body arrived is refused.
            await request.body()
        prepared = await self._prepared(request) if token else None
        if prepared is None:
            return await self.run(request)
        principal, account = await self.authenticate(request, token, prepared.account_read_first())
        result = await self._execute("POST", prepared.data, self._context(request, principal, account))
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        media_type = GRAPHQL_RESPONSE_JSON if prefers_graphql_response_json(request.headers.get("accept")) else JSON
        return self._json_response(response_data, media_type)

    async def _prepared(self, request: Request) -> PreparedRequest | None:
        """A small JSON POST, answered as one JSON document (no streaming transport asked for), whose body holds
        a prepared request."""
        headers = request.headers
        length = headers.get("content-length", "")
        if (request.method != "POST" or not length.isdigit() or int(length) > BODY_LIMIT
                or not is_json(headers.get("content-type"))
                or self._get_stream_transport_from_headers({"accept": headers.get("accept", "")}) is not None):
            return None
        return prepared_request(self.documents, await request.body())

    async def get_context(self, request: Request, response: Response) -> Context | None:  # type: ignore[override]
        if self.graphql_ide and self.should_render_graphql_ide(self.request_adapter_class(request)):
            return None  # the GraphiQL page itself needs no key; the operations it sends do
        principal, _ = await self.authenticate(request, bearer_token(request), None)
        return self._context(request, principal, None)

    async def authenticate(self, request: Request, token: str | None,
                           account_id: int | None) -> tuple[Principal, Account | None]:
        """The caller, and the account `account_id` of its organization when there is one, read with its key."""
        principal, account = (await access.authenticate_reading(request.state.deps, token, account_id, self.key_reads)
                              if token else (None, None))
        if principal is None:
            scheme = request.headers.get("authorization", "").partition(" ")[0]
            reason = ("Unknown, revoked or expired API key." if token is not None
                      else "Missing API key." if scheme.lower() in ("", "bearer")
                      else "The Authorization header must use the Bearer scheme.")
            raise HTTPError(401, f"{reason} Send Authorization: Bearer <api key>.",
                            {"WWW-Authenticate": 'Bearer realm="credits"'})
        if not getattr(request.state, "rate_counted", False):  # a request counts once, if its key is read twice
            await rate_limit.enforce(request, principal)
            request.state.rate_counted = True
        return principal, account

    def _context(self, request: Request, principal: Principal, account: Account | None) -> Context:
        context = Context(deps=request.state.deps, principal=principal, usage=self.usage,
                          request_id=request.state.request_id)
        if account is not None:
            context.prime_accounts([account])
        return context

    def decode_json(self, data: str | bytes) -> object:
        return load_json(data)

    def parse_json(self, data: str | bytes) -> object:
        try:
            parsed = super().parse_json(data)
        except UnicodeDecodeError:
            raise HTTPError(400, "The request body must be UTF-8 encoded JSON.") from None
        except (ValueError, RecursionError):  # an integer of over 4300 digits; nesting deeper than Python's stack
            raise HTTPError(400, "The request body is JSON this server does not read: integers of at most 4300 "
                            "digits, nesting at most a few hundred levels deep.") from None
        if not isinstance(parsed, dict | list):  # lists are batches, which the base view refuses with a 400
            raise HTTPError(400, "The request body must be a JSON object with a `query`.")
        return parsed

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData | list[GraphQLRequestData]:
        # Only JSON: the content types a browser may send cross-site without a preflight (text/plain,
        # forms, multipart) never reach a resolver.
        if request.method == "POST" and not is_json(request.content_type):
            raise HTTPError(415, "Send the operation as application/json.", {"Accept-Post": JSON})
        return await super().parse_http_body(request)

    async def get_sub_response(self, request: Request) -> Response:  # type: ignore[override]
        sub_response = await super().get_sub_response(request)
        if prefers_graphql_response_json(request.headers.get("accept")):
            sub_response.media_type = GRAPHQL_RESPONSE_JSON
        return sub_response

    def create_response(self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
                        sub_response: Response) -> Response:
        response = self._json_response(response_data, sub_response.media_type or JSON)
        response.headers.raw.extend(sub_response.headers.raw)  # as Strawberry's (no resolver sets any)
        response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    def _json_response(self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
                       media_type: str) -> Response:
        """A request error answered as `application/graphql-response+json` is a 400 without `data`; the database lost
    in the middle of a request, a 503."""
        data: Any = response_data
        status_code, headers = 200, None
        if media_type == GRAPHQL_RESPONSE_JSON and isinstance(data, dict) and is_request_error(data):
            data = {key: value for key, value in data.items() if key != "data"}
            status_code = 400
        elif isinstance(data, dict) and only_unavailable(data):
            status_code, headers = 503, {"Retry-After": "1"}
        return Response(self.encode_json(data), status_code=status_code, headers=headers,
                         media_type=f"{media_type}; charset=utf-8")

    async def execute_single(self, request: Request, request_adapter: AsyncHTTPRequestAdapter,
                             sub_response: Response, context: Context | None, root_value: None,
                             request_data: GraphQLRequestData) -> ExecutionResult:
        return await self._execute(request_adapter.method, request_data, context)

    async def _execute(self, method: HTTPMethod, request_data: GraphQLRequestData,
                       context: Context | None) -> ExecutionResult:
        try:
            return await self.schema.execute(
                request_data.query, variable_values=request_data.variables, context_value=context,
                operation_name=request_data.operation_name, allowed_operation_types=OperationType.from_http(method),
                operation_extensions=request_data.extensions)
        except InvalidOperationTypeError as error:
            # Strawberry took the first operation of the document: without operationName, the mistake is not the
            # method, and the answer is Preflight's to a POST of that document, whichever operation comes first.
            if request_data.operation_name is None and _operation_count(request_data.query) > 1:
                return ExecutionResult(data=None, errors=[several_operations()])
            # GraphQL over HTTP: a mutation over GET is 405 Method Not Allowed, with the methods that work.
            raise HTTPError(405, error.as_http_error_reason(method), {"Allow": "POST"}) from error
        except Exception as error:  # missing query, unknown operation name, ...
            reason = getattr(error, "as_http_error_reason", None)
            if callable(reason):
                raise HTTPError(400, str(reason())) from error
            raise HTTPError(400, str(error) or "Bad request") from error

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [_with_code(error) for error in result.errors]
        return await super().process_result(request, result)


def _operation_count(query: str | None) -> int:
    """Of a document that parsed already."""
    return sum(isinstance(d, OperationDefinitionNode) for d in parse(query or "").definitions)


def _with_code(error: GraphQLError) -> GraphQLError:
    """The last safety net: no error leaves without a code, and none leaks internals."""
    if (error.extensions or {}).get("code"):
        return error
    if code := code_for_message(error.message):
        error.extensions = {"code": code}
        return error
    return GraphQLError(INTERNAL_MESSAGE, nodes=error.nodes, path=error.path, extensions={"code": INTERNAL})


