"""The ceiling to compare against: bare Strawberry on Starlette with the parser and validation caches,
answering the same balance query from memory. Run: python bench/baseline_app.py PORT [PROCESSES]

With PROCESSES > 1, uvicorn's worker processes serve the port as `serve --workers` does, each on a socket of its own
(credits_graphql/server_processes.py; on uvicorn's one shared socket, one process could take all 32 connections:
a run of 2026-12-01 got 5,369 req/s from two processes against 5,309 from one, 0.86 cores idle): the scale-out
that bare Strawberry itself gets on this machine, the ceiling for `serve --workers`, whose processes share the
cores with the database and the load generator too."""

from __future__ import annotations

import sys

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache
from uvicorn.supervisors import Multiprocess

from credits_graphql.server_processes import own_sockets, reuse_port_socket


@strawberry.type
class Money:
    amount: str
    currency_code: str


@strawberry.type
class Balance:
    available: Money


BALANCES = {"1": Balance(available=Money(amount="100.00", currency_code="SEK"))}


@strawberry.type
class Query:
    @strawberry.field
    def balance(self, account_id: strawberry.ID) -> Balance | None:
        return BALANCES.get(str(account_id))


schema = strawberry.Schema(query=Query, extensions=[lambda: ParserCache(maxsize=100),
                                                   lambda: ValidationCache(maxsize=100)])
app = Starlette(routes=[Route("/graphql", GraphQL(schema, graphql_ide=None))])


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if processes == 1:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", access_log=False)
        return
    # Its server processes import this module by name: they start with this script's sys.path, its directory first.
    config = uvicorn.Config("baseline_app:app", host="127.0.0.1", port=port, workers=processes, log_level="info",
                            access_log=False)
    with reuse_port_socket("127.0.0.1", port), own_sockets():
        Multiprocess(config, sockets=[]).run()


if __name__ == "__main__":
    main()
