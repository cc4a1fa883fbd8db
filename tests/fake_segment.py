"""A small fake of Segment's tracking API that speaks its wire protocol and records.

POST /v1/batch with Basic auth (write key as user, empty password), gzip bodies, Segment's
limits (500 KB per request, 2,500 messages, 32 KB per message) and answers that tests choose:
200, 400 for chosen messageIds, 429 with Retry-After, 500, slow answers, or a reset connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

MAX_REQUEST_BYTES = 500 * 1024
MAX_MESSAGES = 2500
MAX_MESSAGE_BYTES = 32 * 1024


@dataclass
class Received:
    """One request that reached /v1/batch, with what the fake answered."""

    write_key: str
    gzipped: bool
    body_bytes: int
    messages: list[dict[str, Any]]
    status: int


@dataclass
class Plan:
    """A scripted answer: used `times` times (None: until changed)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None
    delay_s: float = 0.0
    reset: bool = False


class FakeSegment:
    """The fake's state and handler; mount with `app()` and point segment.endpoint at it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.plans: list[Plan] = []
        self.reject_ids: dict[str, str] = {}  # messageId -> reason answered with 400
        self.delay_s = 0.0
        self.changed = asyncio.Event()

    # --- scripting ----------------------------------------------------------------------

    def answer(
        self,
        status: int,
        *,
        times: int | None = None,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next `times` requests (all, when None) with this status."""
        self.plans.append(Plan(status, headers or {}, times, delay_s))

    def reset_connections(self, *, times: int | None = None) -> None:
        """Drop the next `times` connections without an answer."""
        self.plans.append(Plan(0, times=times, reset=True))

    def recover(self) -> None:
        """Forget scripted answers: answer 200 again."""
        self.plans.clear()

    def reject(self, message_id: str, reason: str = "invalid message") -> None:
        """Answer 400 to any batch that contains this messageId."""
        self.reject_ids[message_id] = reason

    # --- what arrived -------------------------------------------------------------------

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Messages of the requests answered 2xx, in arrival order."""
        return [m for r in self.received if 200 <= r.status < 300 for m in r.messages]

    def delivered_ids(self) -> list[str]:
        return [m["messageId"] for m in self.delivered]

    def tracks(self) -> Iterator[dict[str, Any]]:
        return (m for m in self.delivered if m["type"] == "track")

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` distinct messageIds were delivered; return them all."""
        async def reached() -> None:
            while len(set(self.delivered_ids())) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), timeout_s)
        return self.delivered

    # --- the endpoint -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/batch", self.batch)
        return app

    async def batch(self, request: web.Request) -> web.StreamResponse:
        write_key = _basic_user(request.headers.get("Authorization", ""))
        if write_key is None:
            return _json(401, "unauthorized", "missing or malformed Basic auth")
        gzipped = request.headers.get("Content-Encoding", "") == "gzip"
        body = await request.read()  # aiohttp has already undone the gzip
        status, answer = self._judge(body)
        plan = self._next_plan()
        if status == 200 and plan is not None:
            if plan.delay_s:
                await asyncio.sleep(plan.delay_s)
            if plan.reset:
                assert request.transport is not None
                request.transport.abort()
                self._record(write_key, gzipped, body, status=0)
                raise ConnectionResetError("fake reset")
            status, answer = plan.status, web.json_response(
                {"code": "scripted", "message": f"scripted {plan.status}"},
                status=plan.status, headers=plan.headers,
            )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self._record(write_key, gzipped, body, status)
        return answer

    def _next_plan(self) -> Plan | None:
        while self.plans:
            plan = self.plans[0]
            if plan.times is None:
                return plan
            if plan.times > 0:
                plan.times -= 1
                if plan.times == 0:
                    self.plans.pop(0)
                return plan
            self.plans.pop(0)
        return None

    def _judge(self, body: bytes) -> tuple[int, web.Response]:
        if len(body) > MAX_REQUEST_BYTES:
            return 400, _json(400, "too_large", f"request is {len(body)} bytes")
        try:
            document = json.loads(body)
            messages = document["batch"]
        except (ValueError, KeyError, TypeError):
            return 400, _json(400, "invalid_json", "body is not a batch")
        if len(messages) > MAX_MESSAGES:
            return 400, _json(400, "too_many", f"{len(messages)} messages in one batch")
        for message in messages:
            problem = message_problem(message)
            if problem is None and message.get("messageId") in self.reject_ids:
                problem = self.reject_ids[message["messageId"]]
            if problem is not None:
                return 400, _json(400, "invalid_message", problem)
        return 200, web.json_response({"success": True})

    def _record(self, write_key: str, gzipped: bool, body: bytes, status: int) -> None:
        try:
            messages = json.loads(body)["batch"] if status == 200 else []
        except (ValueError, KeyError, TypeError):
            messages = []
        self.received.append(Received(write_key, gzipped, len(body), messages, status))
        self.changed.set()


def message_problem(message: Any) -> str | None:
    """Return what Segment would refuse in a message, or None."""
    if not isinstance(message, dict):
        return "message is not an object"
    size = len(json.dumps(message).encode())
    if size > MAX_MESSAGE_BYTES:
        return f"message is {size} bytes"
    if message.get("type") not in ("track", "identify"):
        return f"unexpected type {message.get('type')!r}"
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 100:
        return "messageId missing or longer than 100 characters"
    if not (message.get("userId") or message.get("anonymousId")):
        return "userId or anonymousId required"
    if message["type"] == "track" and not isinstance(message.get("event"), str):
        return "track without an event name"
    try:
        datetime.fromisoformat(str(message.get("timestamp")).replace("Z", "+00:00"))
    except ValueError:
        return "timestamp is not ISO 8601"
    return None


def _basic_user(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme != "Basic" or not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user if sep and not password and user else None


def _json(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)
