"""In-memory stand-ins for the database, for fast tests of the code that uses it.

FakeOutbox implements outbound.publisher.Outbox the way models.outbox.OutboxQueries does it
in SQL (same filters, same order, same bookkeeping of attempts and leases) and records every
call, so a test can run the real SegmentPublisher against it and assert on what was asked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from models import ClaimedEvent
from models.schema import DEAD, DELIVERED, PENDING

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Call:
    """One call to the outbox: its arguments, when it was made, and what it returned."""

    method: str
    args: dict[str, Any]
    at: datetime
    result: Any = None


@dataclass
class Row:
    """An event as the table holds it."""

    event: ClaimedEvent
    status: str = PENDING
    attempts: int = 0
    next_attempt_at: datetime = EPOCH
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None


@dataclass
class FakeOutbox:
    """An in-memory Outbox that records every call (see the module docstring)."""

    rows: dict[int, Row] = field(default_factory=dict)
    held_until: dict[str, datetime] = field(default_factory=dict)  # per source
    known: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    calls: list[Call] = field(default_factory=list)

    # --- for tests ---------------------------------------------------------------------------

    def add(self, *events: ClaimedEvent) -> None:
        """Store pending events, due now (their `attempts` are the attempts already made)."""
        for event in events:
            assert event.id not in self.rows, f"event {event.id} is already stored"
            self.rows[event.id] = Row(event, attempts=event.attempts)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def index_of(self, call: Call) -> int:
        return next(i for i, c in enumerate(self.calls) if c is call)

    def statuses(self) -> dict[int, str]:
        return {i: row.status for i, row in self.rows.items()}

    def settled(self) -> bool:
        """Whether no event is pending any more."""
        return all(row.status != PENDING for row in self.rows.values())

    def _record(self, method: str, **args: Any) -> Call:
        call = Call(method, args, utcnow())
        self.calls.append(call)
        return call

    # --- the Outbox protocol ------------------------------------------------------------------
    # No method awaits anything, so each one is atomic for the event loop, as a transaction is.

    async def claim(
        self, source: str, *, owner: str, limit: int, lease_s: float, with_fields: bool = True
    ) -> list[ClaimedEvent]:
        call = self._record("claim", source=source, owner=owner, limit=limit, lease_s=lease_s)
        now = call.at
        held = self.held_until.get(source)
        due = [
            row
            for row in self.rows.values()
            if row.event.source == source
            and row.status == PENDING
            and row.next_attempt_at <= now
            and (row.lease_expires_at is None or row.lease_expires_at <= now)
            and not (held is not None and held > now)
        ]
        due.sort(key=lambda row: (row.next_attempt_at, row.event.id))
        events = []
        for row in due[:limit]:
            row.lease_owner = owner
            row.lease_expires_at = now + timedelta(seconds=lease_s)
            events.append(replace(row.event, attempts=row.attempts))
        events.sort(key=lambda e: (e.event_time, e.id))
        call.result = events
        return events

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        self._record("mark_delivered", ids=list(ids))
        for row in self._pending(ids):
            row.status, row.last_error = DELIVERED, None
            row.attempts += 1
            self._unlease(row)

    async def mark_failed(
        self,
        ids: Sequence[int],
        *,
        owner: str,
        error: str,
        next_attempt_at: datetime,
        max_attempts: int,
    ) -> tuple[int, int]:
        call = self._record("mark_failed", ids=list(ids), owner=owner, error=error,
                            next_attempt_at=next_attempt_at, max_attempts=max_attempts)
        retrying = dead = 0
        for row in self._pending(ids, owner=owner):
            row.attempts += 1
            row.last_error, row.next_attempt_at = error, next_attempt_at
            if row.attempts >= max_attempts:
                row.status, dead = DEAD, dead + 1
            else:
                retrying += 1
            self._unlease(row)
        call.result = (retrying, dead)
        return retrying, dead

    async def mark_dead(self, errors: dict[int, str]) -> None:
        self._record("mark_dead", errors=dict(errors))
        for row in self._pending(list(errors)):
            row.status, row.last_error = DEAD, errors[row.event.id]
            row.attempts += 1
            self._unlease(row)

    async def release(
        self, ids: Sequence[int], *, owner: str, until: datetime | None = None
    ) -> None:
        self._record("release", ids=list(ids), owner=owner, until=until)
        for row in self._pending(ids, owner=owner):
            self._unlease(row)
            if until is not None:
                row.next_attempt_at = until

    async def hold_source(self, source: str, until: datetime) -> None:
        self._record("hold_source", source=source, until=until)
        self.held_until[source] = until

    async def identified(self, source: str, keys: Sequence[str]) -> set[str]:
        call = self._record("identified", source=source, keys=list(keys))
        call.result = set(keys) & self.known[source]
        return set(call.result)

    async def remember_identified(self, source: str, keys: Sequence[str]) -> None:
        self._record("remember_identified", source=source, keys=list(keys))
        self.known[source].update(keys)

    # --- helpers -----------------------------------------------------------------------------

    def _pending(self, ids: Sequence[int], owner: str | None = None) -> list[Row]:
        """The rows of `ids` an UPDATE ... WHERE status = 'pending' [AND lease_owner] touches."""
        rows = [self.rows[i] for i in dict.fromkeys(ids) if i in self.rows]  # IN (...)
        return [
            row
            for row in rows
            if row.status == PENDING and (owner is None or row.lease_owner == owner)
        ]

    @staticmethod
    def _unlease(row: Row) -> None:
        row.lease_owner = row.lease_expires_at = None
