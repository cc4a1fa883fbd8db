"""Shared helpers of the hostile-input, property, schemathesis and security tests.

Everything goes through the real application (service.app.create_app) over loopback HTTP;
what the service stored is read back through the application's own store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

from models import Store
from models.tables import Event, RejectedEvent
from service.app import STORE
from tests.conftest import TABLES, TOKEN, stored_events

JSON_HEADERS = {"Content-Type": "application/json"}
WEBHOOK = f"/webhooks/nudgespot/{TOKEN}"
DOCUMENTED_WEBHOOK_STATUSES = {200, 400, 401, 413, 415}


def recent_ts(offset_s: int = 120) -> int:
    """A Unix timestamp the parser accepts: a little in the past."""
    return int(time.time()) - offset_s


def good_event(key: str, **changes: Any) -> dict[str, Any]:
    """A valid Nudgespot event with the given id (dedup key)."""
    body: dict[str, Any] = {
        "id": key,
        "event": "email_opened",
        "timestamp": recent_ts(),
        "subscriber": {"uid": f"uid-{key}", "email": "ada@example.com"},
        "message": {"id": "msg-1", "subject": "Hello"},
    }
    body.update(changes)
    return body


@dataclass
class Answer:
    status: int
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.text)


async def post_raw(
    client: TestClient,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    path: str = WEBHOOK,
    **kwargs: Any,
) -> Answer:
    """POST raw bytes; return status, body text and headers."""
    async with client.post(
        path, data=body, headers=JSON_HEADERS if headers is None else headers, **kwargs
    ) as resp:
        return Answer(resp.status, await resp.text(), dict(resp.headers))


async def post_json(client: TestClient, document: Any, *, path: str = WEBHOOK) -> Answer:
    return await post_raw(client, json.dumps(document).encode(), path=path)


def store_of(client: TestClient) -> Store:
    return client.server.app[STORE]


async def event_rows(client: TestClient) -> list[Event]:
    store = store_of(client)
    return await stored_events(store)


async def reject_rows(client: TestClient) -> list[RejectedEvent]:
    store = store_of(client)
    with store.db.orm():
        return await RejectedEvent.all().order_by("id")


async def table_counts(client: TestClient) -> dict[str, int]:
    """Row count of every table of the service (fails when one is gone)."""
    store = store_of(client)
    counts = {}
    with store.db.orm():
        for table in TABLES:
            [row] = await store.db.fetch(
                f"SELECT COUNT(*) AS n FROM {table}"
            )
            counts[table] = int(row["n"])
    return counts


async def status_json(client: TestClient, headers: dict[str, str] | None = None) -> Answer:
    async with client.get("/status", headers=headers or {}) as resp:
        return Answer(resp.status, await resp.text(), dict(resp.headers))


async def status_html(client: TestClient, headers: dict[str, str] | None = None) -> Answer:
    async with client.get("/status", headers={"Accept": "text/html", **(headers or {})}) as resp:
        return Answer(resp.status, await resp.text(), dict(resp.headers))


async def still_serving(client: TestClient) -> None:
    """The process answers health checks and the webhook's URL check."""
    async with client.get("/healthz") as resp:
        assert resp.status == 200
    async with client.get("/readyz") as resp:
        assert resp.status == 200, await resp.text()
    async with client.get(WEBHOOK) as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "source": "default"}


async def assert_stored_once(client: TestClient, document: dict[str, Any]) -> None:
    """The event with this id is stored exactly once, with its payload as posted."""
    rows = [r for r in await event_rows(client) if r.dedup_key == document["id"]]
    assert len(rows) == 1, f"{document['id']} stored {len(rows)} times"
    assert rows[0].source == "default"
    assert json.loads(rows[0].payload) == document
