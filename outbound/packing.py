"""Packing messages into batches that fit Segment's limits."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from segment.analytics.consumer import BATCH_SIZE_LIMIT, MAX_MSG_SIZE

MAX_BATCH_EVENTS = 2500
# '{"batch": [], "sentAt": "<32-char ISO time>", "writeKey": ""}' plus slack; see request.post.
ENVELOPE_BYTES = 120


_ENCODER = json.JSONEncoder()


def serialize(message: dict[str, Any]) -> str:
    """Return a message as request.post writes it into the request body.

    Messages hold only JSON types (timestamps are already strings), so the default encoder
    writes exactly what request.post's DatetimeSerializer writes, and ensure_ascii makes the
    text length the byte length.
    """
    return _ENCODER.encode(message)


# An integer of 19 digits or more may lie beyond 64 bits, which orjson reads as a float.
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def deserialize(text: str) -> Any:
    """Return a serialized message exactly as json.loads reads it, with orjson (several times
    faster) whenever that gives the same: not for an integer orjson would turn into a float,
    nor for what it refuses (a lone surrogate escape, a number out of range)."""
    if not _LONG_NUMBER.search(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def encoded_size(message: dict[str, Any]) -> int:
    """Return the bytes a message takes in the request body, serialized as request.post does."""
    return len(serialize(message))


@dataclass(slots=True)
class Unit:
    """The messages of one stored event (an optional identify, then its track), kept together."""

    event_id: int
    messages: list[dict[str, Any]]
    attempts: int = 0  # attempts the event has had before this one
    identifies: str | None = None  # the user key when the unit carries that user's identify
    received_at: datetime | None = None
    sizes: list[int] | None = None  # each message's encoded size, when already known
    size: int = 0

    def __post_init__(self) -> None:
        if self.sizes is None:
            self.sizes = [encoded_size(m) for m in self.messages]
        # ", " separates messages inside the batch array.
        self.size = sum(size + 2 for size in self.sizes)


@dataclass(slots=True)
class Batch:
    """Units that go to Segment in one request."""

    units: list[Unit] = field(default_factory=list)
    size: int = 0
    count: int = 0

    @classmethod
    def of(cls, units: Sequence[Unit]) -> Batch:
        """Return a batch of exactly these units."""
        return cls(list(units), sum(u.size for u in units), sum(len(u.messages) for u in units))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for unit in self.units for m in unit.messages]

    @property
    def event_ids(self) -> list[int]:
        return [unit.event_id for unit in self.units]


def oversize_reason(unit: Unit) -> str | None:
    """Return why a unit can never be sent (a message over 32 KB), or None."""
    for size in unit.sizes or ():
        if size > MAX_MSG_SIZE:
            return f"message is {size} bytes, over Segment's {MAX_MSG_SIZE}-byte limit per event"
    return None


def pack(
    units: Sequence[Unit],
    *,
    write_key: str,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = BATCH_SIZE_LIMIT,
) -> list[Batch]:
    """Split units, in order, into batches within the event count and serialized-size limits."""
    budget = max_bytes - ENVELOPE_BYTES - len(write_key)
    batches: list[Batch] = []
    current = Batch()
    for unit in units:
        count = len(unit.messages)
        if current.units and (
            current.size + unit.size > budget or current.count + count > max_events
        ):
            batches.append(current)
            current = Batch()
        current.units.append(unit)
        current.size += unit.size
        current.count += count
    if current.units:
        batches.append(current)
    return batches
