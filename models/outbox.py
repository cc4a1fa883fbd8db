"""The publisher's queries on the event table: claim with a lease, settle each outcome,
release, hold a source, and remember who was identified."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from models.counters import counter_upsert
from models.database import Database, Row, Transaction
from models.schema import (
    BODIES,
    COUNTERS,
    DEAD,
    DELIVERED,
    DELIVERIES,
    EVENTS,
    IDENTIFIED,
    MAX_ERROR_CHARS,
    PENDING,
    ROWS_PER_STATEMENT,
)
from models.sql import in_list, insert_rows
from models.time import as_datetime, minute_of, utcnow

EVENT_COLUMNS = "id, source, dedup_key, event_type, event_time, attempts, received_at"
# A claimed event's row (as c) with its body's fields and message.
CLAIMED = (
    "SELECT c.id, c.source, c.dedup_key, c.event_type, c.event_time, c.attempts, "
    f"c.received_at, b.fields_json, b.message FROM {{}} c LEFT JOIN {BODIES} b ON b.id = c.id"
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
    message: str | None = None  # the track message made at ingest (None: map it now)


class OutboxQueries:
    """What the publisher asks of the database; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._p = db.placeholder
        # SQLite is served by one process (Database.exclusive), so its leases live here: a
        # claim is a read, not a rewrite of every claimed row, and stays out of ingest's
        # commits. Event id -> when the lease ends (time.monotonic()).
        self._local: dict[int, float] | None = {} if db.leases_in_memory else None

    async def claim(
        self, source: str, *, owner: str, limit: int, lease_s: float, with_fields: bool = True
    ) -> list[ClaimedEvent]:
        """Lease up to `limit` due events of `source` to `owner`, oldest first.

        `fields` are decoded only where they are needed: with_fields, or an event stored
        without its message; otherwise they are left empty.

        With leases in the rows (PostgreSQL), one UPDATE ... RETURNING, so a claim is atomic,
        and the inner SELECT skips rows that another replica is claiming at this moment
        instead of waiting for them. With leases in memory (SQLite), see _claim_local.
        """
        if self._local is not None:
            return await self._claim_local(source, limit, lease_s, with_fields)
        p, now = self._p, utcnow()
        # (A data-modifying WITH: PostgreSQL's. SQLite's leases are in memory, _claim_local.)
        sql = (
            f"WITH claimed AS (UPDATE {EVENTS} SET lease_owner = {p(1)}, "
            f"lease_expires_at = {p(2)}, updated_at = {p(3)} WHERE id IN ("
            f"SELECT id FROM {EVENTS} WHERE source = {p(4)} AND status = '{PENDING}' "
            f"AND next_attempt_at <= {p(3)} "
            f"AND (lease_expires_at IS NULL OR lease_expires_at <= {p(3)}) "
            f"AND NOT EXISTS (SELECT 1 FROM {COUNTERS} h "
            f"WHERE h.source = {p(4)} AND h.held_until > {p(3)}) "
            f"ORDER BY next_attempt_at, id LIMIT {p(5)}{self._db.skip_locked}) "
            f"RETURNING {EVENT_COLUMNS}) " + CLAIMED.format("claimed")
        )
        t = self._db.time
        rows = await self._db.fetch(
            sql, [owner, t(now + timedelta(seconds=lease_s)), t(now), source, limit])
        events = [_claimed(row, with_fields) for row in rows]
        events.sort(key=lambda e: (e.event_time, e.id))
        return events

    async def _claim_local(
        self, source: str, limit: int, lease_s: float, with_fields: bool
    ) -> list[ClaimedEvent]:
        """The in-memory claim: due ids from the index, less those leased here, then their rows."""
        assert self._local is not None
        p, now = self._p, utcnow()
        while True:
            wanted = limit + len(self._local)
            rows = await self._db.read(
                f"SELECT id FROM {EVENTS} WHERE source = {p(1)} AND status = '{PENDING}' "
                f"AND next_attempt_at <= {p(2)} AND NOT EXISTS (SELECT 1 FROM {COUNTERS} h "
                f"WHERE h.source = {p(1)} AND h.held_until > {p(2)}) "
                f"ORDER BY next_attempt_at, id LIMIT {p(3)}",
                [source, self._db.time(now), wanted],
            )
            # From here to the leases' entry there is no await: a concurrent claim cannot
            # take the same events (it read the same ids, perhaps, but sees these leases).
            clock = time.monotonic()
            ids = [i for i in (int(r["id"]) for r in rows)
                   if self._local.get(i, 0.0) <= clock][:limit]
            # Leases taken while this read ran may hide due events beyond it: read again.
            if len(ids) == limit or len(rows) < wanted or wanted >= limit + len(self._local):
                break
        if not ids:
            return []
        for event_id in ids:
            self._local[event_id] = clock + lease_s
        try:
            rows = await self._db.read(
                CLAIMED.format(EVENTS) + f" WHERE c.status = '{PENDING}' "
                f"AND c.id IN ({in_list(self._db.dialect, ids, 1)})", ids)
        except BaseException:
            self._forget(ids)
            raise
        self._forget(set(ids) - {int(r["id"]) for r in rows})  # settled meanwhile
        events = [_claimed(row, with_fields) for row in rows]
        events.sort(key=lambda e: (e.event_time, e.id))
        return events

    def _forget(self, ids: Iterable[int]) -> None:
        """End the in-memory leases of these events (settled, released, or never sent)."""
        if self._local is not None:
            for event_id in ids:
                self._local.pop(event_id, None)

    def _held_here(self, ids: Sequence[int]) -> list[int]:
        """Of these events, the ones leased here (in-memory leases only)."""
        assert self._local is not None
        return [i for i in ids if i in self._local]

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        """Record that Segment accepted these events (whoever holds their lease)."""
        if not ids:
            return
        p, now = self._p, utcnow()
        async with self._db.transaction() as tx:
            per_source: dict[str, int] = {}
            for chunk in _chunks(ids):
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET status = '{DELIVERED}', delivered_at = {p(1)}, "
                    f"updated_at = {p(1)}, attempts = attempts + 1, last_error = NULL, "
                    f"lease_owner = NULL, lease_expires_at = NULL "
                    f"WHERE status = '{PENDING}' AND id IN ({in_list(self._db.dialect, chunk, 2)}) "
                    f"RETURNING source",
                    [self._db.time(now), *chunk],
                )
                for row in rows:
                    per_source[row["source"]] = per_source.get(row["source"], 0) + 1
            for source, count in sorted(per_source.items()):
                self._count_deliveries(tx, source, count, now)
        self._forget(ids)

    def _count_deliveries(self, tx: Transaction, source: str, count: int, now: datetime) -> None:
        t = self._db.time
        tx.execute(*counter_upsert(self._db.dialect, source, add={"delivered": count},
                                   assign={"last_delivery_at": t(now)}))
        tx.execute(*insert_rows(
            self._db.dialect, DELIVERIES, ("source", "minute", "delivered"),
            [(source, t(minute_of(now)), count)],
            suffix=(f"ON CONFLICT (source, minute) DO UPDATE SET "
                    f"delivered = {DELIVERIES}.delivered + excluded.delivered"),
        ))

    async def mark_failed(
        self,
        ids: Sequence[int],
        *,
        owner: str,
        error: str,
        next_attempt_at: datetime,
        max_attempts: int,
    ) -> tuple[int, int]:
        """Count a failed attempt for events `owner` holds: retry later, or dead when spent.

        Returns (retrying, dead): how many of the events went each way.
        """
        p, now, t = self._p, utcnow(), self._db.time
        error = error[:MAX_ERROR_CHARS]
        retrying = dead = 0
        sources: set[str] = set()
        ids, holder = self._holder(ids, owner, 5)
        async with self._db.transaction() as tx:
            for chunk in _chunks(ids):
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET attempts = attempts + 1, last_error = {p(1)}, "
                    f"next_attempt_at = {p(2)}, updated_at = {p(3)}, "
                    f"status = CASE WHEN attempts + 1 >= {p(4)} THEN '{DEAD}' "
                    f"ELSE '{PENDING}' END, lease_owner = NULL, lease_expires_at = NULL "
                    f"WHERE {holder[0]} status = '{PENDING}' "
                    f"AND id IN ({in_list(self._db.dialect, chunk, 5 + len(holder[1]))}) "
                    f"RETURNING source, status",
                    [error, t(next_attempt_at), t(now), max_attempts, *holder[1], *chunk],
                )
                for row in rows:
                    sources.add(row["source"])
                    if row["status"] == DEAD:
                        dead += 1
                    else:
                        retrying += 1
            for source in sorted(sources):
                self._remember_error(tx, source, error, now)
        self._forget(ids)
        return retrying, dead

    def _holder(
        self, ids: Sequence[int], owner: str, position: int
    ) -> tuple[Sequence[int], tuple[str, list[str]]]:
        """Return the ids `owner` may settle, and the condition (with its parameters) that
        keeps a statement to the rows it holds: in the database, or leased here."""
        if self._local is not None:
            return self._held_here(ids), ("", [])
        return ids, (f"lease_owner = {self._p(position)} AND", [owner])

    async def mark_dead(self, errors: dict[int, str]) -> None:
        """Mark each event dead with its own reason (Segment refused it, or it cannot fit)."""
        if not errors:
            return
        p, now = self._p, utcnow()
        async with self._db.transaction() as tx:
            last: dict[str, str] = {}
            for event_id, error in errors.items():
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET status = '{DEAD}', attempts = attempts + 1, "
                    f"last_error = {p(1)}, updated_at = {p(2)}, lease_owner = NULL, "
                    f"lease_expires_at = NULL WHERE id = {p(3)} AND status = '{PENDING}' "
                    f"RETURNING source",
                    [error[:MAX_ERROR_CHARS], self._db.time(now), event_id],
                )
                for row in rows:
                    last[row["source"]] = error[:MAX_ERROR_CHARS]
            for source, error in sorted(last.items()):
                self._remember_error(tx, source, error, now)
        self._forget(errors)

    def _remember_error(self, tx: Transaction, source: str, error: str, now: datetime) -> None:
        tx.execute(*counter_upsert(
            self._db.dialect, source,
            assign={"last_error": error, "last_error_at": self._db.time(now)}))

    async def release(
        self, ids: Sequence[int], *, owner: str, until: datetime | None = None
    ) -> None:
        """Give back leased events without counting an attempt (claimable from `until`)."""
        p = self._p
        ids, (held, params) = self._holder(ids, owner, 1)
        if self._local is not None and until is None:
            self._forget(ids)  # nothing in the database to change
            return
        later = ""
        if until is not None:
            params = [*params, self._db.time(until)]
            later = f", next_attempt_at = {p(len(params))}"
        for chunk in _chunks(ids):
            await self._db.fetch(
                f"UPDATE {EVENTS} SET lease_owner = NULL, lease_expires_at = NULL{later} "
                f"WHERE {held} status = '{PENDING}' "
                f"AND id IN ({in_list(self._db.dialect, chunk, len(params) + 1)})",
                [*params, *chunk],
            )
        self._forget(ids)

    async def hold_source(self, source: str, until: datetime) -> None:
        """Keep every publisher from claiming `source` before `until` (Segment's Retry-After)."""
        await self._db.fetch(*counter_upsert(
            self._db.dialect, source, assign={"held_until": self._db.time(until)}))

    async def identified(self, source: str, keys: Sequence[str]) -> set[str]:
        """Return which of these users already had their identify call delivered."""
        found: set[str] = set()
        for chunk in _chunks(keys):
            rows = await self._db.fetch(
                f"SELECT user_key FROM {IDENTIFIED} WHERE source = {self._p(1)} "
                f"AND user_key IN ({in_list(self._db.dialect, chunk, 2)})",
                [source, *chunk],
            )
            found.update(row["user_key"] for row in rows)
        return found

    async def remember_identified(self, source: str, keys: Sequence[str]) -> None:
        """Record that these users' identify calls were delivered."""
        now = self._db.time(utcnow())
        for chunk in _chunks(keys):
            await self._db.fetch(*insert_rows(
                self._db.dialect, IDENTIFIED, ("source", "user_key", "identified_at"),
                [(source, key, now) for key in chunk],
                suffix="ON CONFLICT (source, user_key) DO NOTHING",
            ))


def _claimed(row: Row, with_fields: bool) -> ClaimedEvent:
    event_time = as_datetime(row["event_time"])
    assert event_time is not None
    message = row["message"]
    return ClaimedEvent(
        id=int(row["id"]),
        source=row["source"],
        dedup_key=row["dedup_key"],
        event_type=row["event_type"],
        event_time=event_time,
        fields=_fields(row["fields_json"]) if with_fields or message is None else {},
        attempts=int(row["attempts"]),
        received_at=as_datetime(row["received_at"]),
        message=message,
    )


def _fields(text: str | None) -> dict[str, Any]:
    """Decode stored fields; something unreadable (or missing) becomes {} and fails mapping
    on its own."""
    try:
        fields = json.loads(text or "")
    except (ValueError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


def _chunks(items: Sequence[Any], size: int = ROWS_PER_STATEMENT) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
