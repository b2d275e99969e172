"""The composition root: the one place that picks concrete adapters for the use cases."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import PaymentGateway
from credits_graphql.settings import Settings
from credits_graphql.store.engine import create_engine, create_session_factory
from credits_graphql.store.unit_of_work import SqlUnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    deps: Deps

    async def close(self) -> None:
        await self.engine.dispose()


def bootstrap(settings: Settings, gateway: PaymentGateway | None = None,
              engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or create_engine(settings.database_url)
    deps = Deps(
        uow=SqlUnitOfWorkFactory(create_session_factory(engine)),
        gateway=gateway or SandboxGateway(),
        policy=settings.policy,
    )
    return Runtime(settings=settings, engine=engine, deps=deps)


def with_deps(runtime: Runtime, deps: Deps) -> Runtime:
    return replace(runtime, deps=deps)
