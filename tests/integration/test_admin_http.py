"""The operator endpoints over real HTTP, through create_app, on SQLite and on PostgreSQL.

/status (JSON and HTML), /replay, /metrics, /openapi.yaml, admin auth, and retention.

Two kinds of set-up:
- `flow`: the real app with the real Segment publisher (service.wiring.build_publisher) talking
  to FakeSegment over loopback, and one shared Metrics. A realistic flow runs through it: some
  events delivered, one refused by Segment with a 400 (so it goes dead), one rejected at the
  webhook, one duplicate post.
- `admin`: the real app without a publisher, so that stored rows stay where a test puts them;
  rows are seeded through the store's API and aged or marked with SQL updates through the
  store's tortoise models. Every assertion is on what the service answers or stores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models import IngestBatch, NewEvent, NewReject, Store
from models.tables import Event, RejectedEvent
from outbound import mapping
from service.app import STORE, create_app, run_retention
from service.metrics import Metrics
from service.wiring import build_publisher
from tests.conftest import TOKEN, make_settings, stored_events
from tests.fake_segment import FakeSegment

UTC = timezone.utc
ADMIN_TOKEN = "admin-token-for-tests-0123"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
CONTRACT_KEYS = {
    "pending", "delivered", "dead", "rejected", "duplicates", "oldest_pending_age_s",
    "last_delivery_at", "last_error",
}
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_S = 15.0


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {encoded}"}


def recent_ts() -> int:
    """A Unix timestamp the parser accepts (not in the future, well after 2000)."""
    return int(time.time()) - 120


def ev(key: str, *, event: str = "open", uid: str = "42", **extra: Any) -> dict[str, Any]:
    return {"id": key, "event": event, "timestamp": recent_ts(), "subscriber": {"uid": uid},
            **extra}


def mid(key: str, source: str = "default") -> str:
    return mapping.message_id(source, key)


async def post_events(client: TestClient, body: Any, token: str = TOKEN) -> tuple[int, Any]:
    async with client.post(f"/webhooks/nudgespot/{token}", json=body) as resp:
        return resp.status, await resp.json()


async def event_rows(store: Store) -> list[Event]:
    return await stored_events(store)


async def statuses(store: Store) -> dict[str, str]:
    return {(r.dedup_key if r.source == "default" else f"{r.source}/{r.dedup_key}"): r.status
            for r in await event_rows(store)}


async def reject_rows(store: Store) -> list[RejectedEvent]:
    with store.db.orm():
        return await RejectedEvent.all().order_by("id")


async def wait_statuses(store: Store, expected: dict[str, str], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        current = await statuses(store)
        if current == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"rows never reached {expected}; they are {current}")
        await asyncio.sleep(0.05)


# --- seeding (set-up only) -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    status: str = "dead"
    source: str = "default"
    event_type: str = "email_opened"
    received_at: datetime | None = None
    delivered_at: datetime | None = None


async def seed(store: Store, *rows: Row) -> None:
    """Store events through the store's API, then put them in the wanted state with SQL."""
    now = datetime.now(UTC)
    events = [
        NewEvent(r.source, r.key, r.event_type, now - timedelta(minutes=5),
                 json.dumps({"user_id": "42"}), json.dumps({"id": r.key}))
        for r in rows
    ]
    await store.ingest.write([IngestBatch(events=events)])
    with store.db.orm():
        for r in rows:
            changes: dict[str, Any] = {"status": r.status}
            if r.status == "dead":
                changes.update(attempts=1, last_error="Segment answered 400: seeded")
            if r.status == "delivered":
                changes.update(attempts=1, delivered_at=r.delivered_at or now)
            if r.received_at is not None:
                changes["received_at"] = r.received_at
            await Event.filter(source=r.source, dedup_key=r.key).update(**changes)
    await store.admin.recount()  # the counters follow the rows changed behind their back


async def seed_rejects(store: Store, *rejects: NewReject) -> None:
    await store.ingest.write([IngestBatch(rejects=list(rejects))])


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeSegment:
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


@pytest.fixture
async def admin(aiohttp_client: Any, db_url: str) -> TestClient:
    """The app with an admin token and no publisher: stored rows stay as tests put them."""
    settings = make_settings(db_url, admin={"token": ADMIN_TOKEN})
    return await aiohttp_client(create_app(settings, retention=False))


FLOW_DONE = {"f-1": "delivered", "f-2": "delivered", "f-3": "delivered", "f-4": "delivered",
             "f-dead": "dead"}
FLOW_FIGURES = {"pending": 0, "delivered": 4, "dead": 1, "rejected": 2, "duplicates": 3}


@dataclass
class Flow:
    client: TestClient
    fake: FakeSegment
    store: Store
    started: datetime


@pytest.fixture
async def flow(aiohttp_client: Any, fake: FakeSegment, db_url: str) -> Flow:
    """The realistic flow, finished: 4 delivered, 1 dead (400), 2 rejected, 3 duplicates.

    The figures differ from one another so that no two can be confused. Segment refuses the
    first batch (it holds f-dead); the publisher narrows it down by halves, so f-1 and f-2 go
    together in one delivered batch, f-3 and f-4 alone, and f-dead goes dead.
    """
    settings = make_settings(
        db_url,
        admin={"token": ADMIN_TOKEN},
        segment={"endpoint": fake.url},  # type: ignore[attr-defined]
        publisher={"max_attempts": 1, "interval_s": 0.2, "retry_base_s": 0.05},
    )
    metrics = Metrics()
    publisher = build_publisher(settings, observer=metrics)
    client = await aiohttp_client(
        create_app(settings, publisher=publisher, metrics=metrics, retention=False))
    store = client.app[STORE]
    started = datetime.now(UTC)
    fake.reject(mid("f-dead"), reason="invalid message")  # Segment answers 400 to this event
    status, answer = await post_events(client, [
        ev("f-1"),
        ev("f-2", event="click", uid="43", link={"url": "/sale"}),
        ev("f-3", uid="46"),
        ev("f-4", uid="47"),
        ev("f-dead", uid="44", message={"id": "m-1", "subject": XSS}),
        {"id": "f-bad", "event": XSS, "timestamp": recent_ts(), "subscriber": {"uid": "45"}},
        {"id": "f-bad-2", "event": "open", "timestamp": recent_ts()},
    ])
    assert status == 200, answer
    assert (answer["accepted"], answer["duplicates"], len(answer["rejected"])) == (5, 0, 2)
    status, answer = await post_events(client, [ev("f-1"), ev("f-2"), ev("f-3")])
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 3, "rejected": []})
    await wait_statuses(store, FLOW_DONE)
    return Flow(client, fake, store, started)


async def get_status(client: TestClient) -> dict[str, Any]:
    async with client.get("/status", headers=BEARER) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        return await resp.json()


async def get_status_html(client: TestClient) -> str:
    async with client.get("/status", headers={**BEARER, "Accept": "text/html"}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html"
        return await resp.text()


async def replay(client: TestClient, body: Any) -> tuple[int, Any]:
    async with client.post("/replay", json=body, headers=BEARER) as resp:
        return resp.status, await resp.json()


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and return every sample as {(name, sorted labels): value}."""
    async with client.get("/metrics", headers=BEARER) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- admin auth --------------------------------------------------------------------------------

ADMIN_REQUESTS = [("GET", "/status"), ("POST", "/replay"), ("GET", "/metrics")]


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
async def test_admin_endpoint_without_credentials_is_401_with_basic_challenge(
    admin: TestClient, method: str, path: str
) -> None:
    async with admin.request(method, path, json={} if method == "POST" else None) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "error" in await resp.json()


async def test_wrong_bearer_token_is_401(admin: TestClient) -> None:
    async with admin.get("/status", headers={"Authorization": "Bearer not-the-token"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_right_bearer_token_is_200(admin: TestClient) -> None:
    async with admin.get("/status", headers=BEARER) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("user", ["admin", "", "someone-else"])
async def test_basic_with_any_user_and_the_token_as_password_is_200(
    admin: TestClient, user: str
) -> None:
    async with admin.get("/status", headers=basic(user, ADMIN_TOKEN)) as resp:
        assert resp.status == 200


async def test_basic_with_wrong_password_is_401(admin: TestClient) -> None:
    async with admin.get("/status", headers=basic("admin", "wrong")) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_basic_with_the_token_as_user_and_no_password_is_401(admin: TestClient) -> None:
    async with admin.get("/status", headers=basic(ADMIN_TOKEN, "")) as resp:
        assert resp.status == 401


async def test_admin_token_prefix_is_401(admin: TestClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}
    async with admin.get("/status", headers=headers) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
async def test_without_admin_token_loopback_client_is_let_in(
    aiohttp_client: Any, db_url: str, method: str, path: str
) -> None:
    # The test client connects from 127.0.0.1. The other branch (403 for a non-loopback peer
    # while admin.token is empty) cannot be reached from a loopback test client; it rests on
    # service.admin_auth.is_loopback, covered in tests/unit/test_admin_auth.py.
    client = await aiohttp_client(create_app(make_settings(db_url), retention=False))
    async with client.request(method, path, json={} if method == "POST" else None) as resp:
        assert resp.status == 200, await resp.text()


# --- /status JSON ----------------------------------------------------------------------------


async def test_status_json_has_every_contract_key_for_every_configured_source(flow: Flow) -> None:
    document = await get_status(flow.client)
    assert set(document["sources"]) == {"default", "other"}
    for name, figures in document["sources"].items():
        assert set(figures) >= CONTRACT_KEYS, (name, sorted(CONTRACT_KEYS - set(figures)))


async def test_status_json_counts_match_the_flow(flow: Flow) -> None:
    figures = (await get_status(flow.client))["sources"]["default"]
    assert {k: figures[k] for k in FLOW_FIGURES} == FLOW_FIGURES
    assert figures["oldest_pending_age_s"] is None


async def test_status_json_last_delivery_at_is_when_the_flow_delivered(flow: Flow) -> None:
    figures = (await get_status(flow.client))["sources"]["default"]
    at = datetime.fromisoformat(figures["last_delivery_at"])
    assert at.tzinfo is not None
    assert flow.started - timedelta(seconds=2) <= at <= datetime.now(UTC) + timedelta(seconds=2)


async def test_status_json_last_error_is_segments_400(flow: Flow) -> None:
    figures = (await get_status(flow.client))["sources"]["default"]
    assert "400" in figures["last_error"]
    assert "invalid message" in figures["last_error"]


async def test_status_json_source_without_data_has_zeros_and_nulls(flow: Flow) -> None:
    figures = (await get_status(flow.client))["sources"]["other"]
    assert {k: figures[k] for k in CONTRACT_KEYS} == {
        "pending": 0, "delivered": 0, "dead": 0, "rejected": 0, "duplicates": 0,
        "oldest_pending_age_s": None, "last_delivery_at": None, "last_error": None,
    }


async def test_status_json_lists_the_dead_and_the_rejected_event(flow: Flow) -> None:
    document = await get_status(flow.client)
    [dead] = document["latest_dead"]
    assert (dead["source"], dead["event"], dead["event_id"]) == (
        "default", "email_opened", "f-dead")
    assert XSS in dead["payload"]  # JSON carries the data as it is; only HTML must escape it
    rejected = document["latest_rejected"]
    assert {r["source"] for r in rejected} == {"default"}
    assert sorted(json.loads(r["payload"])["id"] for r in rejected) == ["f-bad", "f-bad-2"]


async def test_status_json_reports_pending_count_and_oldest_pending_age(admin: TestClient) -> None:
    store = admin.app[STORE]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await seed(store, Row("p-old", "pending", received_at=hour_ago), Row("p-new", "pending"))

    figures = (await get_status(admin))["sources"]["default"]

    assert figures["pending"] == 2
    assert 3600 <= figures["oldest_pending_age_s"] < 3600 + 600


# --- /status HTML ----------------------------------------------------------------------------


def html_figures(page: str, source: str) -> dict[str, str]:
    row = re.search(rf'<tr data-source="{source}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {source} in the page"
    return dict(re.findall(r'data-key="(\w+)">([^<]*)</td>', row.group(1)))


async def test_status_html_shows_the_flow_numbers(flow: Flow) -> None:
    figures = html_figures(await get_status_html(flow.client), "default")
    assert {k: figures.get(k) for k in FLOW_FIGURES} == {
        k: str(v) for k, v in FLOW_FIGURES.items()}


async def test_status_html_escapes_script_from_a_rejected_events_payload(flow: Flow) -> None:
    page = await get_status_html(flow.client)
    section = page.split('<table id="rejected">', 1)[1].split("</table>", 1)[0]
    assert XSS_ESCAPED in section
    assert XSS not in page


async def test_status_html_escapes_script_from_a_dead_events_subject(flow: Flow) -> None:
    page = await get_status_html(flow.client)
    section = page.split('<table id="dead">', 1)[1].split("</table>", 1)[0]
    assert "f-dead" in section
    assert XSS_ESCAPED in section
    assert XSS not in page


async def test_status_html_has_no_script_element_but_its_own(flow: Flow) -> None:
    page = await get_status_html(flow.client)
    assert page.lower().count("<script") == 1


async def test_status_html_references_no_other_host(flow: Flow) -> None:
    page = await get_status_html(flow.client)
    assert re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}", page, re.I) == []
    assert re.findall(r"<(?:link|img|iframe)\b", page, re.I) == []
    assert re.findall(r"<script[^>]*\bsrc=", page, re.I) == []


async def test_status_json_is_chosen_when_the_client_does_not_accept_html(flow: Flow) -> None:
    async with flow.client.get("/status", headers={**BEARER, "Accept": "*/*"}) as resp:
        assert resp.content_type == "application/json"


# --- /replay -----------------------------------------------------------------------------------


async def test_replayed_dead_event_is_delivered_with_the_same_message_id(flow: Flow) -> None:
    # The event went dead because Segment refused exactly this messageId.
    assert mid("f-dead") not in flow.fake.delivered_ids()
    flow.fake.reject_ids.clear()  # Segment accepts it now

    status, answer = await replay(flow.client, {})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1})
    await flow.fake.wait_for(5, timeout_s=WAIT_S)
    assert mid("f-dead") in flow.fake.delivered_ids()
    await wait_statuses(flow.store, {**FLOW_DONE, "f-dead": "delivered"})


async def test_replay_by_default_requeues_dead_events_only(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"), Row("d-2"), Row("x-1", "delivered"), Row("p-1", "pending"))

    status, answer = await replay(admin, {})

    assert (status, answer) == (200, {"matched": 2, "requeued": 2})
    assert await statuses(store) == {
        "d-1": "pending", "d-2": "pending", "x-1": "delivered", "p-1": "pending"}


async def test_requeued_events_start_over_with_no_attempts_and_no_lease(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"))

    await replay(admin, {})

    [row] = await event_rows(store)
    assert (row.status, row.attempts, row.lease_owner, row.delivered_at) == (
        "pending", 0, None, None)
    assert row.next_attempt_at <= datetime.now(UTC)


async def test_replay_dry_run_counts_without_changing_rows(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"), Row("d-2"), Row("x-1", "delivered"))
    before = [(r.dedup_key, r.status, r.attempts, r.updated_at) for r in await event_rows(store)]

    status, answer = await replay(admin, {"dry_run": True})

    assert (status, answer) == (200, {"matched": 2, "requeued": 0})
    after = [(r.dedup_key, r.status, r.attempts, r.updated_at) for r in await event_rows(store)]
    assert after == before


async def test_replay_source_filter_touches_only_that_source(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"), Row("o-1", source="other"))

    status, answer = await replay(admin, {"source": "other"})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1})
    assert await statuses(store) == {"d-1": "dead", "other/o-1": "pending"}


async def test_replay_event_filter_takes_aliases(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-open"), Row("d-click", event_type="email_clicked"))

    status, answer = await replay(admin, {"event": ["opened"]})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1})
    assert await statuses(store) == {"d-open": "pending", "d-click": "dead"}


async def test_replay_ids_filter_touches_only_those_event_ids(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"), Row("d-2"), Row("d-3"))

    status, answer = await replay(admin, {"ids": ["d-1", "d-3", "absent"]})

    assert (status, answer) == (200, {"matched": 2, "requeued": 2})
    assert await statuses(store) == {"d-1": "pending", "d-2": "dead", "d-3": "pending"}


@pytest.mark.parametrize(
    ("window", "requeued"),
    [
        ({"since": "2026-02-01T00:00:00Z"}, {"d-feb", "d-mar"}),
        ({"until": "2026-02-01T00:00:00Z"}, {"d-jan"}),
        ({"since": "2026-01-15T01:00:00+01:00", "until": "2026-02-15T00:00:00Z"}, {"d-feb"}),
    ],
    ids=["since-inclusive", "until-exclusive", "window-with-offset"],
)
async def test_replay_since_and_until_select_by_received_time(
    admin: TestClient, window: dict[str, str], requeued: set[str]
) -> None:
    store = admin.app[STORE]
    await seed(
        store,
        Row("d-jan", received_at=datetime(2026, 1, 1, tzinfo=UTC)),
        Row("d-feb", received_at=datetime(2026, 2, 1, tzinfo=UTC)),
        Row("d-mar", received_at=datetime(2026, 3, 1, tzinfo=UTC)),
    )

    status, answer = await replay(admin, window)

    assert (status, answer) == (200, {"matched": len(requeued), "requeued": len(requeued)})
    assert {k for k, v in (await statuses(store)).items() if v == "pending"} == requeued


async def test_replay_status_filter_requeues_delivered_events_when_asked(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"), Row("x-1", "delivered"))

    status, answer = await replay(admin, {"status": ["delivered"]})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1})
    assert await statuses(store) == {"d-1": "dead", "x-1": "pending"}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"colour": "red"}, "colour"),
        ({"status": ["failed"]}, "failed"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"event": ["email_exploded"]}, "email_exploded"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"ids": [1, 2]}, "ids"),
        (["dead"], "object"),
    ],
    ids=["unknown-field", "bad-status", "since-without-zone", "until-not-a-time",
         "unknown-event", "dry-run-not-bool", "ids-not-strings", "not-an-object"],
)
async def test_bad_replay_body_is_400_naming_the_problem_and_changes_nothing(
    admin: TestClient, body: Any, mentions: str
) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"))

    status, answer = await replay(admin, body)

    assert status == 400
    assert mentions in answer["error"]
    assert await statuses(store) == {"d-1": "dead"}


async def test_replay_body_that_is_not_json_is_400(admin: TestClient) -> None:
    headers = {**BEARER, "Content-Type": "application/json"}
    async with admin.post("/replay", data=b"{not json", headers=headers) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_replay_with_a_non_json_content_type_is_415(
    admin: TestClient, content_type: str
) -> None:
    store = admin.app[STORE]
    await seed(store, Row("d-1"))
    headers = {**BEARER, "Content-Type": content_type}

    async with admin.post("/replay", data=b"{}", headers=headers) as resp:
        assert resp.status == 415
        assert "error" in await resp.json()
    assert await statuses(store) == {"d-1": "dead"}


# --- /replay {"rejected": true} --------------------------------------------------------------


def valid_raw(key: str) -> str:
    return json.dumps(ev(key))


INVALID_RAW = json.dumps({"id": "q-bad", "event": "open", "subscriber": {"uid": "1"}})


async def test_replay_rejected_answers_matched_requeued_and_still_rejected(
    admin: TestClient,
) -> None:
    await seed_rejects(admin.app[STORE],
                       NewReject("default", 0, valid_raw("q-ok"), "was: unknown event"),
                       NewReject("default", 1, INVALID_RAW, "timestamp is required"))

    status, answer = await replay(admin, {"rejected": True})

    assert (status, answer) == (200, {"matched": 2, "requeued": 1, "still_rejected": 1})


async def test_replay_rejected_stores_the_event_that_now_parses_as_pending(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    await seed_rejects(store, NewReject("default", 0, valid_raw("q-ok"), "was: unknown event"),
                       NewReject("default", 1, INVALID_RAW, "timestamp is required"))

    await replay(admin, {"rejected": True})

    [row] = await event_rows(store)
    assert (row.source, row.dedup_key, row.event_type, row.status) == (
        "default", "q-ok", "email_opened", "pending")


async def test_replay_rejected_leaves_the_invalid_event_quarantined(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed_rejects(store, NewReject("default", 0, valid_raw("q-ok"), "was: unknown event"),
                       NewReject("default", 1, INVALID_RAW, "timestamp is required"))

    await replay(admin, {"rejected": True})

    assert [(r.payload, r.reason) for r in await reject_rows(store)] == [
        (INVALID_RAW, "timestamp is required")]


async def test_replay_rejected_dry_run_admits_nothing(admin: TestClient) -> None:
    store = admin.app[STORE]
    await seed_rejects(store, NewReject("default", 0, valid_raw("q-ok"), "was: unknown event"))

    status, answer = await replay(admin, {"rejected": True, "dry_run": True})

    assert (status, answer) == (200, {"matched": 1, "requeued": 0, "still_rejected": 0})
    assert await event_rows(store) == []
    assert len(await reject_rows(store)) == 1


async def test_replay_rejected_admits_a_whole_quarantined_body_that_now_parses(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    body = json.dumps([ev("b-1"), ev("b-2", event="click")])
    await seed_rejects(store, NewReject("default", None, body, "was: body not accepted"))

    status, answer = await replay(admin, {"rejected": True})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1, "still_rejected": 0})
    assert await statuses(store) == {"b-1": "pending", "b-2": "pending"}
    assert await reject_rows(store) == []


async def test_replay_rejected_with_a_source_admits_only_that_sources_rejects(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    await seed_rejects(store, NewReject("default", 0, valid_raw("q-1"), "old"),
                       NewReject("other", 0, valid_raw("q-2"), "old"))

    status, answer = await replay(admin, {"rejected": True, "source": "other"})

    assert (status, answer) == (200, {"matched": 1, "requeued": 1, "still_rejected": 0})
    assert await statuses(store) == {"other/q-2": "pending"}
    assert [r.source for r in await reject_rows(store)] == ["default"]


# --- /metrics ----------------------------------------------------------------------------------


async def test_metrics_count_webhook_requests_by_status(flow: Flow) -> None:
    await post_events(flow.client, [ev("m-1")], token="no-such-token")
    samples = await scrape(flow.client)
    name = "nudgespot_webhook_requests_total"
    assert sample(samples, name, source="default", status="200") == 2
    assert sample(samples, name, source="-", status="401") == 1


async def test_metrics_count_events_accepted_duplicate_and_rejected(flow: Flow) -> None:
    samples = await scrape(flow.client)
    name = "nudgespot_events_total"
    assert sample(samples, name, source="default", outcome="accepted") == 5
    assert sample(samples, name, source="default", outcome="duplicate") == 3
    assert sample(samples, name, source="default", outcome="rejected") == 2


async def test_metrics_count_deliveries_delivered_and_dead_per_source(flow: Flow) -> None:
    samples = await scrape(flow.client)
    name = "nudgespot_deliveries_total"
    assert sample(samples, name, source="default", outcome="delivered") == 4
    assert sample(samples, name, source="default", outcome="dead") == 1
    assert sample(samples, name, source="other", outcome="delivered") is None


async def test_metrics_histogram_of_batch_sends_has_delivered_and_failed_batches(
    flow: Flow,
) -> None:
    samples = await scrape(flow.client)
    sent = [r for r in flow.fake.received if r.status in (200, 400)]
    delivered = sample(samples, "nudgespot_batch_send_seconds_count",
                       source="default", outcome="delivered")
    failed = sample(samples, "nudgespot_batch_send_seconds_count",
                    source="default", outcome="failed")
    assert delivered == len([r for r in sent if r.status == 200]) and delivered >= 1
    assert failed == len([r for r in sent if r.status == 400]) and failed >= 1


async def test_metrics_histogram_of_ingest_to_delivery_has_one_sample_per_delivered_event(
    flow: Flow,
) -> None:
    samples = await scrape(flow.client)
    count = sample(samples, "nudgespot_ingest_to_delivery_seconds_count", source="default")
    total = sample(samples, "nudgespot_ingest_to_delivery_seconds_sum", source="default")
    assert count == 4
    assert total is not None and total >= 0


async def test_metrics_gauges_after_the_flow_show_no_backlog_and_one_dead(flow: Flow) -> None:
    samples = await scrape(flow.client)
    assert sample(samples, "nudgespot_backlog_events", source="default") == 0
    assert sample(samples, "nudgespot_dead_events", source="default") == 1
    assert sample(samples, "nudgespot_oldest_pending_age_seconds", source="default") == 0


async def test_metrics_gauges_show_backlog_and_oldest_pending_age(admin: TestClient) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await seed(admin.app[STORE], Row("p-1", "pending", received_at=hour_ago),
               Row("p-2", "pending"), Row("p-3", "pending"), Row("d-1"))

    samples = await scrape(admin)

    assert sample(samples, "nudgespot_backlog_events", source="default") == 3
    assert sample(samples, "nudgespot_dead_events", source="default") == 1
    age = sample(samples, "nudgespot_oldest_pending_age_seconds", source="default")
    assert age is not None and 3600 <= age < 3600 + 600


# --- retention ---------------------------------------------------------------------------------


@pytest.fixture
async def aged(store: Store) -> Store:
    """Rows of every kind, some older than 30 days, some newer; nothing purged yet."""
    now = datetime.now(UTC)
    old, new = now - timedelta(days=40), now - timedelta(days=10)
    await seed(
        store,
        Row("old-delivered", "delivered", received_at=old, delivered_at=old),
        Row("new-delivered", "delivered", received_at=old, delivered_at=new),
        Row("old-pending", "pending", received_at=old),
        Row("old-dead", "dead", received_at=old),
    )
    await seed_rejects(store, NewReject("default", 0, '{"n": "old"}', "old reason"),
                       NewReject("default", 0, '{"n": "new"}', "new reason"))
    with store.db.orm():
        await Event.filter(dedup_key__in=["old-pending", "old-dead"]).update(updated_at=old)
        await RejectedEvent.filter(reason="old reason").update(received_at=old)
        await RejectedEvent.filter(reason="new reason").update(
            received_at=now - timedelta(days=5))
    await store.admin.recount()
    return store


async def test_retention_returns_how_many_events_and_rejects_it_deleted(aged: Store) -> None:
    assert await run_retention(aged, days=30) == (1, 1)


async def test_retention_deletes_delivered_events_older_than_the_window(aged: Store) -> None:
    await run_retention(aged, days=30)
    assert "old-delivered" not in await statuses(aged)


async def test_retention_keeps_delivered_events_inside_the_window(aged: Store) -> None:
    await run_retention(aged, days=30)
    assert (await statuses(aged)).get("new-delivered") == "delivered"


async def test_retention_keeps_pending_and_dead_events_however_old(aged: Store) -> None:
    await run_retention(aged, days=30)
    current = await statuses(aged)
    assert (current.get("old-pending"), current.get("old-dead")) == ("pending", "dead")


async def test_retention_deletes_old_rejects_and_keeps_new_ones(aged: Store) -> None:
    await run_retention(aged, days=30)
    assert [r.reason for r in await reject_rows(aged)] == ["new reason"]


async def test_retention_run_twice_deletes_nothing_more(aged: Store) -> None:
    await run_retention(aged, days=30)
    assert await run_retention(aged, days=30) == (0, 0)


async def age_delivered(store: Store, key: str, days: int) -> None:
    at = datetime.now(UTC) - timedelta(days=days)
    with store.db.orm():
        await Event.filter(dedup_key=key).update(status="delivered", delivered_at=at)
    await store.admin.recount()


async def test_purged_event_is_accepted_again_as_dedup_window_equals_retention(
    admin: TestClient,
) -> None:
    store = admin.app[STORE]
    assert (await post_events(admin, [ev("r-1")]))[1]["accepted"] == 1
    await age_delivered(store, "r-1", days=31)

    assert await run_retention(store, days=30) == (1, 0)
    status, answer = await post_events(admin, [ev("r-1")])

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert await statuses(store) == {"r-1": "pending"}


async def test_event_inside_the_retention_window_is_still_a_duplicate(admin: TestClient) -> None:
    store = admin.app[STORE]
    await post_events(admin, [ev("r-1")])
    await age_delivered(store, "r-1", days=29)

    assert await run_retention(store, days=30) == (0, 0)
    status, answer = await post_events(admin, [ev("r-1")])

    assert (status, answer) == (200, {"accepted": 0, "duplicates": 1, "rejected": []})


# --- while the database is unreachable ------------------------------------------------------

UNREACHABLE_POSTGRES_URL = "postgres://root@127.0.0.1:1/x"


@pytest.fixture
async def db_down(aiohttp_client: Any) -> TestClient:
    settings = make_settings(UNREACHABLE_POSTGRES_URL, admin={"token": ADMIN_TOKEN})
    return await aiohttp_client(create_app(settings, migrate_sqlite=False, retention=False))


async def test_status_while_the_database_is_unreachable_is_503_with_retry_after(
    db_down: TestClient,
) -> None:
    async with db_down.get("/status", headers=BEARER) as resp:
        assert resp.status == 503
        assert resp.headers.get("Retry-After")
        assert "error" in await resp.json()


async def test_replay_while_the_database_is_unreachable_is_503_with_retry_after(
    db_down: TestClient,
) -> None:
    async with db_down.post("/replay", json={}, headers=BEARER) as resp:
        assert resp.status == 503
        assert resp.headers.get("Retry-After")
        assert "error" in await resp.json()


async def test_metrics_while_the_database_is_unreachable_still_serves_the_counters(
    db_down: TestClient,
) -> None:
    await post_events(db_down, [ev("m-1")], token="no-such-token")
    async with db_down.get("/metrics", headers=BEARER) as resp:
        assert resp.status == 200
        assert 'nudgespot_webhook_requests_total{source="-",status="401"} 1.0' in await resp.text()


async def test_readyz_while_the_database_is_unreachable_is_503(db_down: TestClient) -> None:
    # The control for the three above: the same app does see that the database is down.
    async with db_down.get("/readyz") as resp:
        assert resp.status == 503


# --- /openapi.yaml -----------------------------------------------------------------------------


async def test_openapi_yaml_is_served_without_auth_and_parses(admin: TestClient) -> None:
    async with admin.get("/openapi.yaml") as resp:
        assert resp.status == 200
        assert "yaml" in resp.content_type
        document = yaml.safe_load(await resp.text())
    assert document["openapi"].startswith("3.")
    assert {"/status", "/replay", "/metrics"} <= set(document["paths"])
