"""Work done once for several callers waiting on it (service/usage_combiner.py, service/key_reads.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def answer_each(callers: Sequence[asyncio.Future[T]], work: Awaitable[Sequence[T]]) -> None:
    """Runs `work` and answers each caller with its result, in order, or with a failure of its own. A caller that
    is gone (its request cancelled) is skipped; cancelled itself, it cancels them all."""
    try:
        results = await work
    except asyncio.CancelledError:
        for caller in callers:
            caller.cancel()
        raise
    except Exception as error:
        for caller in callers:
            if not caller.done():
                caller.set_exception(for_one_caller(error))
    else:
        for caller, result in zip(callers, results, strict=True):
            if not caller.done():
                caller.set_result(result)


def for_one_caller(error: Exception) -> Exception:
    """The shared work's failure as one caller's own exception, of the same type, caused by the shared one: raised
    in several requests, one shared exception would carry whichever request raised it last in its traceback."""
    try:
        own = copy.copy(error)
    except Exception:  # an exception type that cannot be rebuilt from its arguments
        return error
    own.__cause__ = error
    return own
