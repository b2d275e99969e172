"""The ceiling to compare against: bare Strawberry on Starlette with the parser and validation caches,
answering the same balance query from memory. Run: python bench/baseline_app.py PORT"""

from __future__ import annotations

import sys

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
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
