"""Per-source formats over real HTTP on loopback, through create_app, on SQLite and PostgreSQL.

One settings document configures a source for each preset (SendGrid signed with a key pair made
here, Mailgun and Customer.io with signing secrets, Postmark behind HTTP Basic), a format written
from scratch under `formats:` and one that extends a preset, plus a plain Nudgespot source.
Bodies are the providers' published samples in tests/fixtures/formats/<provider>/, posted as
json.dumps(body) and signed here independently of the project. What the service stored is read
back through the application's store; what reached Segment, from tests/fake_segment.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from models import Store
from models.tables import Event, RejectedEvent
from outbound import mapping
from service import __version__ as SERVICE_VERSION
from service.app import STORE, create_app
from service.config import Settings
from service.wiring import build_publisher
from tests.conftest import make_settings, stored_events
from tests.fake_segment import FakeSegment
from tests.integration.test_cli_admin import SCRIPT, clean_env

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
ADMIN_TOKEN = "admin-token-for-format-tests-0123"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON_HEADERS = {"Content-Type": "application/json"}
WAIT_S = 15.0

MISMATCH = "signature does not match the body"
STALE = "signature timestamp is more than 300 s from now"

# --- the sources and their secrets ----------------------------------------------------------

SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
SG_VERIFICATION_KEY = base64.b64encode(
    SG_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MG_KEY = "key-mailgun-signing-0123456789abcdef"
CIO_SECRET = "cio-signing-secret-0123456789"
PM_BASIC_AUTH = "hook:s3cret"

TOKENS = {
    "ns": "tok-nudgespot-0001",
    "sg": "tok-sendgrid-0001",
    "mg": "tok-mailgun-0001",
    "cio": "tok-customerio-0001",
    "pm": "tok-postmark-0001",
    "shop": "tok-shop-0001",
    "sgx": "tok-sendgrid-extended-0001",
}
WRITE_KEYS = {name: f"WK-{name}" for name in TOKENS}


def sources() -> list[dict[str, Any]]:
    def source(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "token": TOKENS[name], "write_key": WRITE_KEYS[name], **extra}

    return [
        source("ns"),
        source("sg", format="sendgrid", verification_key=SG_VERIFICATION_KEY),
        source("mg", format="mailgun", signing_secret=MG_KEY),
        source("cio", format="customerio", signing_secret=CIO_SECRET),
        source("pm", format="postmark", basic_auth=PM_BASIC_AUTH),
        source("shop", format="shop"),
        source("sgx", format="sendgrid-dropped"),
    ]


# A format written from scratch: {"orders": [...]} with one event per order.
SHOP_V1: dict[str, Any] = {
    "auth": "none",
    "events": "orders",
    "timestamp_unit": "s",
    "fields": {
        "id": "order_id",
        "event": "kind",
        "timestamp": "at",
        "email": "buyer.email",
        "user_id": "buyer.id",
        "properties": "{total: total}",
    },
    "event_names": {"mailed": "Email Sent"},
    "ignore": ["cart.*"],
}
# The same format fixed: it now maps "bought" and drops "browsed" on purpose.
SHOP_V2: dict[str, Any] = {
    **SHOP_V1,
    "event_names": {"mailed": "Email Sent", "bought": "Order Completed"},
    "ignore": ["cart.*", "browsed"],
}
# A preset extended: SendGrid's "dropped" becomes a custom event; the rest is inherited.
SENDGRID_DROPPED = {"extends": "sendgrid", "event_names": {"dropped": "Email Dropped"}}


def settings_for(db_url: str, *, shop: dict[str, Any] = SHOP_V1, **sections: Any) -> Settings:
    return make_settings(
        db_url,
        sources=sources(),
        formats={"shop": shop, "sendgrid-dropped": SENDGRID_DROPPED},
        admin={"token": ADMIN_TOKEN},
        **sections,
    )


# --- bodies and their credentials -------------------------------------------------------------


def fixture_body(provider: str, name: str) -> Any:
    path = FIXTURES / provider / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))["body"]


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def sendgrid_headers(
    body: bytes, *, key: ec.EllipticCurvePrivateKey = SG_KEY, at: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {**JSON_HEADERS, SG_SIGNATURE: base64.b64encode(signature).decode("ascii"),
            SG_TIMESTAMP: stamp}


def mailgun_body(event_data: Any, *, key: str = MG_KEY, at: int | None = None) -> bytes:
    stamp = str(int(time.time()) if at is None else at)
    token = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4"
    mac = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return encode({"signature": {"timestamp": stamp, "token": token, "signature": mac},
                   "event-data": event_data})


def customerio_headers(
    body: bytes, *, secret: str = CIO_SECRET, at: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    mac = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {**JSON_HEADERS, "X-CIO-Signature": mac, "X-CIO-Timestamp": stamp}


def basic_headers(credentials: str = PM_BASIC_AUTH) -> dict[str, str]:
    encoded = base64.b64encode(credentials.encode()).decode("ascii")
    return {**JSON_HEADERS, "Authorization": f"Basic {encoded}"}


def shop_order(order_id: str, kind: str) -> dict[str, Any]:
    return {"order_id": order_id, "kind": kind, "at": 1795167000,
            "buyer": {"email": "bo@example.com", "id": "b-7"}, "total": 42}


def signed_request(preset: str) -> tuple[str, bytes, dict[str, str]]:
    """A correctly authenticated request of each source: (source, body, headers)."""
    if preset == "sendgrid":
        body = encode(fixture_body("sendgrid", "click"))
        return "sg", body, sendgrid_headers(body)
    if preset == "mailgun":
        return "mg", mailgun_body(fixture_body("mailgun", "opened")), JSON_HEADERS
    if preset == "customerio":
        body = encode(fixture_body("customerio", "email-delivered"))
        return "cio", body, customerio_headers(body)
    if preset == "postmark":
        return "pm", encode(fixture_body("postmark", "open")), basic_headers()
    if preset == "custom":
        return "shop", encode({"orders": [shop_order("o-1", "mailed")]}), JSON_HEADERS
    assert preset == "extends"
    return "sgx", encode(fixture_body("sendgrid", "dropped")), JSON_HEADERS


PRESETS = ["sendgrid", "mailgun", "customerio", "postmark", "custom", "extends"]
# (source, event_type, dedup_key) of the stored row; None: a hash key ("sha256:...").
STORED = {
    "sendgrid": ("sg", "email_clicked", "sendgrid_internal_event_id"),
    "mailgun": ("mg", "email_opened", "q7DMpbLFRKW1QuiLC9XV4Q"),
    "customerio": ("cio", "email_delivered", "01ER4R5WB62QWCNREKFB4DYXGR"),
    "postmark": ("pm", "email_opened", None),
    "custom": ("shop", "email_sent", "o-1"),
    "extends": ("sgx", "custom", "zmzJhfJgAfUSOW80yEbPyw=="),
}
# The event object as the sender posted it, which the row keeps as its payload.
PAYLOADS: dict[str, Callable[[], Any]] = {
    "sendgrid": lambda: fixture_body("sendgrid", "click")[0],
    "mailgun": lambda: fixture_body("mailgun", "opened"),
    "customerio": lambda: fixture_body("customerio", "email-delivered"),
    "postmark": lambda: fixture_body("postmark", "open"),
    "custom": lambda: shop_order("o-1", "mailed"),
    "extends": lambda: fixture_body("sendgrid", "dropped")[0],
}


# --- talking to the app -------------------------------------------------------------------------

ClientFactory = Callable[[Settings], Awaitable[TestClient]]


@pytest.fixture
def app_client(aiohttp_client: Any) -> ClientFactory:
    async def start(settings: Settings) -> TestClient:
        return await aiohttp_client(create_app(settings, retention=False))

    return start


@pytest.fixture
async def client(app_client: ClientFactory, db_url: str) -> TestClient:
    return await app_client(settings_for(db_url))


async def post(
    client: TestClient, source: str, body: bytes, headers: dict[str, str] | None = None,
    *, legacy: bool = False,
) -> tuple[int, Any]:
    path = f"/webhooks/nudgespot/{TOKENS[source]}" if legacy else f"/webhooks/{TOKENS[source]}"
    async with client.post(path, data=body, headers=headers or JSON_HEADERS) as response:
        return response.status, await response.json()


def store_of(client: TestClient) -> Store:
    return client.server.app[STORE]


async def event_rows(client: TestClient) -> list[Event]:
    store = store_of(client)
    return await stored_events(store)


async def reject_rows(client: TestClient) -> list[RejectedEvent]:
    store = store_of(client)
    with store.db.orm():
        return await RejectedEvent.all().order_by("id")


async def get_status(client: TestClient) -> dict[str, Any]:
    async with client.get("/status", headers=BEARER) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and return every sample as {(name, sorted labels): value}."""
    async with client.get("/metrics", headers=BEARER) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- each preset, authenticated ---------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
async def test_authenticated_body_of_each_format_is_accepted(
    client: TestClient, preset: str
) -> None:
    source, body, headers = signed_request(preset)

    status, answer = await post(client, source, body, headers)

    assert status == 200, answer
    assert answer == {"accepted": 1, "duplicates": 0, "ignored": 0, "rejected": []}


@pytest.mark.parametrize("preset", PRESETS)
async def test_authenticated_event_of_each_format_is_stored_under_its_source(
    client: TestClient, preset: str
) -> None:
    source, body, headers = signed_request(preset)

    await post(client, source, body, headers)

    [row] = await event_rows(client)
    expected_source, expected_type, expected_key = STORED[preset]
    assert (row.source, row.event_type, row.status) == (expected_source, expected_type, "pending")
    if expected_key is None:
        assert row.dedup_key.startswith("sha256:")
    else:
        assert row.dedup_key == expected_key
    assert json.loads(row.payload) == PAYLOADS[preset]()
    assert await reject_rows(client) == []


@pytest.mark.parametrize("preset", PRESETS)
async def test_same_body_posted_again_is_all_duplicates(client: TestClient, preset: str) -> None:
    source, body, headers = signed_request(preset)
    await post(client, source, body, headers)

    status, answer = await post(client, source, body, headers)

    assert status == 200, answer
    assert answer == {"accepted": 0, "duplicates": 1, "ignored": 0, "rejected": []}
    assert len(await event_rows(client)) == 1


async def test_format_name_and_custom_event_name_travel_in_the_stored_fields(
    client: TestClient,
) -> None:
    source, body, headers = signed_request("extends")

    await post(client, source, body, headers)

    [row] = await event_rows(client)
    fields = json.loads(row.fields_json)
    assert (fields["format"], fields["event_name"]) == ("sendgrid-dropped", "Email Dropped")


async def test_extended_format_keeps_the_presets_ignore_list(client: TestClient) -> None:
    status, answer = await post(client, "sgx", encode(fixture_body("sendgrid", "deferred")))

    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "ignored": 1,
                                      "rejected": []})
    assert await event_rows(client) == []


async def test_sendgrid_signature_headers_in_lower_case_are_accepted(client: TestClient) -> None:
    body = encode(fixture_body("sendgrid", "click"))
    headers = {name.lower(): value for name, value in sendgrid_headers(body).items()}

    status, answer = await post(client, "sg", body, headers)

    assert status == 200, answer
    assert answer["accepted"] == 1


# --- authentication failures ------------------------------------------------------------------


def bad_request(case: str) -> tuple[str, bytes, dict[str, str], str]:
    """A request each source must refuse: (source, body, headers, the error answered)."""
    now = int(time.time())
    click = encode(fixture_body("sendgrid", "click"))
    opened = fixture_body("mailgun", "opened")
    delivered = encode(fixture_body("customerio", "email-delivered"))
    postmark = encode(fixture_body("postmark", "open"))
    missing_sg = (f"missing {SG_SIGNATURE} or {SG_TIMESTAMP} header")
    return {
        "sendgrid-wrong-key": ("sg", click, sendgrid_headers(click, key=SG_OTHER_KEY), MISMATCH),
        "sendgrid-missing": ("sg", click, JSON_HEADERS, missing_sg),
        "sendgrid-stale": ("sg", click, sendgrid_headers(click, at=now - 301), STALE),
        "sendgrid-ahead": ("sg", click, sendgrid_headers(click, at=now + 301), STALE),
        "mailgun-wrong-key": ("mg", mailgun_body(opened, key="key-wrong"), JSON_HEADERS,
                              MISMATCH),
        "mailgun-missing": ("mg", encode(opened), JSON_HEADERS,
                            "missing Mailgun 'signature' object (timestamp, token, signature) "
                            "in the body"),
        "mailgun-stale": ("mg", mailgun_body(opened, at=now - 301), JSON_HEADERS, STALE),
        "customerio-wrong-secret": ("cio", delivered,
                                    customerio_headers(delivered, secret="wrong"), MISMATCH),
        "customerio-missing": ("cio", delivered, JSON_HEADERS,
                               "missing X-CIO-Signature or X-CIO-Timestamp header"),
        "customerio-stale": ("cio", delivered, customerio_headers(delivered, at=now - 301),
                             STALE),
        "postmark-wrong-password": ("pm", postmark, basic_headers("hook:wrong"),
                                    "wrong HTTP Basic credentials"),
        "postmark-missing": ("pm", postmark, JSON_HEADERS, "missing HTTP Basic credentials"),
    }[case]


BAD_CASES = [
    "sendgrid-wrong-key", "sendgrid-missing", "sendgrid-stale", "sendgrid-ahead",
    "mailgun-wrong-key", "mailgun-missing", "mailgun-stale",
    "customerio-wrong-secret", "customerio-missing", "customerio-stale",
    "postmark-wrong-password", "postmark-missing",
]


@pytest.mark.parametrize("case", BAD_CASES)
async def test_unauthenticated_request_is_401_and_stores_nothing(
    client: TestClient, case: str
) -> None:
    source, body, headers, error = bad_request(case)

    status, answer = await post(client, source, body, headers)

    assert (status, answer) == (401, {"error": error})
    assert await event_rows(client) == []
    assert await reject_rows(client) == []


async def test_sendgrid_body_changed_after_signing_is_401(client: TestClient) -> None:
    body = encode(fixture_body("sendgrid", "click"))
    headers = sendgrid_headers(body)
    changed = body.replace(b"email@example.com", b"other@example.com")
    assert changed != body

    status, answer = await post(client, "sg", changed, headers)

    assert (status, answer) == (401, {"error": MISMATCH})
    assert await event_rows(client) == []


async def test_customerio_body_changed_after_signing_is_401(client: TestClient) -> None:
    body = encode(fixture_body("customerio", "email-delivered"))
    headers = customerio_headers(body)
    changed = body.replace(b"test@example.com", b"other@example.com")
    assert changed != body

    status, answer = await post(client, "cio", changed, headers)

    assert (status, answer) == (401, {"error": MISMATCH})
    assert await event_rows(client) == []


# --- ignored events -----------------------------------------------------------------------------


def sendgrid_events(*names: str) -> list[dict[str, Any]]:
    return [event for name in names for event in fixture_body("sendgrid", name)]


async def post_sendgrid(client: TestClient, events: list[dict[str, Any]]) -> tuple[int, Any]:
    body = encode(events)
    return await post(client, "sg", body, sendgrid_headers(body))


async def test_sendgrid_body_mixing_mapped_and_ignored_events_stores_only_the_mapped(
    client: TestClient,
) -> None:
    status, answer = await post_sendgrid(client, sendgrid_events("processed", "deferred",
                                                                  "dropped"))

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 2,
                                      "rejected": []})
    rows = await event_rows(client)
    assert [(r.source, r.event_type, r.dedup_key) for r in rows] == [
        ("sg", "email_sent", "rbtnWrG1DVDGGGFHFyun0A==")]
    assert await reject_rows(client) == []


async def test_sendgrid_body_of_only_ignored_events_is_200_with_nothing_accepted(
    client: TestClient,
) -> None:
    status, answer = await post_sendgrid(client, sendgrid_events("deferred", "dropped"))

    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "ignored": 2,
                                      "rejected": []})
    assert await event_rows(client) == []
    assert await reject_rows(client) == []


async def post_three_ignored(client: TestClient) -> None:
    """Two SendGrid bodies: 1 mapped + 2 ignored, then 1 other ignored event."""
    first = await post_sendgrid(client, sendgrid_events("processed", "deferred", "dropped"))
    second = await post_sendgrid(client, sendgrid_events("group_resubscribe"))
    assert [status for status, _ in (first, second)] == [200, 200]


async def test_ignored_events_are_counted_per_source_in_status(client: TestClient) -> None:
    await post_three_ignored(client)

    figures = (await get_status(client))["sources"]

    assert {name: figures[name]["ignored"] for name in TOKENS} == {
        "ns": 0, "sg": 3, "mg": 0, "cio": 0, "pm": 0, "shop": 0, "sgx": 0}


async def test_ignored_events_are_counted_per_source_in_metrics(client: TestClient) -> None:
    await post_three_ignored(client)

    samples = await scrape(client)

    assert sample(samples, "nudgespot_events_total", source="sg", outcome="ignored") == 3
    assert sample(samples, "nudgespot_events_total", source="sg", outcome="accepted") == 1
    assert sample(samples, "nudgespot_events_total", source="mg", outcome="ignored") is None


async def test_ignored_events_are_counted_in_the_status_command(
    client: TestClient, db_url: str, tmp_path: Path
) -> None:
    await post_three_ignored(client)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"url": db_url},
        "sources": [{"name": "sg", "token": TOKENS["sg"], "write_key": WRITE_KEYS["sg"],
                     "format": "sendgrid"}],
    }), encoding="utf-8")

    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "status", "--json", "--config", str(config), cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()
    figures = json.loads(stdout)["sources"]["sg"]
    assert (figures["ignored"], figures["pending"]) == (3, 1)


# --- unknown events are quarantined -------------------------------------------------------------

UNKNOWN_SG_EVENT = {"email": "alex@example.com", "timestamp": 1513299569,
                    "event": "machine_learned", "sg_event_id": "ml-1"}
UNKNOWN_SG_ERROR = "unknown event 'machine_learned' (not in the format's event_names or ignore)"


async def test_unknown_event_is_listed_under_rejected_in_the_answer(client: TestClient) -> None:
    status, answer = await post_sendgrid(client, [*sendgrid_events("processed"),
                                                  UNKNOWN_SG_EVENT])

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0,
                                      "rejected": [{"index": 1, "error": UNKNOWN_SG_ERROR}]})


async def test_unknown_event_is_quarantined_with_its_reason(client: TestClient) -> None:
    await post_sendgrid(client, [*sendgrid_events("processed"), UNKNOWN_SG_EVENT])

    [row] = await reject_rows(client)
    assert (row.source, row.body_index, row.reason) == ("sg", 1, UNKNOWN_SG_ERROR)
    assert json.loads(row.payload) == UNKNOWN_SG_EVENT
    assert [r.dedup_key for r in await event_rows(client)] == ["rbtnWrG1DVDGGGFHFyun0A=="]


async def test_body_of_only_unknown_events_is_400_and_quarantined(client: TestClient) -> None:
    status, answer = await post_sendgrid(client, [UNKNOWN_SG_EVENT])

    assert status == 400
    assert answer["rejected"] == [{"index": 0, "error": UNKNOWN_SG_ERROR}]
    assert [(r.source, r.body_index) for r in await reject_rows(client)] == [("sg", 0)]
    assert await event_rows(client) == []


# --- paths --------------------------------------------------------------------------------------

NUDGESPOT_EVENT = {"id": "n-1", "event": "email_opened", "timestamp": "2026-11-20T09:30:00Z",
                   "subscriber": {"uid": "u-1", "email": "ada@example.com"}}


async def test_legacy_path_works_for_a_nudgespot_source(client: TestClient) -> None:
    status, answer = await post(client, "ns", encode([NUDGESPOT_EVENT]), legacy=True)

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert [(r.source, r.dedup_key) for r in await event_rows(client)] == [("ns", "n-1")]


async def test_new_path_works_for_a_nudgespot_source(client: TestClient) -> None:
    status, answer = await post(client, "ns", encode([NUDGESPOT_EVENT]))

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert [(r.source, r.dedup_key) for r in await event_rows(client)] == [("ns", "n-1")]


@pytest.mark.parametrize("preset", ["postmark", "sendgrid"])
async def test_legacy_path_works_for_a_format_source(client: TestClient, preset: str) -> None:
    source, body, headers = signed_request(preset)

    status, answer = await post(client, source, body, headers, legacy=True)

    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0,
                                      "rejected": []})
    expected_source, expected_type, _ = STORED[preset]
    assert [(r.source, r.event_type) for r in await event_rows(client)] == [
        (expected_source, expected_type)]


async def test_legacy_path_still_checks_the_formats_credentials(client: TestClient) -> None:
    status, answer = await post(client, "pm", encode(fixture_body("postmark", "open")),
                                legacy=True)

    assert (status, answer) == (401, {"error": "missing HTTP Basic credentials"})
    assert await event_rows(client) == []


@pytest.mark.parametrize("source", ["ns", "sg", "pm", "shop"])
async def test_get_webhook_url_names_the_source(client: TestClient, source: str) -> None:
    async with client.get(f"/webhooks/{TOKENS[source]}") as response:
        assert response.status == 200
        assert await response.json() == {"ok": True, "source": source}


async def test_get_webhook_url_with_an_unknown_token_is_401(client: TestClient) -> None:
    async with client.get("/webhooks/tok-unknown-0001") as response:
        assert response.status == 401
        assert await response.json() == {"error": "unknown webhook token"}


# --- end to end, to Segment ---------------------------------------------------------------------


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeSegment:
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


@pytest.fixture
async def publishing(aiohttp_client: Any, fake: FakeSegment, db_url: str) -> TestClient:
    """The app with the real publisher sending to the fake Segment."""
    settings = settings_for(
        db_url,
        segment={"endpoint": fake.url},  # type: ignore[attr-defined]
        publisher={"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2},
    )
    publisher = build_publisher(settings)
    return await aiohttp_client(create_app(settings, publisher=publisher, retention=False))


POSTMARK_OPEN_TRACK = {
    "type": "track",
    "event": "Email Opened",
    "anonymousId": "john@example.com",
    "timestamp": "2019-11-05T16:33:54.907Z",
    "properties": {
        "email_id": "883953f4-6105-42a2-a16a-77a8eac79483",
        "tag": "welcome-email",
        "message_stream": "outbound",
        "metadata": {"a_key": "a_value", "b_key": "b_value"},
        "first_open": True,
        "platform": "WebMail",
        "client": "Chrome 35.0.1916.153",
        "os": "OS X 10.7 Lion",
        "country": "Serbia",
        "region": "Autonomna Pokrajina Vojvodina",
        "city": "Novi Sad",
    },
    "context": {
        "traits": {"email": "john@example.com"},
        "ip": "188.2.95.4",
        "userAgent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/35.0.1916.153 Safari/537.36"
        ),
        "integration": {"name": "postmark", "version": SERVICE_VERSION},
    },
    "integrations": {"Nudgespot": False},
}
SENDGRID_CLICK_TRACK = {
    "type": "track",
    "event": "Email Link Clicked",
    "anonymousId": "email@example.com",
    "timestamp": "2009-08-11T00:00:00.000Z",
    "properties": {
        "category": ["category1", "category2"],
        "email_id": "sendgrid_internal_message_id",
        "link_id": "0",
        "link_url": "http://example.com/blog/news.html",
    },
    "context": {
        "traits": {"email": "email@example.com"},
        "ip": "255.255.255.255",
        "userAgent": (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 "
            "(KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53"
        ),
        "integration": {"name": "sendgrid", "version": SERVICE_VERSION},
    },
    "integrations": {"Nudgespot": False},
}


def without_generated(message: dict[str, Any]) -> dict[str, Any]:
    copied = json.loads(json.dumps(message))
    copied.pop("messageId", None)
    copied["context"].pop("library", None)
    return copied


async def deliver_postmark_open_and_sendgrid_click(
    publishing: TestClient, fake: FakeSegment
) -> dict[str, dict[str, Any]]:
    """Post both and wait for Segment to have them; return the tracks by event name."""
    for preset in ("postmark", "sendgrid"):
        source, body, headers = signed_request(preset)
        status, answer = await post(publishing, source, body, headers)
        assert (status, answer["accepted"]) == (200, 1), answer
    delivered = await fake.wait_for(2, timeout_s=WAIT_S)
    return {m["event"]: m for m in delivered if m["type"] == "track"}


async def test_postmark_open_reaches_segment_as_the_written_out_track(
    publishing: TestClient, fake: FakeSegment
) -> None:
    tracks = await deliver_postmark_open_and_sendgrid_click(publishing, fake)

    assert without_generated(tracks["Email Opened"]) == POSTMARK_OPEN_TRACK


async def test_sendgrid_click_reaches_segment_as_the_written_out_track(
    publishing: TestClient, fake: FakeSegment
) -> None:
    tracks = await deliver_postmark_open_and_sendgrid_click(publishing, fake)

    assert without_generated(tracks["Email Link Clicked"]) == SENDGRID_CLICK_TRACK
    assert tracks["Email Link Clicked"]["messageId"] == mapping.message_id(
        "sg", "sendgrid_internal_event_id")


async def test_each_formats_track_goes_with_its_sources_write_key(
    publishing: TestClient, fake: FakeSegment
) -> None:
    await deliver_postmark_open_and_sendgrid_click(publishing, fake)

    by_event = {m["event"]: r.write_key for r in fake.received if r.status == 200
                for m in r.messages}
    assert by_event == {"Email Opened": "WK-pm", "Email Link Clicked": "WK-sg"}


# --- replay --rejected after a format fix -------------------------------------------------------


async def replay_rejected(client: TestClient) -> tuple[int, Any]:
    async with client.post("/replay", json={"rejected": True}, headers=BEARER) as response:
        return response.status, await response.json()


async def quarantine_then_fix(
    app_client: ClientFactory, db_url: str, kind: str
) -> TestClient:
    """Post a mailed order and one of `kind` under SHOP_V1 (which does not know `kind`),
    stop that app, and return a new app on the same database with SHOP_V2."""
    first = await app_client(settings_for(db_url, shop=SHOP_V1))
    body = encode({"orders": [shop_order("o-1", "mailed"), shop_order("o-2", kind)]})
    status, answer = await post(first, "shop", body)
    assert (status, [r["index"] for r in answer["rejected"]]) == (200, [1]), answer
    assert [(r.source, r.body_index) for r in await reject_rows(first)] == [("shop", 1)]
    await first.close()
    return await app_client(settings_for(db_url, shop=SHOP_V2))


async def test_event_unknown_to_the_format_is_quarantined_with_its_reason(
    client: TestClient,
) -> None:
    body = encode({"orders": [shop_order("o-2", "bought")]})

    status, answer = await post(client, "shop", body)

    error = "unknown event 'bought' (not in the format's event_names or ignore)"
    assert status == 400
    assert answer["rejected"] == [{"index": 0, "error": error}]
    [row] = await reject_rows(client)
    assert (row.source, row.body_index, row.reason) == ("shop", 0, error)
    assert json.loads(row.payload) == shop_order("o-2", "bought")


async def test_replay_rejected_admits_an_event_the_fixed_format_now_maps(
    app_client: ClientFactory, db_url: str
) -> None:
    fixed = await quarantine_then_fix(app_client, db_url, "bought")

    status, answer = await replay_rejected(fixed)

    assert (status, answer) == (200, {"matched": 1, "requeued": 1, "still_rejected": 0})
    rows = await event_rows(fixed)
    assert [(r.source, r.dedup_key, r.event_type, r.status) for r in rows] == [
        ("shop", "o-1", "email_sent", "pending"), ("shop", "o-2", "custom", "pending")]
    fields = json.loads(rows[1].fields_json)
    assert (fields["event_name"], fields["format"], fields["user_id"]) == (
        "Order Completed", "shop", "b-7")
    assert json.loads(rows[1].payload) == shop_order("o-2", "bought")
    assert await reject_rows(fixed) == []


async def test_replay_rejected_drops_an_event_the_fixed_format_ignores_and_counts_it(
    app_client: ClientFactory, db_url: str
) -> None:
    fixed = await quarantine_then_fix(app_client, db_url, "browsed")

    status, answer = await replay_rejected(fixed)

    assert status == 200
    assert (answer["matched"], answer["still_rejected"]) == (1, 0)
    assert await reject_rows(fixed) == []
    assert [r.dedup_key for r in await event_rows(fixed)] == ["o-1"]
    assert (await get_status(fixed))["sources"]["shop"]["ignored"] == 1


# --- hostile values in an expression's error ---------------------------------------------------

TAGGED = {
    "events": "orders",
    "fields": {"id": "order_id", "event": "kind", "timestamp": "at", "email": "buyer.email",
               "subject": "join(',', tags)"},
    "event_names": {"mailed": "Email Sent"},
}


@pytest.mark.parametrize("hostile", ["a\u0000b", "a\ud800b"], ids=["nul", "lone-surrogate"])
async def test_event_whose_expression_fails_on_a_hostile_value_is_quarantined_alone(
    app_client: ClientFactory, db_url: str, hostile: str
) -> None:
    # join() of a string is a JMESPath type error whose message quotes the string: the NUL or
    # lone surrogate must not reach the stored reason (no database column takes them).
    client = await app_client(settings_for(db_url, shop=TAGGED))
    good = {**shop_order("o-1", "mailed"), "tags": ["a", "b"]}
    bad = {**shop_order("o-2", "mailed"), "tags": hostile}
    body = json.dumps({"orders": [good, bad]}).encode()

    status, answer = await post(client, "shop", body)

    assert status == 200, answer
    assert (answer["accepted"], [r["index"] for r in answer["rejected"]]) == (1, [1])
    assert [r.dedup_key for r in await event_rows(client)] == ["o-1"]
    [row] = await reject_rows(client)
    assert row.reason.startswith("fields.subject")
    assert "\x00" not in row.reason and "\ud800" not in row.reason
