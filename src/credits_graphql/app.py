"""The Starlette application: GraphQL endpoint, health probes, and the in-process recharge worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credits_graphql.api import rate_limit
from credits_graphql.api.errors import INTERNAL, INTERNAL_MESSAGE, UNAVAILABLE
from credits_graphql.api.http import GraphQLEndpoint
from credits_graphql.api.limits import QueryLimits
from credits_graphql.api.request_guard import RequestGuard
from credits_graphql.api.schema import build_schema
from credits_graphql.bootstrap import Runtime, bootstrap
from credits_graphql.service import clock_check
from credits_graphql.service.transient import StoreUnavailable, TransientConflict
from credits_graphql.service.worker import RechargeWorker
from credits_graphql.settings import Settings, WorkerMode
from credits_graphql.store.health import DatabaseFile, takes_no_writes
from credits_graphql.store.migrate import current_revision, revision_problem, schema_problem

log = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 2.0
GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700 (2000 from 3.13)


def build_app(runtime: Runtime, *, run_worker: bool | None = None) -> Starlette:
    """`run_worker` defaults to the CREDITS_WORKER setting; tests pass False and drive the worker."""
    settings = runtime.settings
    if run_worker is None:
        run_worker = settings.worker is WorkerMode.INLINE
    worker = RechargeWorker(runtime.deps, lease=settings.recharge_lease) if run_worker else None
    deps = replace(runtime.deps, recharge_created=worker.wake) if worker else runtime.deps
    limits = QueryLimits(max_depth=settings.max_query_depth, max_aliases=settings.max_query_aliases,
                         max_tokens=settings.max_query_tokens, max_cost=settings.max_query_cost,
                         max_selections=settings.max_query_selections, max_pages=settings.max_query_pages)
    schema = build_schema(introspection=settings.introspection, field_suggestions=settings.field_suggestions,
                          limits=limits)
    endpoint = GraphQLEndpoint(schema, deps, graphiql=settings.graphiql,
                               usage_transactions=settings.usage_transactions)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    schema_seen_ready = False  # schemas are not migrated backwards: once seen ready, only reachability is checked
    database_file = DatabaseFile(runtime.engine)

    async def readyz(_: Request) -> JSONResponse:
        nonlocal schema_seen_ready
        state = problem = None
        if (moved := database_file.problem()) is not None:
            log.error("not ready: %s", moved)
            return JSONResponse({"status": "unavailable", "database": "file moved", "detail": moved}, status_code=503)
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS), runtime.engine.connect() as connection:
                if await takes_no_writes(connection):
                    state, problem = "read-only", "the database takes no writes (a standby, or read-only)"
                elif not schema_seen_ready:
                    try:
                        if (problem := revision_problem(await current_revision(connection))) is not None:
                            state = "not migrated"
                    except DBAPIError as error:  # the database answers, but not with its revision
                        log.warning("the schema's revision could not be read: %s", error.orig)
                        state, problem = "schema unreadable", "the schema's revision could not be read (see the log)"
        except Exception as error:
            log.warning("readiness check failed: %s", type(error).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        if state is not None:
            log.warning("not ready: %s", problem)
            return JSONResponse({"status": "unavailable", "database": state, "detail": problem}, status_code=503)
        schema_seen_ready = True
        return JSONResponse({"status": "ok", "database": "reachable"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if worker:  # it checks the clock itself
            task = asyncio.create_task(worker.run(), name="recharge-worker")
        else:
            await clock_check.check_quietly(deps)
            task = asyncio.create_task(clock_check.check_now_and_then(deps), name="clock-check")
        try:
            yield
        finally:
            if worker:
                worker.stop()
                await task
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.close()

    app = Starlette(
        exception_handlers={StoreUnavailable: _database_trouble, TransientConflict: _database_trouble},
        routes=[
            Route("/graphql", endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
        middleware=[*_cors(settings.cors_origins), Middleware(AnswerUnexpected),
                    Middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                               body_timeout=settings.body_timeout_seconds)],
    )
    rate_limit.install(app.state, runtime.rate_limiter)
    return app


def _cors(origins: tuple[str, ...]) -> list[Middleware]:
    """An SPA served from another origin may call the API: its preflight is answered before authentication, and
    every answer (401 and 429 too) lets it read the body. Keys travel in a header, never in cookies."""
    if not origins:
        return []
    return [Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                       allow_headers=CORS_REQUEST_HEADERS, expose_headers=["X-Request-ID", "Retry-After"],
                       max_age=600)]


CORS_REQUEST_HEADERS = [
    "Authorization", "Content-Type", "Accept", "X-Request-ID",
    # what GraphQL clients and tracing in SPAs add: a preflight naming one header not listed here is refused, and
    # every request of that SPA then fails as a network error
    "apollographql-client-name", "apollographql-client-version", "apollo-require-preflight",
    "traceparent", "tracestate", "baggage", "sentry-trace",
]


def tune_garbage_collector() -> None:
    """For a server process, once its application is built: moves what startup made (schema, tables,
    engine: ~100k objects) out of the collector's sight, and collects the young generation less often. Each
    request allocates thousands of short-lived objects, and collections kept walking the long-lived ones
    (10-25 % of a balance read's CPU under load on PostgreSQL, in bench/run.py's scenarios)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def app_from_env() -> Starlette:
    """The application of one `serve --workers N` process (uvicorn's factory, run in each process it starts):
    settings from the CREDITS_* environment, which the process inherits from the `serve` that read them."""
    from uvicorn.config import STARTUP_FAILURE

    try:
        settings = Settings.from_env()
        # `serve` checked too, but it may have changed since
        if problem := schema_problem(settings.database_url, wait_if_unreachable=True):
            log.error("could not start: %s", problem)
            sys.exit(STARTUP_FAILURE)
        app = build_app(bootstrap(settings))
    except Exception:
        # uvicorn restarts a process that dies of anything else, forever; this one stops them all.
        log.exception("could not build the application")
        sys.exit(STARTUP_FAILURE)
    tune_garbage_collector()
    return app


async def _database_trouble(request: Request, error: Exception) -> JSONResponse:
    """The database is down or kept conflicting: a 503 the client may retry (with its idempotency key)."""
    log.warning("request %s failed on the database: %s", _request_id(request), error)
    return JSONResponse({"errors": [{"message": "The service is temporarily unavailable; retry shortly.",
                                     "extensions": {"code": UNAVAILABLE}}]},
                        status_code=503, headers={"Retry-After": "1"})


class AnswerUnexpected:
    """What escaped every handler answers in JSON with a code, like any error, inside the CORS layer (a cross-origin
    SPA reads its requestId too; Starlette's own handler of last resort answers outside it). The error goes on up, so
    the server logs its traceback next; Starlette's last resort sees the answer sent and sends nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            if scope["type"] == "http" and not started:
                await (await _unexpected(Request(scope), error))(scope, receive, send)
            raise


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """The answer to an unexpected error (this line ties the traceback logged next to the request id the client
    was given)."""
    request_id = _request_id(request)
    log.error("unexpected error in request %s: %r", request_id, error)
    return JSONResponse({"errors": [{"message": INTERNAL_MESSAGE,
                                     "extensions": {"code": INTERNAL, "requestId": request_id}}]},
                        status_code=500, headers={"X-Request-ID": request_id} if request_id else None)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
