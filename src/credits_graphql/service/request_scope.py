"""One read unit of work per request: the reads of a request (its key check, unless it is read together with
other requests' keys (service/key_reads.py), then every field) share one connection instead of opening one each.
They are not one snapshot: each read sees the commits made before it, so a field read after a concurrent usage
report may show it where an earlier one did not (as under READ COMMITTED). Reads are serialised on it; a write
ends it first, so reads after a commit see that commit.

A staged audit event is appended first thing in each of the request's write transactions (but those a use case
opens `unaudited`), until one commits: the event and the change it records commit together (and on PostgreSQL the
insert is made before the use case takes its row locks, not while it holds them). A usage report that shares a
transaction with others (service/usage_combiner.py) has its event appended by that transaction instead."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from credits_graphql.service.unit_of_work import AuditEvent, UnitOfWork, UnitOfWorkFactory


class RequestScope:
    """A UnitOfWorkFactory for one request; `close()` it when the request is answered."""

    def __init__(self, base: UnitOfWorkFactory) -> None:
        self._base = base
        self._read: UnitOfWork | None = None
        self._read_context: AbstractAsyncContextManager[UnitOfWork] | None = None
        self._lock = asyncio.Lock()
        self._staged: AuditEvent | None = None
        self.audit_committed = False
        """The staged event was appended by a write transaction that committed."""

    def stage_audit_event(self, event: AuditEvent) -> None:
        self._staged, self.audit_committed = event, False

    def unstage_audit_event(self) -> None:
        self._staged = None

    @property
    def staged_audit_event(self) -> AuditEvent | None:
        """For a write made on the request's behalf in a transaction that is not the request's own
        (service/usage_combiner.py), which appends it: call `audit_event_committed()` once that has committed."""
        return self._staged

    def audit_event_committed(self) -> None:
        self._staged, self.audit_committed = None, True

    def __call__(self, *, write: bool = False) -> AbstractAsyncContextManager[UnitOfWork]:
        if write:
            return _AfterReads(self, self._base(write=True))
        return _SharedRead(self)

    def unaudited(self, *, write: bool = False) -> AbstractAsyncContextManager[UnitOfWork]:
        """As calling the scope, but a write transaction leaves the staged audit event to a later one."""
        if write:
            return _AfterReads(self, self._base(write=True), audited=False)
        return _SharedRead(self)

    async def close(self) -> None:
        async with self._lock:
            await self._end_read()

    async def _end_read(self, error: BaseException | None = None) -> None:
        context, self._read = self._read_context, None
        self._read_context = None
        if context is not None:
            await context.__aexit__(type(error) if error else None, error, None)

    async def _open_read(self) -> UnitOfWork:
        if self._read is None:
            self._read_context = self._base(write=False)
            self._read = await self._read_context.__aenter__()
        return self._read


class _SharedRead:
    def __init__(self, scope: RequestScope) -> None:
        self._scope = scope

    async def __aenter__(self) -> UnitOfWork:
        await self._scope._lock.acquire()
        try:
            return await self._scope._open_read()
        except BaseException:
            self._scope._lock.release()
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc is not None:  # the connection may be broken: the next read opens a new one
                await self._scope._end_read(exc)
        finally:
            self._scope._lock.release()


class _AfterReads:
    def __init__(self, scope: RequestScope, inner: AbstractAsyncContextManager[UnitOfWork], *,
                 audited: bool = True) -> None:
        self._scope = scope
        self._inner = inner
        self._audits = audited

    async def __aenter__(self) -> UnitOfWork:
        await self._scope.close()
        self._uow = await self._inner.__aenter__()
        staged = self._scope._staged if self._audits else None
        self._audited = staged is not None
        if staged is not None:
            try:
                await self._uow.audit_events.record(staged)
            except BaseException as error:
                await self._inner.__aexit__(type(error), error, error.__traceback__)
                raise
        return self._uow

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            if self._uow.committed and self._audited:
                self._scope.audit_event_committed()


def unaudited(factory: UnitOfWorkFactory) -> UnitOfWorkFactory:
    """`factory`, whose write transactions do not carry a request's staged audit event: for a use case of several
    transactions, those that move no money, so that the event commits with the one that does."""
    return factory.unaudited if isinstance(factory, RequestScope) else factory


def audit_event_recorded(factory: UnitOfWorkFactory) -> None:
    """The request's staged audit event was recorded by another's transaction (a worker's, that did the request's
    work in its stead): the request records no other."""
    if isinstance(factory, RequestScope):
        factory.audit_event_committed()
