"""Unit tests of outbound.packing: batches within Segment's count and byte limits.

The byte limit is checked on the exact request body that segment.analytics.request.post
builds: json.dumps({"batch": msgs, "sentAt": <iso>, "writeKey": key}, cls=DatetimeSerializer).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from segment.analytics.request import DatetimeSerializer

from outbound.packing import Unit, deserialize, oversize_reason, pack, serialize

BATCH_LIMIT = 475_000  # segment.analytics.consumer.BATCH_SIZE_LIMIT
MESSAGE_LIMIT = 32_768  # 32 KB, segment.analytics.consumer.MAX_MSG_SIZE
# The longest sentAt request.post writes: datetime.now(tz=tzutc()).isoformat() with microseconds.
SENT_AT = "2026-11-28T23:34:49.123456+00:00"
WRITE_KEY = "WK-default"


def message(size: int, n: int = 0, *, pad_char: str = "x") -> dict[str, Any]:
    """A track message whose serialized size is exactly `size` bytes."""
    base: dict[str, Any] = {
        "type": "track",
        "event": "Email Opened",
        "userId": f"user-{n}",
        "messageId": f"nudgespot-{n:08d}",
        "timestamp": "2026-11-20T09:30:00.000Z",
        "properties": {"pad": ""},
    }
    missing = size - encoded(base)
    assert missing >= 0, f"cannot build a {size}-byte message"
    escaped = len(json.dumps(pad_char)) - 2  # bytes one pad character takes once escaped
    count, rest = divmod(missing, escaped)
    base["properties"]["pad"] = pad_char * count + "x" * rest
    assert encoded(base) == size
    return base


def encoded(msg: dict[str, Any]) -> int:
    return len(json.dumps(msg, cls=DatetimeSerializer).encode())


def body_bytes(messages: list[dict[str, Any]], write_key: str = WRITE_KEY) -> int:
    """Bytes of the body request.post would send for these messages."""
    body = {"batch": messages, "sentAt": SENT_AT, "writeKey": write_key}
    return len(json.dumps(body, cls=DatetimeSerializer).encode())


def units_of(sizes: list[int]) -> list[Unit]:
    return [Unit(i, [message(size, i)]) for i, size in enumerate(sizes)]


# --- event count ----------------------------------------------------------------------------


def test_pack_keeps_exactly_max_events_in_one_batch() -> None:
    units = units_of([180] * 2500)
    assert body_bytes([m for u in units for m in u.messages]) < BATCH_LIMIT  # bytes fit
    batches = pack(units, write_key=WRITE_KEY)
    assert [len(b.messages) for b in batches] == [2500]


def test_pack_splits_one_over_max_events() -> None:
    units = units_of([180] * 2501)
    batches = pack(units, write_key=WRITE_KEY)
    assert [len(b.messages) for b in batches] == [2500, 1]


def test_pack_respects_a_smaller_max_events() -> None:
    batches = pack(units_of([180] * 25), write_key=WRITE_KEY, max_events=10)
    assert [len(b.messages) for b in batches] == [10, 10, 5]


def test_pack_counts_every_message_of_a_unit_against_max_events() -> None:
    units = [Unit(i, [message(180, 2 * i), message(180, 2 * i + 1)]) for i in range(1251)]
    batches = pack(units, write_key=WRITE_KEY)
    assert [len(b.messages) for b in batches] == [2500, 2]


# --- bytes ------------------------------------------------------------------------------------


def test_pack_never_builds_a_body_over_the_batch_limit() -> None:
    rng = random.Random(20261128)
    sizes = [rng.randint(250, 32_000) for _ in range(400)]
    batches = pack(units_of(sizes), write_key=WRITE_KEY)
    assert len(batches) > 1
    for batch in batches:
        assert body_bytes(batch.messages) <= BATCH_LIMIT


def test_pack_never_builds_a_body_over_the_limit_with_a_long_write_key() -> None:
    write_key = "k" * 400
    batches = pack(units_of([10_000] * 200), write_key=write_key)
    assert len(batches) > 1
    for batch in batches:
        assert body_bytes(batch.messages, write_key) <= BATCH_LIMIT


def test_pack_budget_counts_escaped_non_ascii_characters() -> None:
    # "é" is 2 bytes in UTF-8 but 6 once json.dumps escapes it, as request.post does.
    units = [Unit(i, [message(30_000, i, pad_char="é")]) for i in range(60)]
    batches = pack(units, write_key=WRITE_KEY)
    assert len(batches) > 1
    for batch in batches:
        assert body_bytes(batch.messages) <= BATCH_LIMIT


def test_pack_does_not_split_a_batch_whose_body_fits() -> None:
    # 100 messages whose request body is 474,900 bytes: under the limit, so one batch.
    target = BATCH_LIMIT - 100
    count = 100
    overhead = body_bytes([]) + 2 * (count - 1)  # envelope and ", " separators
    each, extra = divmod(target - overhead, count)
    sizes = [each] * (count - 1) + [each + extra]
    units = units_of(sizes)
    assert body_bytes([m for u in units for m in u.messages]) == target
    batches = pack(units, write_key=WRITE_KEY)
    assert len(batches) == 1


def test_pack_fills_each_batch_before_starting_the_next() -> None:
    rng = random.Random(7)
    sizes = [rng.randint(250, 32_000) for _ in range(400)]
    batches = pack(units_of(sizes), write_key=WRITE_KEY)
    for current, following in zip(batches, batches[1:], strict=False):
        with_next = current.messages + following.units[0].messages
        # The next unit could not have joined (allowing 100 bytes of estimation slack).
        assert body_bytes(with_next) > BATCH_LIMIT - 100


# --- order and units ------------------------------------------------------------------------


def test_pack_keeps_the_order_of_units_and_messages() -> None:
    rng = random.Random(3)
    units = units_of([rng.randint(250, 30_000) for _ in range(200)])
    batches = pack(units, write_key=WRITE_KEY)
    assert [i for b in batches for i in b.event_ids] == list(range(200))
    assert [m["messageId"] for b in batches for m in b.messages] == [
        m["messageId"] for u in units for m in u.messages
    ]


def test_pack_keeps_a_units_messages_in_one_batch_at_the_event_limit() -> None:
    units = [Unit(i, [message(180, 2 * i), message(180, 2 * i + 1)]) for i in range(7)]
    batches = pack(units, write_key=WRITE_KEY, max_events=5)
    for batch in batches:
        assert len(batch.messages) <= 5
        assert batch.messages == [m for u in batch.units for m in u.messages]
    placed = [u.event_id for b in batches for u in b.units]
    assert placed == list(range(7))
    assert all(len(u.messages) == 2 for b in batches for u in b.units)


def test_pack_keeps_a_units_messages_in_one_batch_at_the_byte_limit() -> None:
    # Each unit (an identify and its track) is ~50 KB, so ~9.5 units fit: a boundary
    # falls inside some unit unless pack keeps units whole.
    units = [Unit(i, [message(20_000, 2 * i), message(30_000, 2 * i + 1)]) for i in range(20)]
    batches = pack(units, write_key=WRITE_KEY)
    assert len(batches) > 1
    seen: list[str] = []
    for batch in batches:
        assert body_bytes(batch.messages) <= BATCH_LIMIT
        for unit in batch.units:
            assert [m["messageId"] for m in unit.messages] == [
                f"nudgespot-{2 * unit.event_id:08d}",
                f"nudgespot-{2 * unit.event_id + 1:08d}",
            ]
        seen.extend(m["messageId"] for m in batch.messages)
    assert seen == [f"nudgespot-{n:08d}" for n in range(40)]


def test_pack_of_no_units_is_no_batches() -> None:
    assert pack([], write_key=WRITE_KEY) == []


# --- oversize messages ------------------------------------------------------------------------


def test_oversize_reason_names_a_message_over_32_kb() -> None:
    reason = oversize_reason(Unit(1, [message(MESSAGE_LIMIT + 1)]))
    assert reason is not None
    assert str(MESSAGE_LIMIT + 1) in reason or "32" in reason


@pytest.mark.parametrize("size", [MESSAGE_LIMIT - 1, MESSAGE_LIMIT])
def test_oversize_reason_is_none_up_to_32_kb(size: int) -> None:
    assert oversize_reason(Unit(1, [message(size)])) is None


def test_oversize_reason_checks_every_message_of_a_unit() -> None:
    unit = Unit(1, [message(200, 1), message(MESSAGE_LIMIT + 500, 2)])
    assert oversize_reason(unit) is not None


# --- reading a stored message back -------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def typed(value: Any) -> Any:
    """A value with the type of every part made visible (1 and 1.0 and True differ)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


@given(JSON_VALUES)
def test_deserialize_reads_a_serialized_message_exactly_as_json_loads(value: Any) -> None:
    text = serialize({"properties": value})

    assert typed(deserialize(text)) == typed(json.loads(text))


@pytest.mark.parametrize("literal", [
    "123456789012345678901234",  # beyond 64 bits: orjson would read a float
    "-9223372036854775809",
    "18446744073709551616",
    '"\\ud800"',  # a lone surrogate escape, which orjson refuses
    "1e400",  # out of range: json reads inf
])
def test_deserialize_keeps_what_orjson_would_change_or_refuse(literal: str) -> None:
    text = '{"properties": {"n": ' + literal + "}}"

    assert typed(deserialize(text)) == typed(json.loads(text))
