"""What every part of the store shares: the error callers handle, the clock, the context."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

R = TypeVar("R")


class DatabaseUnavailable(Exception):
    """The database could not complete the operation; the caller should retry later."""


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def bound(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Run a store coroutine with the store's tortoise context active in the calling task."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> R:
        with self._activated():
            return await method(self, *args, **kwargs)

    return wrapper
