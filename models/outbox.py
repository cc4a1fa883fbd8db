"""Queue operations of the publisher on the event table: claim with a lease, record outcomes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from models.sql import Dialect, in_list, insert_rows

CLAIM_COLUMNS = (
    "id, source, dedup_key, event_type, event_time, fields_json, attempts, received_at"
)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """A due event leased to one publisher."""

    id: int
    source: str
    dedup_key: str
    event_type: str
    event_time: datetime
    fields: dict[str, Any]
    attempts: int
    received_at: datetime | None = None


def as_datetime(value: Any) -> datetime | None:
    """Return an aware UTC datetime from a driver value (SQLite gives text, asyncpg datetimes)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def claim_sql(dialect: Dialect) -> str:
    """Return the statement that leases up to N due events of one source, oldest first.

    One UPDATE ... RETURNING, so a claim is atomic; on PostgreSQL the inner SELECT skips rows
    that another replica is claiming at this moment instead of waiting for them.
    """
    p = dialect.placeholder
    lock = " FOR UPDATE SKIP LOCKED" if dialect is Dialect.POSTGRES else ""
    return (
        f"UPDATE nudgespot_event SET lease_owner = {p(1)}, lease_expires_at = {p(2)}, "
        f"updated_at = {p(3)} WHERE id IN ("
        f"SELECT id FROM nudgespot_event WHERE source = {p(4)} AND status = 'pending' "
        f"AND next_attempt_at <= {p(3)} "
        f"AND (lease_expires_at IS NULL OR lease_expires_at <= {p(3)}) "
        f"AND NOT EXISTS (SELECT 1 FROM nudgespot_source_counter h "
        f"WHERE h.source = {p(4)} AND h.held_until > {p(3)}) "
        f"ORDER BY next_attempt_at, id LIMIT {p(5)}{lock}) "
        f"RETURNING {CLAIM_COLUMNS}"
    )


def claim_params(
    owner: str, source: str, limit: int, lease_s: float, now: datetime
) -> list[Any]:
    return [owner, now + timedelta(seconds=lease_s), now, source, limit]


def _fields(text: str) -> dict[str, Any]:
    """Decode stored fields; something unreadable becomes {} and fails mapping on its own."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


def claimed_from_row(row: dict[str, Any]) -> ClaimedEvent:
    event_time = as_datetime(row["event_time"])
    assert event_time is not None
    return ClaimedEvent(
        id=int(row["id"]),
        source=row["source"],
        dedup_key=row["dedup_key"],
        event_type=row["event_type"],
        event_time=event_time,
        fields=_fields(row["fields_json"]),
        attempts=int(row["attempts"]),
        received_at=as_datetime(row["received_at"]),
    )


def delivered_sql(
    dialect: Dialect, ids: Sequence[int], now: datetime
) -> tuple[str, list[Any]]:
    """Mark events delivered: terminal whoever holds the lease, since Segment has them."""
    p = dialect.placeholder
    sql = (
        f"UPDATE nudgespot_event SET status = 'delivered', delivered_at = {p(1)}, "
        f"updated_at = {p(1)}, attempts = attempts + 1, last_error = NULL, "
        f"lease_owner = NULL, lease_expires_at = NULL WHERE id IN ({in_list(dialect, ids, 2)})"
    )
    return sql, [now, *ids]


def failed_sql(
    dialect: Dialect,
    ids: Sequence[int],
    *,
    owner: str,
    error: str,
    next_attempt_at: datetime,
    max_attempts: int,
    now: datetime,
) -> tuple[str, list[Any]]:
    """Count a failed attempt: back to pending for a retry, or dead once attempts run out."""
    p = dialect.placeholder
    sql = (
        f"UPDATE nudgespot_event SET attempts = attempts + 1, last_error = {p(1)}, "
        f"next_attempt_at = {p(2)}, updated_at = {p(3)}, "
        f"status = CASE WHEN attempts + 1 >= {p(4)} THEN 'dead' ELSE 'pending' END, "
        f"lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE lease_owner = {p(5)} AND status = 'pending' "
        f"AND id IN ({in_list(dialect, ids, 6)}) RETURNING status"
    )
    return sql, [error, next_attempt_at, now, max_attempts, owner, *ids]


def dead_sql(
    dialect: Dialect, event_id: int, *, error: str, now: datetime
) -> tuple[str, list[Any]]:
    """Mark one event dead with the reason (Segment refused it, or it can never fit)."""
    p = dialect.placeholder
    sql = (
        f"UPDATE nudgespot_event SET status = 'dead', attempts = attempts + 1, "
        f"last_error = {p(1)}, updated_at = {p(2)}, lease_owner = NULL, "
        f"lease_expires_at = NULL WHERE id = {p(3)} AND status = 'pending'"
    )
    return sql, [error, now, event_id]


def release_sql(
    dialect: Dialect, owner: str, ids: Sequence[int], until: datetime | None = None
) -> tuple[str, list[Any]]:
    """Give leased events back without counting an attempt; with `until`, not before then."""
    p = dialect.placeholder
    params: list[Any] = [owner]
    later = ""
    if until is not None:
        params.append(until)
        later = f", next_attempt_at = {p(2)}"
    sql = (
        f"UPDATE nudgespot_event SET lease_owner = NULL, lease_expires_at = NULL{later} "
        f"WHERE lease_owner = {p(1)} AND status = 'pending' "
        f"AND id IN ({in_list(dialect, ids, len(params) + 1)})"
    )
    return sql, [*params, *ids]


def hold_sql(dialect: Dialect, source: str, until: datetime) -> tuple[str, list[Any]]:
    """Record that a source must send nothing before `until` (Segment's Retry-After)."""
    return insert_rows(
        dialect,
        "nudgespot_source_counter",
        ("source", "duplicates", "ignored", "held_until"),
        [(source, 0, 0, until)],
        suffix="ON CONFLICT (source) DO UPDATE SET held_until = excluded.held_until",
    )


def identified_sql(
    dialect: Dialect, source: str, keys: Sequence[str]
) -> tuple[str, list[Any]]:
    p = dialect.placeholder
    sql = (
        f"SELECT user_key FROM nudgespot_identified_user WHERE source = {p(1)} "
        f"AND user_key IN ({in_list(dialect, keys, 2)})"
    )
    return sql, [source, *keys]


def remember_identified_sql(
    dialect: Dialect, source: str, keys: Sequence[str], now: datetime
) -> tuple[str, list[Any]]:
    return insert_rows(
        dialect,
        "nudgespot_identified_user",
        ("source", "user_key", "identified_at"),
        [(source, key, now) for key in keys],
        suffix="ON CONFLICT (source, user_key) DO NOTHING",
    )
