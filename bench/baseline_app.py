"""The ceiling to compare against: bare Strawberry on Starlette with the parser and validation caches,
answering the same balance query from memory. Run: python bench/baseline_app.py PORT [PROCESSES]

With PROCESSES > 1, uvicorn's own worker processes share the port: the scale-out that bare Strawberry itself gets on
this machine, the ceiling for `serve --workers`, whose processes share the cores with the database and the load
generator too."""

from __future__ import annotations

import sys
from pathlib import Path

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache


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

if __name__ == "__main__":
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    uvicorn.run("baseline_app:app" if processes > 1 else app, app_dir=str(Path(__file__).parent), host="127.0.0.1",
                port=int(sys.argv[1]), workers=processes, log_level="info", access_log=False)
