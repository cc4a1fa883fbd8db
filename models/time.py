"""Time as the store keeps it: aware UTC datetimes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def as_datetime(value: Any) -> datetime | None:
    """Return an aware UTC datetime from a driver value (SQLite gives text, asyncpg datetimes)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def minute_of(value: datetime) -> datetime:
    """Return the start of the minute an instant falls in."""
    return value.replace(second=0, microsecond=0)
