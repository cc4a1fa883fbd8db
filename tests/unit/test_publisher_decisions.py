"""Fast unit tests of the publisher's decisions: what it claims, sends, settles and releases.

The real SegmentPublisher (with the real mapping, packing and policy code) runs against
FakeOutbox, an in-memory stand-in for the database that records every call, and
ScriptedSegment, a Sender that records the batches it is asked to send and answers per a
plan. Assertions are on those records. Waits poll with a generous timeout; nothing asserts
how long something took.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from segment.analytics.request import APIError

from models import ClaimedEvent
from outbound import mapping
from outbound.publisher import PublisherOptions, SegmentPublisher, SourceTarget
from tests.fakes import FakeOutbox

UTC = timezone.utc
BASE = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
WRITE_KEY = "WK-default"
OTHER_WRITE_KEY = "WK-other"
DEFAULT = SourceTarget("default", WRITE_KEY)
OTHER = SourceTarget("other", OTHER_WRITE_KEY)
OWNER = "publisher-under-test"
MAX_ATTEMPTS = 3
FAST: dict[str, Any] = {
    "interval_s": 0.05,
    "linger_s": 0,
    "retry_base_s": 0.02,
    "retry_max_s": 0.05,
    "max_attempts": MAX_ATTEMPTS,
    "stop_timeout_s": 1.0,
}


# --- events -------------------------------------------------------------------------------------


def event(
    n: int,
    *,
    source: str = "default",
    user: str = "u1",
    fields: dict[str, Any] | None = None,
    **extra: Any,
) -> ClaimedEvent:
    """Stored event number `n` (its id; it happened n seconds after BASE), of user `user`."""
    if fields is None:
        fields = {"user_id": user, "email": f"{user}@example.com", **extra}
    return ClaimedEvent(
        id=n,
        source=source,
        dedup_key=f"{source}-{n}",
        event_type="email_opened",
        event_time=BASE + timedelta(seconds=n),
        fields=fields,
        attempts=0,
        received_at=BASE,
    )


def mid(e: ClaimedEvent) -> str:
    """The messageId of an event's track."""
    return mapping.message_id(e.source, e.dedup_key)


# --- a scripted Segment -------------------------------------------------------------------------


def api_error(status: int, message: str = "scripted", headers: dict[str, str] | None = None
              ) -> APIError:
    """An APIError as segment.analytics.request.post raises it, with a real Response."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return APIError(status, "error", message, response)


@dataclass
class Request:
    """One batch the publisher asked to send, and what it was answered."""

    write_key: str
    messages: list[dict[str, Any]]
    status: int | None = None  # 200 accepted; an HTTP error status; 0 network error

    @property
    def ids(self) -> list[str]:
        return [m["messageId"] for m in self.messages]

    @property
    def kinds(self) -> list[tuple[str, str]]:
        return [(m["type"], m.get("userId") or m["anonymousId"]) for m in self.messages]


class ScriptedSegment:
    """A Sender (write_key, messages) -> None that records each call and answers per a plan:
    accept; 400 for batches holding a rejected messageId; scripted failures; or hang on a gate.
    It is called from the publisher's thread pool."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.gate: threading.Event | None = None  # when set up, each call waits for it
        self.busy = 0  # calls in progress
        self._rejected: dict[str, str] = {}
        self._failures: list[list[Any]] = []  # [write key or None, make error, times left]
        self._lock = threading.Lock()

    def reject(self, message_id: str, reason: str) -> None:
        """Answer 400 with `reason` to every batch that holds `message_id`."""
        self._rejected[message_id] = reason

    def fail(self, make: Callable[[], Exception], *, times: int | None = None,
             write_key: str | None = None) -> None:
        """Raise make() for the next `times` batches (all when None) of `write_key` (any)."""
        self._failures.append([write_key, make, times])

    def open_gate(self) -> None:
        if self.gate is not None:
            self.gate.set()

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    def accepted_ids(self) -> list[str]:
        return [i for r in self.accepted() for i in r.ids]

    def __call__(self, write_key: str, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            request = Request(write_key, list(messages))
            self.requests.append(request)
            self.busy += 1
            error = self._answer(request)
        try:
            if self.gate is not None:
                self.gate.wait()
            if isinstance(error, APIError):
                request.status = int(error.status)
            else:
                request.status = 0 if error else 200
            if error:
                raise error
        finally:
            with self._lock:
                self.busy -= 1

    def _answer(self, request: Request) -> Exception | None:
        reasons = [self._rejected[i] for i in request.ids if i in self._rejected]
        if reasons:
            return api_error(400, reasons[0])
        for failure in self._failures:
            write_key, make, times = failure
            if write_key not in (None, request.write_key) or times == 0:
                continue
            if times is not None:
                failure[2] = times - 1
            return make()
        return None


# --- running the publisher ------------------------------------------------------------------


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait for `condition`, polling; fail after `timeout_s` (a bound on waiting, not a check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


Start = Callable[..., Awaitable[SegmentPublisher]]


@pytest.fixture
async def publish() -> AsyncIterator[Start]:
    """start(outbox, segment, *sources, **options): a started publisher, stopped at teardown."""
    started: list[tuple[SegmentPublisher, ScriptedSegment]] = []

    async def start(outbox: FakeOutbox, segment: ScriptedSegment, *sources: SourceTarget,
                    **options: Any) -> SegmentPublisher:
        publisher = SegmentPublisher(
            sources or (DEFAULT,),
            PublisherOptions(**{**FAST, **options}),
            sender=segment,
            owner=OWNER,
        )
        started.append((publisher, segment))
        await publisher.start(outbox)
        return publisher

    yield start
    for publisher, segment in started:
        segment.open_gate()
        await publisher.stop()
        await until(lambda segment=segment: segment.busy == 0, "the sender threads to finish")


def delivered_ids(outbox: FakeOutbox) -> list[int]:
    return [i for call in outbox.calls_to("mark_delivered") for i in call.args["ids"]]


def claimed(outbox: FakeOutbox, source: str = "default") -> list[list[int]]:
    """The ids each claim of `source` returned, in order."""
    calls = outbox.calls_to("claim")
    return [[e.id for e in c.result] for c in calls if c.args["source"] == source]


# --- the fake itself -----------------------------------------------------------------------------


async def test_fake_outbox_behaves_like_the_real_queries() -> None:
    outbox = FakeOutbox()
    outbox.add(event(3), event(1), event(2), event(4), event(9, source="other"))
    outbox.rows[4].next_attempt_at = datetime.now(UTC) + timedelta(hours=1)  # not due

    # due, unleased, pending events of the source, oldest first, up to the limit
    first = await outbox.claim("default", owner="a", limit=2, lease_s=60)
    second = await outbox.claim("default", owner="b", limit=9, lease_s=60)
    assert ([e.id for e in first], [e.id for e in second]) == ([1, 2], [3])
    # only the lease holder fails or releases; a release can set when the event is due again
    assert await outbox.mark_failed([1, 3], owner="a", error="e", next_attempt_at=BASE,
                                    max_attempts=2) == (1, 0)
    await outbox.release([2, 3], owner="a", until=BASE)
    assert [(r.lease_owner, r.attempts) for r in outbox.rows.values()] == [
        ("b", 0), (None, 1), (None, 0), (None, 0), (None, 0)]
    assert outbox.rows[2].next_attempt_at == BASE
    # a held source gives nothing; attempts run out at max_attempts
    await outbox.hold_source("default", datetime.now(UTC) + timedelta(hours=1))
    assert await outbox.claim("default", owner="a", limit=9, lease_s=60) == []
    outbox.held_until.clear()
    again = await outbox.claim("default", owner="a", limit=9, lease_s=60)
    assert [(e.id, e.attempts) for e in again] == [(1, 1), (2, 0)]
    assert await outbox.mark_failed([1], owner="a", error="e", next_attempt_at=BASE,
                                    max_attempts=2) == (0, 1)
    assert outbox.statuses() == {3: "pending", 1: "dead", 2: "pending", 4: "pending", 9: "pending"}
    assert [c.method for c in outbox.calls] == [
        "claim", "claim", "mark_failed", "release", "hold_source", "claim", "claim", "mark_failed"]


# --- 1. the plain path ------------------------------------------------------------------------


async def test_every_claimed_event_is_sent_once_and_marked_delivered(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    events = [event(n, user=f"u{n % 3}") for n in range(1, 8)]
    outbox.add(*events)

    await publish(outbox, segment)
    await until(outbox.settled, "every event to be settled")

    assert sorted(segment.accepted_ids()) == sorted(mid(e) for e in events)
    assert len(segment.requests) == len(segment.accepted())  # nothing was refused or retried
    assert {r.write_key for r in segment.requests} == {WRITE_KEY}
    assert [m["type"] for m in segment.requests[0].messages] == ["track"] * 7  # identify is off
    assert sorted(delivered_ids(outbox)) == [e.id for e in events]
    assert outbox.statuses() == {e.id: "delivered" for e in events}
    assert [c.method for c in outbox.calls if c.method.startswith("mark_")] == ["mark_delivered"]
    first = outbox.calls_to("claim")[0]
    assert first.args == {"source": "default", "owner": OWNER, "limit": 2500, "lease_s": 120.0}


async def test_each_source_is_sent_with_its_own_write_key(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    mine, theirs = [event(1), event(2)], [event(11, source="other"), event(12, source="other")]
    outbox.add(*mine, *theirs)

    await publish(outbox, segment, DEFAULT, OTHER)
    await until(outbox.settled, "every event to be settled")

    by_key = {i: r.write_key for r in segment.accepted() for i in r.ids}
    assert by_key == {
        **{mid(e): WRITE_KEY for e in mine},
        **{mid(e): OTHER_WRITE_KEY for e in theirs},
    }


# --- 2. a 400 for one message ------------------------------------------------------------------


async def test_400_for_one_message_bisects_and_kills_only_that_event(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    events = [event(n, user=f"u{n}") for n in range(1, 9)]
    bad = events[5]
    segment.reject(mid(bad), "properties.variant must be a string")
    outbox.add(*events)

    await publish(outbox, segment)
    await until(outbox.settled, "every event to be settled")

    assert outbox.calls_to("mark_dead")[0].args == {
        "errors": {bad.id: "Segment answered 400: properties.variant must be a string"}}
    assert len(outbox.calls_to("mark_dead")) == 1
    assert outbox.statuses() == {e.id: "dead" if e is bad else "delivered" for e in events}
    assert sorted(delivered_ids(outbox)) == sorted(e.id for e in events if e is not bad)
    assert outbox.calls_to("mark_failed") == []  # a refusal is not a retry
    # No event went out in two accepted batches, and the bad one in none.
    sent = Counter(segment.accepted_ids())
    assert sorted(sent) == sorted(mid(e) for e in events if e is not bad)
    assert max(sent.values()) == 1
    # Bisected: the whole batch was refused, then ever smaller parts of refused batches were
    # tried, down to the bad message alone.
    first, *later = segment.requests
    assert (sorted(first.ids), first.status) == (sorted(mid(e) for e in events), 400)
    refused = [first]
    for request in later:
        assert any(set(request.ids) < set(r.ids) for r in refused), request.ids
        if request.status == 400:
            refused.append(request)
    assert [r.ids for r in refused if mid(bad) in r.ids][-1] == [mid(bad)]
    assert len(segment.requests) < 2 * len(events)  # halves, not one request per event


# --- 3. retries -------------------------------------------------------------------------------


async def test_500_counts_an_attempt_and_retries_later_until_max_attempts(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    events = [event(1), event(2, user="u2")]
    segment.fail(lambda: api_error(500, "internal"))
    outbox.add(*events)

    await publish(outbox, segment)
    await until(outbox.settled, "the events to be settled")

    failed = outbox.calls_to("mark_failed")
    assert len(failed) == MAX_ATTEMPTS
    for call in failed:
        assert call.args["ids"] == [1, 2]
        assert call.args["owner"] == OWNER
        assert call.args["error"] == "Segment answered 500: internal"
        assert call.args["max_attempts"] == MAX_ATTEMPTS
        assert call.args["next_attempt_at"] > call.at  # later, not now
    # (retrying, dead): alive until the last attempt, dead after it
    assert [c.result for c in failed] == [(2, 0)] * (MAX_ATTEMPTS - 1) + [(0, 2)]
    # each retry was a new claim that saw the attempts counted so far
    attempts = [[e.attempts for e in c.result] for c in outbox.calls_to("claim") if c.result]
    assert attempts == [[n, n] for n in range(MAX_ATTEMPTS)]
    assert [r.status for r in segment.requests] == [500] * MAX_ATTEMPTS
    assert {i: (r.status, r.attempts) for i, r in outbox.rows.items()} == {
        1: ("dead", MAX_ATTEMPTS), 2: ("dead", MAX_ATTEMPTS)}
    assert outbox.calls_to("mark_dead") == outbox.calls_to("mark_delivered") == []


async def test_connection_error_is_retried_then_delivered(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    segment.fail(lambda: requests.ConnectionError("connection reset by peer"), times=1)
    outbox.add(event(1))

    await publish(outbox, segment)
    await until(outbox.settled, "the event to be settled")

    [failed] = outbox.calls_to("mark_failed")
    assert failed.args["error"].startswith("Segment unreachable")
    assert failed.result == (1, 0)
    assert [r.status for r in segment.requests] == [0, 200]
    assert (outbox.rows[1].status, outbox.rows[1].attempts) == ("delivered", 2)


# --- 4. Retry-After ---------------------------------------------------------------------------


async def test_429_with_retry_after_holds_the_source_and_releases_the_rest(
    publish: Start,
) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    # ~20 KB tracks: one claim of 30 packs into two batches (Segment's 475 KB per request).
    events = [event(n, user=f"u{n}", properties={"blob": "x" * 20_000}) for n in range(1, 31)]
    later = [event(101, source="other"), event(102, source="other", user="u2")]
    segment.fail(lambda: api_error(429, "slow down", {"Retry-After": "1"}), times=1,
                 write_key=WRITE_KEY)
    outbox.add(*events)

    publisher = await publish(outbox, segment, DEFAULT, OTHER)
    await until(lambda: outbox.calls_to("hold_source"), "the hold")
    outbox.add(*later)  # the other source gets work while this one is held
    publisher.wake("other")
    await until(outbox.settled, "every event to be settled")

    [hold] = outbox.calls_to("hold_source")
    until_ = hold.args["until"]
    assert hold.args["source"] == "default"
    assert timedelta(seconds=0.5) < until_ - hold.at <= timedelta(seconds=1)
    first = segment.requests[0]
    assert (first.write_key, first.status) == (WRITE_KEY, 429)
    assert claimed(outbox)[0] == [e.id for e in events]
    sent_first = [e.id for e in events if mid(e) in first.ids]
    rest = [e.id for e in events if mid(e) not in first.ids]
    assert sent_first and rest  # two batches were claimed at once
    # the refused batch: an attempt, due no earlier than the hold; the rest: given back as is
    [failed] = outbox.calls_to("mark_failed")
    assert failed.args["ids"] == sent_first
    assert failed.args["next_attempt_at"] >= until_
    [release] = outbox.calls_to("release")
    assert release.args == {"ids": rest, "owner": OWNER, "until": until_}
    mine = [r for r in segment.requests if r.write_key == WRITE_KEY]
    assert [r.status for r in mine] == [429, 200, 200]  # the rest was not sent into the hold
    # nothing of the held source was even claimed during the hold...
    default_claims = [c for c in outbox.calls_to("claim") if c.args["source"] == "default"]
    assert [c for c in default_claims if hold.at <= c.at < until_] == []
    resumed = next(c for c in default_claims if c.at >= until_)
    assert sorted(e.id for e in resumed.result) == [e.id for e in events]
    # ...while the other source was served
    served = next(c for c in outbox.calls_to("mark_delivered") if c.args["ids"][0] >= 101)
    assert sorted(served.args["ids"]) == [101, 102]
    assert outbox.index_of(hold) < outbox.index_of(served) < outbox.index_of(resumed)
    assert Counter(segment.accepted_ids()) == Counter(mid(e) for e in [*events, *later])
    assert {r.write_key for r in segment.requests if mid(later[0]) in r.ids} == {OTHER_WRITE_KEY}


# --- 5. identify once -------------------------------------------------------------------------

IDENTIFYING = SourceTarget("default", WRITE_KEY, identify=True)


async def test_identify_goes_once_before_a_new_users_first_track(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    outbox.known["default"].add("user:u3")  # identified before
    outbox.add(event(1), event(2, user="u2"), event(3), event(4, user="u3"), event(5))

    publisher = await publish(outbox, segment, IDENTIFYING)
    await until(outbox.settled, "every event to be settled")

    [request] = segment.requests
    assert request.kinds == [
        ("identify", "u1"), ("track", "u1"),
        ("identify", "u2"), ("track", "u2"),
        ("track", "u1"), ("track", "u3"), ("track", "u1"),
    ]
    assert request.messages[0]["traits"] == {"email": "u1@example.com"}
    assert request.status == 200
    [asked] = outbox.calls_to("identified")
    assert asked.args == {"source": "default", "keys": ["user:u1", "user:u2", "user:u3"]}
    [delivered] = outbox.calls_to("mark_delivered")
    [remembered] = outbox.calls_to("remember_identified")
    assert remembered.args == {"source": "default", "keys": ["user:u1", "user:u2"]}
    assert outbox.index_of(delivered) < outbox.index_of(remembered)

    # later events: a remembered user gets none, a new one gets theirs
    outbox.add(event(6), event(7, user="u4"))
    publisher.wake("default")
    await until(outbox.settled, "the later events to be settled")

    assert segment.requests[-1].kinds == [("track", "u1"), ("identify", "u4"), ("track", "u4")]
    identifies = Counter(u for r in segment.requests for kind, u in r.kinds if kind == "identify")
    assert identifies == {"u1": 1, "u2": 1, "u4": 1}
    assert outbox.known["default"] == {"user:u1", "user:u2", "user:u3", "user:u4"}


async def test_a_failed_batch_does_not_remember_the_user_and_the_retry_identifies(
    publish: Start,
) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    segment.fail(lambda: api_error(500, "internal"), times=1)
    outbox.add(event(1), event(2))

    await publish(outbox, segment, IDENTIFYING)
    await until(outbox.settled, "the events to be settled")

    expected = [("identify", "u1"), ("track", "u1"), ("track", "u1")]
    assert [(r.kinds, r.status) for r in segment.requests] == [(expected, 500), (expected, 200)]
    [failed] = outbox.calls_to("mark_failed")
    [delivered] = outbox.calls_to("mark_delivered")
    [remembered] = outbox.calls_to("remember_identified")
    assert remembered.args["keys"] == ["user:u1"]
    assert outbox.index_of(failed) < outbox.index_of(delivered) < outbox.index_of(remembered)


# --- 6, 7. events that can never be sent ------------------------------------------------------


async def test_an_event_that_cannot_be_mapped_goes_dead_alone(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    unmappable = event(2, fields={"subject": "no user_id, no email"})
    outbox.add(event(1), unmappable, event(3))

    await publish(outbox, segment)
    await until(outbox.settled, "every event to be settled")

    [dead] = outbox.calls_to("mark_dead")
    assert list(dead.args["errors"]) == [2]
    assert dead.args["errors"][2].startswith("cannot map event: KeyError")
    assert outbox.statuses() == {1: "delivered", 2: "dead", 3: "delivered"}
    assert sorted(segment.accepted_ids()) == sorted([mid(event(1)), mid(event(3))])
    assert all(mid(unmappable) not in r.ids for r in segment.requests)
    assert outbox.calls_to("mark_failed") == []


async def test_an_event_over_32_kb_goes_dead_with_the_size_reason(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    huge = event(2, properties={"blob": "x" * 40_000})
    outbox.add(event(1), huge, event(3))

    await publish(outbox, segment)
    await until(outbox.settled, "every event to be settled")

    [dead] = outbox.calls_to("mark_dead")
    assert list(dead.args["errors"]) == [2]
    reason = dead.args["errors"][2]
    assert reason.startswith("message is ") and "over Segment's 32768-byte limit" in reason
    assert outbox.statuses() == {1: "delivered", 2: "dead", 3: "delivered"}
    assert all(mid(huge) not in r.ids for r in segment.requests)


# --- 8. linger --------------------------------------------------------------------------------


async def test_after_a_claim_that_was_not_full_the_next_claim_waits(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    outbox.add(event(1))

    publisher = await publish(outbox, segment, concurrency=1, linger_s=0.3, interval_s=30)
    await until(lambda: delivered_ids(outbox) == [1], "the first event to be delivered")
    # Events trickle in right after the first batch; the publisher is lingering, not claiming.
    outbox.add(event(2))
    await asyncio.sleep(0.01)
    outbox.add(event(3))
    publisher.wake("default")
    await until(outbox.settled, "the trickled events to be settled")

    assert claimed(outbox)[:2] == [[1], [2, 3]]  # no claim between the batch and the trickle
    assert [r.ids for r in segment.requests] == [[mid(event(1))], [mid(event(2)), mid(event(3))]]


async def test_after_a_full_claim_the_next_claim_does_not_wait(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    outbox.add(*(event(n) for n in range(1, 6)))

    # a linger would outlast the wait below; only the last, short claim may linger
    await publish(outbox, segment, concurrency=1, linger_s=30, batch_max_events=2,
                  stop_timeout_s=0.1)
    await until(outbox.settled, "every event to be settled", timeout_s=3)

    assert claimed(outbox)[:3] == [[1, 2], [3, 4], [5]]


# --- 9. stop ----------------------------------------------------------------------------------


async def test_stop_during_a_hanging_send_releases_the_in_flight_leases(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    segment.gate = threading.Event()  # Segment does not answer until teardown
    outbox.add(event(1), event(2), event(3))

    publisher = await publish(outbox, segment, stop_timeout_s=0.2)
    await until(lambda: segment.requests, "the batch to reach Segment")
    await publisher.stop()

    [release] = outbox.calls_to("release")
    assert release.args == {"ids": [1, 2, 3], "owner": OWNER, "until": None}
    assert [(r.status, r.lease_owner) for r in outbox.rows.values()] == [("pending", None)] * 3
    assert [c.method for c in outbox.calls if c.method.startswith("mark_")] == []
    assert segment.requests[0].status is None  # still hanging


# --- what the first review of these tests found -------------------------------------------------


async def test_a_429_during_a_bisect_holds_back_the_other_half(publish: Start) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    events = [event(n, user=f"u{n}") for n in range(1, 5)]
    segment.reject(mid(events[3]), "invalid message")  # the whole batch: 400, so it is halved
    segment.fail(lambda: api_error(429, "slow down", {"Retry-After": "1"}), times=1)
    outbox.add(*events)

    await publish(outbox, segment)
    await until(lambda: outbox.calls_to("release"), "the second half to be given back")

    assert [r.status for r in segment.requests] == [400, 429]  # the second half was not sent
    [hold] = outbox.calls_to("hold_source")
    [release] = outbox.calls_to("release")
    assert release.args == {"ids": [3, 4], "owner": OWNER, "until": hold.args["until"]}
    await until(outbox.settled, "every event to be settled after the hold")
    assert outbox.statuses() == {1: "delivered", 2: "delivered", 3: "delivered", 4: "dead"}


async def test_an_oversize_first_event_leaves_the_identify_to_the_users_next_event(
    publish: Start,
) -> None:
    outbox, segment = FakeOutbox(), ScriptedSegment()
    outbox.add(event(1, properties={"blob": "x" * 40_000}), event(2))

    await publish(outbox, segment, IDENTIFYING)
    await until(outbox.settled, "every event to be settled")

    [request] = segment.requests
    assert request.kinds == [("identify", "u1"), ("track", "u1")]
    assert request.ids[1] == mid(event(2))
    assert outbox.statuses() == {1: "dead", 2: "delivered"}
    assert outbox.known["default"] == {"user:u1"}


class FailingSettleOutbox(FakeOutbox):
    """An outbox whose mark_delivered has a bug: it records the call, then raises."""

    async def mark_delivered(self, ids: Any) -> None:
        self._record("mark_delivered", ids=list(ids))
        raise RuntimeError("a bug in settling")


async def test_a_worker_that_fails_ends_the_run_with_no_other_worker_left_running() -> None:
    outbox = FailingSettleOutbox()
    other_started, release_other, other_returned = (threading.Event() for _ in range(3))

    def sender(write_key: str, messages: list[dict[str, Any]]) -> None:
        if write_key == OTHER_WRITE_KEY:  # a slow Segment for the other source
            other_started.set()
            release_other.wait(10)
            other_returned.set()
        else:  # the default source's batch is accepted once the other one is in flight
            other_started.wait(10)

    outbox.add(event(1), event(2, source="other"))
    publisher = SegmentPublisher([DEFAULT, OTHER], PublisherOptions(**FAST), sender=sender,
                                 owner=OWNER)
    await publisher.start(outbox)
    try:
        await until(lambda: outbox.calls_to("mark_delivered"), "the failing settle")
        await publisher.stop()  # the failed run is over: nothing of it may act after this
        calls_after_stop = len(outbox.calls)
        release_other.set()
        await until(other_returned.is_set, "the slow send to return")
        for _ in range(20):  # let a worker that outlived the run take its next steps
            await asyncio.sleep(0.01)
        assert outbox.calls[calls_after_stop:] == []
    finally:
        release_other.set()
        await publisher.stop()
