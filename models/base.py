"""What every part of the store shares: the error callers handle, the clock, the context."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import asyncpg
from tortoise.exceptions import BaseORMException

R = TypeVar("R")


class DatabaseUnavailable(Exception):
    """The database could not complete the operation; the caller should retry later."""


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


# What the drivers raise when the database is down, unreachable or refusing.
DRIVER_ERRORS = (
    OSError,
    TimeoutError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    BaseORMException,
)


def describe(exc: BaseException) -> str:
    """Return a short description of a storage failure that carries no connection secrets."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bound(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Run a store coroutine with the store's tortoise context active in the calling task.

    Driver failures leave as DatabaseUnavailable, so every caller handles one exception.
    """

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> R:
        with self._activated():
            try:
                return await method(self, *args, **kwargs)
            except DRIVER_ERRORS as exc:
                raise DatabaseUnavailable(describe(exc)) from exc

    return wrapper
