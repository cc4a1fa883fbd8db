"""service/openapi.yaml against the real application.

- Every route that create_app registers (method and path, HEAD aside) is described in the
  spec, and every operation in the spec is a registered route.
- Real requests through the app (SQLite, plus an unreachable PostgreSQL for the 503 answers):
  each answer's status is documented for its operation, its media type is one the spec lists
  for that status, and JSON bodies validate against the documented schema.

`jsonschema` is not installed in this project, so a small validator below covers the subset of
OpenAPI 3.0 schema keywords the spec uses; it refuses keywords it does not know, so that a
spec change can never pass unchecked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from models.tables import Event
from service.app import STORE, create_app
from tests.conftest import TOKEN, make_settings

SPEC_PATH = Path(__file__).resolve().parents[2] / "service" / "openapi.yaml"
ADMIN_TOKEN = "admin-token-for-openapi-tests"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNREACHABLE_POSTGRES_URL = "postgres://root@127.0.0.1:1/x"
MAX_BODY = 2048
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


# --- a validator for the subset of OpenAPI 3.0 schemas the spec uses --------------------------


class SchemaMismatch(AssertionError):
    """An instance does not match its schema; the message says where and why."""


ANNOTATIONS = {"description", "default", "example", "title", "format"}
KEYWORDS = {"$ref", "type", "required", "properties", "items", "nullable", "oneOf",
            "additionalProperties", "enum", "minimum"} | ANNOTATIONS


def resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    """Resolve a local JSON pointer such as '#/components/schemas/Error'."""
    assert ref.startswith("#/"), f"only refs within the document are supported: {ref}"
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _type_ok(instance: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(instance, int) and not isinstance(instance, bool)
    if kind == "number":
        return isinstance(instance, int | float) and not isinstance(instance, bool)
    expected = {"string": str, "boolean": bool, "array": list, "object": dict}
    if kind not in expected:
        raise NotImplementedError(f"type {kind!r}")
    return isinstance(instance, expected[kind])


def validate(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """Raise SchemaMismatch unless `instance` matches `schema`."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise NotImplementedError(f"{where}: schema keywords {sorted(unknown)} not supported")
    if "$ref" in schema:
        validate(instance, resolve(root, schema["$ref"]), root, where)
        return
    if instance is None:
        if schema.get("nullable"):
            return
        if "type" in schema or "oneOf" in schema:
            raise SchemaMismatch(f"{where}: null is not allowed")
    if "oneOf" in schema:
        matching = 0
        for option in schema["oneOf"]:
            try:
                validate(instance, option, root, where)
            except SchemaMismatch:
                continue
            matching += 1
        if matching != 1:
            raise SchemaMismatch(f"{where}: matches {matching} of the oneOf options, not 1")
    if "enum" in schema and instance not in schema["enum"]:
        raise SchemaMismatch(f"{where}: {instance!r} is not one of {schema['enum']}")
    kind = schema.get("type")
    if kind is not None and not _type_ok(instance, kind):
        raise SchemaMismatch(f"{where}: {instance!r} is not of type {kind}")
    if "minimum" in schema and _type_ok(instance, "number") and instance < schema["minimum"]:
        raise SchemaMismatch(f"{where}: {instance} is below the minimum {schema['minimum']}")
    if schema.get("format") == "date-time" and isinstance(instance, str):
        try:
            parsed = datetime.fromisoformat(instance)
        except ValueError:
            raise SchemaMismatch(f"{where}: {instance!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise SchemaMismatch(f"{where}: {instance!r} has no time zone")
    if isinstance(instance, dict):
        _validate_object(instance, schema, root, where)
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            validate(item, schema["items"], root, f"{where}[{i}]")


def _validate_object(
    instance: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], where: str
) -> None:
    for key in schema.get("required", []):
        if key not in instance:
            raise SchemaMismatch(f"{where}: required property {key!r} is missing")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in instance.items():
        if key in properties:
            validate(value, properties[key], root, f"{where}.{key}")
        elif extra is False:
            raise SchemaMismatch(f"{where}: property {key!r} is not allowed")
        elif isinstance(extra, dict):
            validate(value, extra, root, f"{where}.{key}")


def test_validator_refuses_what_breaks_a_schema(spec: dict[str, Any]) -> None:
    # The checks below are only worth something if the validator can say no.
    schemas = spec["components"]["schemas"]
    bad = [
        ({"matched": "1", "requeued": 0}, schemas["ReplayResult"]),
        ({"matched": 1}, schemas["ReplayResult"]),
        ({"accepted": -1, "duplicates": 0, "rejected": []}, schemas["IngestResult"]),
        ({"accepted": 1, "duplicates": 0, "rejected": [{"index": 0}]}, schemas["IngestResult"]),
        ({"ok": "yes"}, schemas["Health"]),
        ({"status": ["failed"]}, schemas["ReplayRequest"]),
        ({"colour": "red"}, schemas["ReplayRequest"]),
        ({"error": None}, schemas["Error"]),
        ({"id": 1, "source": "s", "at": "yesterday", "error": "e", "payload": "p"},
         schemas["Problem"]),
        ({"id": True, "source": "s", "at": None, "error": "e", "payload": "p"},
         schemas["Problem"]),
    ]
    for instance, schema in bad:
        with pytest.raises(SchemaMismatch):
            validate(instance, schema, spec)


def test_validator_accepts_what_matches_a_schema(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    validate({"matched": 2, "requeued": 0, "still_rejected": 1}, schemas["ReplayResult"], spec)
    validate({"id": 3, "source": "s", "at": None, "error": "e", "payload": "p"},
             schemas["Problem"], spec)
    validate({"id": 7, "event": "open", "timestamp": 1795167000}, schemas["Event"], spec)


# --- routes ------------------------------------------------------------------------------------


def app_routes() -> set[tuple[str, str]]:
    app = create_app(make_settings("sqlite://:memory:"), retention=False)
    return {
        (route.method.upper(), route.resource.canonical)
        for route in app.router.routes()
        if route.method.upper() != "HEAD" and route.resource is not None
    }


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS and method != "head"
    }


def test_every_registered_route_is_in_the_spec(spec: dict[str, Any]) -> None:
    missing = app_routes() - spec_operations(spec)
    assert missing == set(), f"routes the spec does not describe: {sorted(missing)}"


def test_every_operation_in_the_spec_is_a_registered_route(spec: dict[str, Any]) -> None:
    extra = spec_operations(spec) - app_routes()
    assert extra == set(), f"operations the app does not serve: {sorted(extra)}"


def test_routes_are_what_the_contract_lists() -> None:
    assert app_routes() == {
        ("POST", "/webhooks/{token}"), ("GET", "/webhooks/{token}"),
        ("POST", "/webhooks/nudgespot/{token}"), ("GET", "/webhooks/nudgespot/{token}"),
        ("GET", "/status"), ("POST", "/replay"), ("GET", "/metrics"),
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.yaml"),
    }


# --- real requests, checked against the spec ---------------------------------------------------


@dataclass
class Answer:
    status: int
    media_type: str
    text: str


Call = Callable[[TestClient], Awaitable[Answer]]


async def call(client: TestClient, method: str, url: str, **kwargs: Any) -> Answer:
    async with client.request(method, url, **kwargs) as resp:
        return Answer(resp.status, resp.content_type, await resp.text())


def event(key: str, **extra: Any) -> dict[str, Any]:
    return {"id": key, "event": "open", "timestamp": int(time.time()) - 60,
            "subscriber": {"uid": "42"}, **extra}


def webhook(body: Any = None, *, token: str = TOKEN, data: bytes | None = None,
            content_type: str = "application/json") -> Call:
    async def run(client: TestClient) -> Answer:
        payload = data if data is not None else json.dumps(body).encode()
        return await call(client, "POST", f"/webhooks/nudgespot/{token}", data=payload,
                          headers={"Content-Type": content_type})
    return run


def get(url: str, headers: dict[str, str] | None = None) -> Call:
    async def run(client: TestClient) -> Answer:
        return await call(client, "GET", url, headers=headers or {})
    return run


def replay(body: Any = None, *, data: bytes | None = None,
           content_type: str = "application/json", headers: dict[str, str] | None = None) -> Call:
    async def run(client: TestClient) -> Answer:
        payload = data if data is not None else json.dumps(body).encode()
        return await call(client, "POST", "/replay", data=payload,
                          headers={**(BEARER if headers is None else headers),
                                   "Content-Type": content_type})
    return run


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # the spec's path template
    run: Call
    status: int  # what the service answers (checked too, so the case means what it says)
    unreachable_db: bool = False


WEBHOOK = "/webhooks/nudgespot/{token}"
CASES = [
    Case("webhook-200", "POST", WEBHOOK, webhook([event("c-1")]), 200),
    Case("webhook-200-some-rejected", "POST", WEBHOOK,
         webhook([event("c-2"), {"event": "open"}]), 200),
    Case("webhook-400-not-json", "POST", WEBHOOK, webhook(data=b"{oops"), 400),
    Case("webhook-400-nothing-accepted", "POST", WEBHOOK, webhook([{"event": "nope"}]), 400),
    Case("webhook-401", "POST", WEBHOOK, webhook([event("c-3")], token="unknown-token"), 401),
    Case("webhook-413", "POST", WEBHOOK,
         webhook([event("c-4", properties={"pad": "x" * MAX_BODY})]), 413),
    Case("webhook-415", "POST", WEBHOOK,
         webhook(data=b"id=1", content_type="application/x-www-form-urlencoded"), 415),
    Case("webhook-503", "POST", WEBHOOK, webhook([event("c-5")]), 503, unreachable_db=True),
    Case("webhook-check-200", "GET", WEBHOOK, get(f"/webhooks/nudgespot/{TOKEN}"), 200),
    Case("webhook-check-401", "GET", WEBHOOK, get("/webhooks/nudgespot/unknown-token"), 401),
    Case("status-200", "GET", "/status", get("/status", BEARER), 200),
    Case("status-200-html", "GET", "/status", get("/status", {**BEARER, "Accept": "text/html"}),
         200),
    Case("status-401", "GET", "/status", get("/status"), 401),
    Case("status-503", "GET", "/status", get("/status", BEARER), 503, unreachable_db=True),
    Case("replay-200", "POST", "/replay", replay({"status": ["dead"]}), 200),
    Case("replay-200-dry-run", "POST", "/replay", replay({"dry_run": True}), 200),
    Case("replay-200-rejected", "POST", "/replay", replay({"rejected": True}), 200),
    Case("replay-400", "POST", "/replay", replay({"colour": "red"}), 400),
    Case("replay-400-not-json", "POST", "/replay", replay(data=b"{oops"), 400),
    Case("replay-401", "POST", "/replay", replay({}, headers={}), 401),
    Case("replay-415", "POST", "/replay", replay(data=b"{}", content_type="text/plain"), 415),
    Case("replay-503", "POST", "/replay", replay({}), 503, unreachable_db=True),
    Case("metrics-200", "GET", "/metrics", get("/metrics", BEARER), 200),
    Case("metrics-401", "GET", "/metrics", get("/metrics"), 401),
    # admin_views.metrics means to serve the counters when the gauges cannot be refreshed.
    Case("metrics-200-database-down", "GET", "/metrics", get("/metrics", BEARER), 200,
         unreachable_db=True),
    Case("healthz-200", "GET", "/healthz", get("/healthz"), 200),
    Case("readyz-200", "GET", "/readyz", get("/readyz"), 200),
    Case("readyz-503", "GET", "/readyz", get("/readyz"), 503, unreachable_db=True),
    Case("openapi-200", "GET", "/openapi.yaml", get("/openapi.yaml"), 200),
]


async def seed_every_kind_of_row(client: TestClient) -> None:
    """Data that fills every field of the status report: delivered, dead, pending, rejected,
    a duplicate and a Retry-After hold."""
    store = client.app[STORE]
    async with client.post(f"/webhooks/nudgespot/{TOKEN}", json=[
        event("s-delivered"), event("s-dead", message={"subject": "<b>hi</b>"}),
        event("s-pending"), event("s-pending"), {"event": "open", "id": "s-bad"},
    ]) as resp:
        assert resp.status == 200, await resp.text()
    now = datetime.now(timezone.utc)
    with store.db.orm():
        await Event.filter(dedup_key="s-delivered").update(status="delivered", delivered_at=now)
        await Event.filter(dedup_key="s-dead").update(
            status="dead", attempts=1, last_error="Segment answered 400: bad")
    await store.admin.recount()
    await store.outbox.hold_source("default", now + timedelta(minutes=5))


def response_spec(spec: dict[str, Any], case: Case, status: int) -> dict[str, Any]:
    operation = spec["paths"][case.path][case.method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, (
        f"{case.method} {case.path} answered {status}, documented: {sorted(responses)}")
    response = responses[str(status)]
    return resolve(spec, response["$ref"]) if "$ref" in response else response


PARAMS = [pytest.param(c, id=c.name) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
async def test_answer_is_documented_and_matches_its_schema(
    aiohttp_client: Any, sqlite_url: str, spec: dict[str, Any], case: Case
) -> None:
    url = UNREACHABLE_POSTGRES_URL if case.unreachable_db else sqlite_url
    settings = make_settings(url, admin={"token": ADMIN_TOKEN},
                             server={"max_body_bytes": MAX_BODY})
    client = await aiohttp_client(
        create_app(settings, retention=False, migrate_sqlite=not case.unreachable_db))
    if not case.unreachable_db:
        await seed_every_kind_of_row(client)

    answer = await case.run(client)

    assert answer.status == case.status, answer.text
    documented = response_spec(spec, case, answer.status)
    content = documented.get("content", {})
    assert answer.media_type in content, (
        f"{answer.media_type} is not documented for {answer.status}: {sorted(content)}")
    if answer.media_type == "application/json":
        validate(json.loads(answer.text), content[answer.media_type]["schema"], spec)
