"""Authentication of the webhook and the admin endpoints, and secrets that must never leak.

Through the real app over loopback HTTP; where storage matters on SQLite and PostgreSQL. The
one exception is the non-loopback client, simulated by giving the real guarded handler (taken
from the app's router) a request built with aiohttp's make_mocked_request and another peer
address: that is the only way to be "not loopback" inside a test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from inbound.signature import SIGNATURE_HEADER, sign
from outbound import mapping
from service.app import create_app
from service.config import LoggingSettings
from service.logs import JsonFormatter, configure_logging
from service.metrics import Metrics
from service.wiring import build_publisher
from tests.conftest import TOKEN, make_settings, with_source
from tests.fake_segment import FakeSegment
from tests.resilience.hostile_helpers import (
    JSON_HEADERS,
    WEBHOOK,
    event_rows,
    good_event,
    reject_rows,
)

ADMIN_TOKEN = "adm-5e1f0c9a77d24b6e-token"
SIGNING_SECRET = "sig-8b2d4f6a1c3e5d7f-secret"
ADMIN_PATHS = [("GET", "/status"), ("POST", "/replay"), ("GET", "/metrics")]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def client(aiohttp_client: Any, db_url: str) -> TestClient:
    return await aiohttp_client(create_app(make_settings(db_url), retention=False))


@pytest.fixture
async def signed(aiohttp_client: Any, db_url: str) -> TestClient:
    settings = with_source(make_settings(db_url), "default", signing_secret=SIGNING_SECRET)
    return await aiohttp_client(create_app(settings, retention=False))


@pytest.fixture
async def admin(aiohttp_client: Any, sqlite_url: str) -> TestClient:
    settings = make_settings(sqlite_url, admin={"token": ADMIN_TOKEN})
    return await aiohttp_client(create_app(settings, retention=False))


# --- webhook tokens -----------------------------------------------------------------------------

WRONG_TOKENS = [
    "wrong-token-0000000",
    TOKEN[:-1],
    TOKEN + "x",
    TOKEN.upper(),
    f" {TOKEN}",
    "test-token-other-0002x",
    "'; DROP TABLE nudgespot_event; --",
    "x" * 4000,
    "tökén-ünïcode",
    "%00",
]


@pytest.mark.parametrize("token", WRONG_TOKENS, ids=range(len(WRONG_TOKENS)))
async def test_post_with_a_wrong_token_is_401_and_stores_nothing(
    client: TestClient, token: str
) -> None:
    async with client.post(f"/webhooks/nudgespot/{token}", json=good_event("e-1")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]

    assert await event_rows(client) == []
    assert await reject_rows(client) == []


@pytest.mark.parametrize("token", WRONG_TOKENS, ids=range(len(WRONG_TOKENS)))
async def test_get_with_a_wrong_token_is_401(client: TestClient, token: str) -> None:
    async with client.get(f"/webhooks/nudgespot/{token}") as resp:
        assert resp.status == 401
        assert "source" not in await resp.json()


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/webhooks/nudgespot/", "/webhooks/nudgespot", "/webhooks/"])
async def test_missing_token_is_refused_and_stores_nothing(
    client: TestClient, method: str, path: str
) -> None:
    async with client.request(method, path, json=good_event("e-1")) as resp:
        assert resp.status in (401, 404), resp.status  # no route without a token: 404 is fine

    assert await event_rows(client) == []


async def test_url_over_the_line_limit_is_refused_and_stores_nothing(client: TestClient) -> None:
    async with client.post(f"/webhooks/nudgespot/{'x' * 10_000}", json=good_event("e-1")) as resp:
        assert 400 <= resp.status < 500, resp.status  # aiohttp refuses the request line

    assert await event_rows(client) == []
    assert await reject_rows(client) == []


async def test_right_token_is_accepted(client: TestClient) -> None:
    async with client.post(WEBHOOK, json=good_event("e-1")) as resp:
        assert resp.status == 200
    async with client.get(WEBHOOK) as resp:
        assert await resp.json() == {"ok": True, "source": "default"}


async def test_wrong_token_with_junk_body_fills_no_quarantine(client: TestClient) -> None:
    async with client.post("/webhooks/nudgespot/nope-nope-nope", data=b"\xff" * 5000,
                           headers=JSON_HEADERS) as resp:
        assert resp.status == 401

    assert await reject_rows(client) == []


# --- signatures ---------------------------------------------------------------------------------


async def post_signed(client: TestClient, body: bytes, header: str | None) -> int:
    headers = dict(JSON_HEADERS)
    if header is not None:
        headers[SIGNATURE_HEADER] = header
    async with client.post(WEBHOOK, data=body, headers=headers) as resp:
        return resp.status


def body_of(key: str) -> bytes:
    return json.dumps(good_event(key)).encode()


async def test_valid_signature_is_accepted(signed: TestClient) -> None:
    body = body_of("e-1")

    assert await post_signed(signed, body, sign(SIGNING_SECRET, int(time.time()), body)) == 200
    assert len(await event_rows(signed)) == 1


@pytest.mark.parametrize("age_s", [301, 3600, 86_400 * 365, int(time.time())])
async def test_signature_with_an_old_timestamp_is_401(signed: TestClient, age_s: int) -> None:
    body = body_of("e-1")
    header = sign(SIGNING_SECRET, int(time.time()) - age_s, body)  # right secret, right body

    assert await post_signed(signed, body, header) == 401
    assert await event_rows(signed) == []


@pytest.mark.parametrize("ahead_s", [301, 86_400])
async def test_signature_with_a_future_timestamp_is_401(signed: TestClient, ahead_s: int) -> None:
    body = body_of("e-1")

    assert await post_signed(signed, body, sign(SIGNING_SECRET, int(time.time()) + ahead_s,
                                                body)) == 401
    assert await event_rows(signed) == []


def bad_headers() -> dict[str, str | None]:
    now = int(time.time())
    body = body_of("e-1")
    good = sign(SIGNING_SECRET, now, body)
    digest = good.rpartition("v1=")[2]
    return {
        "missing": None,
        "empty": "",
        "wrong-secret": sign("not-the-secret", now, body),
        "other-body": sign(SIGNING_SECRET, now, body_of("e-2")),
        "digest-only": digest,
        "no-timestamp": f"v1={digest}",
        "no-digest": f"t={now}",
        "timestamp-not-a-number": f"t=now,v1={digest}",
        "negative-timestamp": f"t=-{now},v1={digest}",
        "huge-timestamp": f"t={'9' * 40},v1={digest}",
        "truncated-digest": f"t={now},v1={digest[:-2]}",
        "flipped-digest": f"t={now},v1={digest[:-1]}{'0' if digest[-1] != '0' else '1'}",
        "non-ascii-digest": f"t={now},v1={digest[:-1]}é",
        "other-scheme": f"t={now},v0={digest}",
        "garbage": ",,=,t=,v1=,t=t,v1=zz,==",
    }


@pytest.mark.parametrize("name", list(bad_headers()))
async def test_bad_signature_is_401_and_stores_nothing(signed: TestClient, name: str) -> None:
    assert await post_signed(signed, body_of("e-1"), bad_headers()[name]) == 401

    assert await event_rows(signed) == []
    assert await reject_rows(signed) == []


async def test_stale_signature_on_junk_fills_no_quarantine(signed: TestClient) -> None:
    junk = b"not json at all"
    header = sign(SIGNING_SECRET, int(time.time()) - 3600, junk)

    assert await post_signed(signed, junk, header) == 401
    assert await reject_rows(signed) == []


async def test_signature_is_bound_to_the_exact_bytes(signed: TestClient) -> None:
    body = body_of("e-1")
    header = sign(SIGNING_SECRET, int(time.time()), body)
    reformatted = json.dumps(json.loads(body), indent=1).encode()  # same JSON, other bytes

    assert await post_signed(signed, reformatted, header) == 401
    assert await post_signed(signed, body + b" ", header) == 401
    assert await event_rows(signed) == []


# --- admin endpoints with an admin token ------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_admin_endpoint_without_credentials_is_401(
    admin: TestClient, method: str, path: str
) -> None:
    async with admin.request(method, path, json={}) as resp:
        assert resp.status == 401  # also from loopback: the token, once set, is required
        assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert (await resp.json())["error"]


WRONG_ADMIN_CREDENTIALS = {
    "bearer-wrong": {"Authorization": "Bearer not-the-token"},
    "bearer-prefix": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "bearer-suffix": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    "bearer-empty": {"Authorization": "Bearer "},
    "bearer-unicode": {"Authorization": "Bearer tökén"},
    "basic-wrong-password": basic("admin", "nope"),
    "basic-token-as-user": basic(ADMIN_TOKEN, ""),
    "basic-no-colon": {"Authorization": "Basic " + base64.b64encode(ADMIN_TOKEN.encode()).decode()},
    "basic-not-base64": {"Authorization": f"Basic {ADMIN_TOKEN}"},
    "basic-not-utf8": {"Authorization": "Basic " + base64.b64encode(b"a:\xff\xfe").decode()},
    "other-scheme": {"Authorization": f"Token {ADMIN_TOKEN}"},
    "token-header": {"X-Admin-Token": ADMIN_TOKEN},
    "query-string": {},
}


@pytest.mark.parametrize("name", list(WRONG_ADMIN_CREDENTIALS))
@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_admin_endpoint_with_wrong_credentials_is_401(
    admin: TestClient, method: str, path: str, name: str
) -> None:
    query = {"token": ADMIN_TOKEN} if name == "query-string" else None
    async with admin.request(method, path, json={}, params=query,
                             headers=WRONG_ADMIN_CREDENTIALS[name]) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_admin_endpoint_with_the_token_is_200(
    admin: TestClient, method: str, path: str
) -> None:
    for headers in ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, basic("ops", ADMIN_TOKEN)):
        async with admin.request(method, path, json={}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()


async def raw_request(client: TestClient, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", b"Bearer " + ADMIN_TOKEN.encode() + b"\xff"])
async def test_admin_endpoint_with_non_utf8_credentials_is_401(
    admin: TestClient, value: bytes
) -> None:
    answer = await raw_request(
        admin,
        b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value
        + b"\r\nConnection: close\r\n\r\n",
    )

    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 401 Unauthorized", answer[:200]


# --- admin endpoints without an admin token: loopback only ------------------------------------


def guarded_handler(app: web.Application, method: str, path: str) -> Any:
    """The real, guarded handler the app routes (method, path) to."""
    for route in app.router.routes():
        if route.method == method and route.resource is not None and (
            route.resource.canonical == path
        ):
            return route.handler
    raise LookupError(f"{method} {path} is not routed")


def from_peer(app: web.Application, method: str, path: str, remote: str,
              headers: dict[str, str] | None = None) -> web.Request:
    return make_mocked_request(method, path, headers=headers, app=app).clone(remote=remote)


NON_LOOPBACK = ["203.0.113.7", "10.0.0.1", "192.168.1.20", "::ffff:8.8.8.8", "2001:db8::1",
                "0.0.0.0", "127.0.0.1.example.com", ""]


@pytest.mark.parametrize("remote", NON_LOOPBACK)
@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_without_admin_token_non_loopback_client_is_403(
    sqlite_url: str, method: str, path: str, remote: str
) -> None:
    app = create_app(make_settings(sqlite_url), retention=False)

    response = await guarded_handler(app, method, path)(from_peer(app, method, path, remote))

    assert response.status == 403
    assert json.loads(response.text)["error"]


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_forwarded_headers_do_not_make_a_client_loopback(
    sqlite_url: str, method: str, path: str
) -> None:
    app = create_app(make_settings(sqlite_url), retention=False)
    spoof = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "::1"}

    request = from_peer(app, method, path, "203.0.113.7", spoof)
    response = await guarded_handler(app, method, path)(request)

    assert response.status == 403


async def test_with_admin_token_a_non_loopback_client_with_the_token_gets_through(
    sqlite_url: str,
) -> None:
    app = create_app(make_settings(sqlite_url, admin={"token": ADMIN_TOKEN}), retention=False)
    handler = guarded_handler(app, "GET", "/metrics")

    refused = await handler(from_peer(app, "GET", "/metrics", "203.0.113.7"))
    allowed = await handler(from_peer(app, "GET", "/metrics", "203.0.113.7",
                                      {"Authorization": f"Bearer {ADMIN_TOKEN}"}))

    assert refused.status == 401
    assert allowed.status == 200


async def test_without_admin_token_a_loopback_client_is_served(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(sqlite_url), retention=False))

    for method, path in ADMIN_PATHS:
        async with client.request(method, path, json={}) as resp:
            assert resp.status == 200, (path, await resp.text())


# --- secrets never leak -------------------------------------------------------------------------

SECRETS = {
    "write key (default)": "wk-default-3f9a1c7e5b2d4086",
    "write key (signed)": "wk-signed-91d2e8b4c6a0f357",
    "webhook token (default)": "tok-default-6a4e2c0b8d1f3957",
    "webhook token (signed)": "tok-signed-0c5b7d9e1a3f2468",
    "signing secret": "sig-secret-7e3c1a9f5d2b8046",
    "admin token": "adm-secret-2b8d4f6a0c1e3579",
}
CORES = {name: value.rsplit("-", 1)[1] for name, value in SECRETS.items()}  # unique 16 hex


def derived_forms() -> dict[str, str]:
    """Encodings a secret could leak in: Basic credentials as sent to Segment or to us."""
    forms = {}
    for name, value in SECRETS.items():
        forms[f"{name} as Basic user"] = base64.b64encode(f"{value}:".encode()).decode()
        forms[f"{name} as Basic password"] = base64.b64encode(f"ops:{value}".encode()).decode()
    return forms


def leaks(text: str) -> list[str]:
    found = [name for name, core in CORES.items() if core in text]
    found += [name for name, form in derived_forms().items() if form in text]
    return found


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        """Every record as the service's text and JSON formats print it, plus its raw args."""
        text_format = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        json_format = JsonFormatter()
        out = []
        for record in self.records:
            out.append(text_format.format(record))
            out.append(json_format.format(record))
            out.append(repr(record.args) + repr(record.msg))
        return out


@pytest.fixture
def service_logging() -> Iterator[Capture]:
    """The service's own logging set-up at DEBUG (as `serve` does it), captured."""
    root = logging.getLogger()
    names = ("tortoise", "segment", "aiohttp.access", "apscheduler")
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})
    configure_logging(LoggingSettings(level="DEBUG", format="text"))
    capture = Capture()
    root.handlers[:] = [capture]
    yield capture
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
async def leak_fake(aiohttp_server: Any) -> FakeSegment:
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


@dataclass
class Flow:
    logs: Capture
    fake: FakeSegment
    bodies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    async def call(self, client: TestClient, name: str, method: str, path: str,
                   expect: int, **kwargs: Any) -> str:
        async with client.request(method, path, **kwargs) as resp:
            text = await resp.text()
            assert resp.status == expect, (name, resp.status, text[:300])
            self.bodies[name] = text
            self.headers[name] = json.dumps(dict(resp.headers))
            return text


async def wait_until(predicate: Any, bound_s: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not await predicate():
        assert loop.time() < deadline, "the flow did not settle"
        await asyncio.sleep(0.05)


@pytest.fixture
async def flow(
    aiohttp_client: Any, db_url: str, leak_fake: FakeSegment, service_logging: Capture
) -> Flow:
    """A full flow with distinctive secrets: deliveries, failed publishes, bad credentials."""
    s = SECRETS
    settings = make_settings(
        db_url,
        admin={"token": s["admin token"]},
        segment={"endpoint": leak_fake.url},  # type: ignore[attr-defined]
        publisher={"interval_s": 0.1, "retry_base_s": 0.05, "retry_max_s": 0.1,
                   "max_attempts": 5},
        sources=[
            {"name": "default", "token": s["webhook token (default)"],
             "write_key": s["write key (default)"], "identify": True},
            {"name": "signed", "token": s["webhook token (signed)"],
             "write_key": s["write key (signed)"], "signing_secret": s["signing secret"]},
        ],
    )
    metrics = Metrics()
    client = await aiohttp_client(create_app(
        settings, publisher=build_publisher(settings, observer=metrics), metrics=metrics,
        retention=False,
    ))
    flow = Flow(service_logging, leak_fake)
    plain = f"/webhooks/nudgespot/{s['webhook token (default)']}"
    signed_url = f"/webhooks/nudgespot/{s['webhook token (signed)']}"
    bearer = {"Authorization": f"Bearer {s['admin token']}"}

    # delivered, then failed publishes: 500, 401, a reset connection, then a 400 (dead)
    await flow.call(client, "post ok", "POST", plain, 200, json=good_event("ok-1"))
    await leak_fake.wait_for(2)  # identify + track
    leak_fake.answer(500, times=1)
    leak_fake.answer(401, times=1)
    leak_fake.reset_connections(times=1)
    await flow.call(client, "post retried", "POST", plain, 200, json=good_event("retry-1"))
    await leak_fake.wait_for(4)
    leak_fake.reject(mapping.message_id("default", "dead-1"), reason="refused")
    await flow.call(client, "post dead", "POST", plain, 200, json=good_event("dead-1"))

    async def dead() -> bool:
        return any(r.status == "dead" for r in await event_rows(client))

    await wait_until(dead)
    # junk and rejected events
    await flow.call(client, "post junk", "POST", plain, 400, data=b"{nope",
                    headers=JSON_HEADERS)
    await flow.call(client, "post rejected", "POST", plain, 400, json={"event": "nope"})
    await flow.call(client, "post too large", "POST", plain, 413,
                    data=b" " * (2 * 1024 * 1024), headers=JSON_HEADERS)
    await flow.call(client, "post wrong type", "POST", plain, 415, data=b"{}")
    # bad signatures, then a good one
    body = json.dumps(good_event("signed-1")).encode()
    now = int(time.time())
    for name, header in {
        "missing signature": None,
        "wrong signature": sign("not-it", now, body),
        "stale signature": sign(s["signing secret"], now - 3600, body),
        "signature of other body": sign(s["signing secret"], now, b"{}"),
    }.items():
        headers = dict(JSON_HEADERS, **({SIGNATURE_HEADER: header} if header else {}))
        await flow.call(client, name, "POST", signed_url, 401, data=body, headers=headers)
    headers = {**JSON_HEADERS, SIGNATURE_HEADER: sign(s["signing secret"], now, body)}
    await flow.call(client, "signed ok", "POST", signed_url, 200, data=body, headers=headers)
    await leak_fake.wait_for(5)
    # wrong webhook tokens
    await flow.call(client, "wrong token post", "POST", "/webhooks/nudgespot/nope-nope-1", 401,
                    json=good_event("x"))
    await flow.call(client, "wrong token get", "GET", "/webhooks/nudgespot/nope-nope-1", 401)
    await flow.call(client, "url check", "GET", plain, 200)
    # bad admin credentials, then good ones
    for name, headers in {
        "admin no credentials": {},
        "admin wrong bearer": {"Authorization": "Bearer nope"},
        "admin wrong basic": basic("ops", "nope"),
        "admin write key as token": {"Authorization": f"Bearer {s['write key (default)']}"},
        "admin webhook token as token": basic("ops", s["webhook token (default)"]),
    }.items():
        await flow.call(client, name, "GET", "/status", 401, headers=headers)
    await flow.call(client, "status json", "GET", "/status", 200, headers=bearer)
    await flow.call(client, "status html", "GET", "/status", 200,
                    headers={**bearer, "Accept": "text/html"})
    await flow.call(client, "metrics", "GET", "/metrics", 200, headers=bearer)
    await flow.call(client, "replay bad", "POST", "/replay", 400, headers=bearer,
                    json={"nope": 1})
    await flow.call(client, "replay bad type", "POST", "/replay", 415, headers=bearer,
                    data=b"{}")
    await flow.call(client, "replay", "POST", "/replay", 200, headers=bearer,
                    json={"status": ["dead"]})
    await flow.call(client, "healthz", "GET", "/healthz", 200)
    await flow.call(client, "readyz", "GET", "/readyz", 200)
    await flow.call(client, "openapi", "GET", "/openapi.yaml", 200)
    return flow


async def test_the_flow_used_every_secret_and_logged(flow: Flow) -> None:
    """The leak tests below mean something only if the secrets were really in play."""
    keys = {r.write_key for r in flow.fake.received}
    assert keys == {SECRETS["write key (default)"], SECRETS["write key (signed)"]}
    assert {r.status for r in flow.fake.received} >= {200, 400, 401, 500}
    assert any("status=401" in t for t in flow.logs.texts())
    assert any(r.levelno == logging.DEBUG for r in flow.logs.records)


async def test_no_secret_in_any_log_record(flow: Flow) -> None:
    leaked = {(name, text[:200]) for text in flow.logs.texts() for name in leaks(text)}

    assert not leaked


async def test_no_secret_in_status_json(flow: Flow) -> None:
    assert leaks(flow.bodies["status json"]) == []


async def test_no_secret_in_status_html(flow: Flow) -> None:
    assert leaks(flow.bodies["status html"]) == []


async def test_no_secret_in_metrics(flow: Flow) -> None:
    assert leaks(flow.bodies["metrics"]) == []


async def test_no_secret_in_any_response_body(flow: Flow) -> None:
    leaked = {name: leaks(body) for name, body in flow.bodies.items() if leaks(body)}

    assert not leaked


async def test_no_secret_in_any_response_header(flow: Flow) -> None:
    leaked = {name: leaks(headers) for name, headers in flow.headers.items() if leaks(headers)}

    assert not leaked


async def test_bad_signature_answer_does_not_reveal_the_expected_signature(
    signed: TestClient,
) -> None:
    body = body_of("e-1")
    now = int(time.time())
    expected = sign(SIGNING_SECRET, now, body).rpartition("v1=")[2]

    async with signed.post(WEBHOOK, data=body, headers={
        **JSON_HEADERS, SIGNATURE_HEADER: f"t={now},v1={'0' * 64}"
    }) as resp:
        assert resp.status == 401
        text = await resp.text()

    assert expected not in text
    assert SIGNING_SECRET not in text
