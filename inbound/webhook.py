"""The webhook views: authenticate, parse, store, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from inbound.formats import Format, NudgespotFormat
from inbound.parse import Accepted, BodyError, Ignored, Rejected
from inbound.signature import Verifier, basic_auth_problem, tokens_equal
from models import DatabaseUnavailable, IngestBatch, IngestResult, NewEvent, NewReject

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
JSON_TYPES = ("application/json",)


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """What the webhook needs to know of a configured source."""

    name: str
    token: str
    format: Format = NudgespotFormat()
    verifier: Verifier | None = None  # the format's signature check, when a secret is set
    basic_auth: str = ""  # "user:password" expected in an Authorization: Basic header

    def __repr__(self) -> str:
        return f"WebhookSource(name={self.name!r})"


Submit = Callable[[IngestBatch], Awaitable[IngestResult]]
OnStored = Callable[[str], None]
# Returns an accepted event's outgoing message, ready to store (None: made when published).
Prepare = Callable[[str, Accepted], "str | None"]


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """What one webhook POST came to, for logs and metrics."""

    source: str  # "-" when the token matched no source
    status: int
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    seconds: float = 0.0


OnRequest = Callable[[RequestOutcome], None]


class WebhookError(Exception):
    """A request that is answered with an error status and a JSON reason."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.extra = extra


class Webhook:
    """The POST and GET handlers of /webhooks/{token} (and /webhooks/nudgespot/{token})."""

    def __init__(
        self,
        sources: Sequence[WebhookSource],
        submit: Submit,
        *,
        max_body_bytes: int,
        on_stored: OnStored = lambda source: None,
        on_request: OnRequest = lambda outcome: None,
        prepare: Prepare = lambda source, accepted: None,
    ) -> None:
        self._sources = tuple(sources)
        self._prepare = prepare
        self._submit = submit
        self._max_body_bytes = max_body_bytes
        self._on_stored = on_stored
        self._on_request = on_request

    def routes(self) -> list[web.RouteDef]:
        """Return the routes to add to the application."""
        return [
            web.post("/webhooks/{token}", self.post),
            web.get("/webhooks/{token}", self.check),
            web.post("/webhooks/nudgespot/{token}", self.post),
            web.get("/webhooks/nudgespot/{token}", self.check),
        ]

    async def check(self, request: web.Request) -> web.Response:
        """Answer a URL check: 200 with the source's name for a known token."""
        try:
            source = self._authenticate_token(request)
        except WebhookError as exc:
            return _error(exc)
        return web.json_response({"ok": True, "source": source.name})

    async def post(self, request: web.Request) -> web.Response:
        """Store the body's events and answer only after they are committed."""
        started = time.perf_counter()
        source_name = "-"
        counts: dict[str, int] = {}
        try:
            source = self._authenticate_token(request)
            source_name = source.name
            body = await self._read_body(request)
            self._authenticate_signature(source, request, body)
            response, counts = await self._ingest(source, body)
        except WebhookError as exc:
            response = _error(exc)
        outcome = RequestOutcome(
            source_name, response.status, **counts, seconds=time.perf_counter() - started
        )
        _log_request(outcome)
        self._on_request(outcome)
        return response

    def _authenticate_token(self, request: web.Request) -> WebhookSource:
        token = request.match_info["token"]
        found = None
        for source in self._sources:  # compare with every source: time must not reveal which
            if tokens_equal(token, source.token):
                found = source
        if found is None:
            raise WebhookError(401, "unknown webhook token")
        return found

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise WebhookError(413, f"body is larger than {self._max_body_bytes} bytes")
        if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
            shown = request.content_type or "none"
            raise WebhookError(415, f"Content-Type must be application/json, not {shown[:80]}")
        try:
            if length is not None and not request.headers.get("Content-Encoding"):
                # The common case: the size is known and was checked above.
                return await request.read()
        except web.RequestPayloadError as exc:
            raise WebhookError(400, "body could not be read", close=True) from exc
        chunks, size = [], 0
        try:
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > self._max_body_bytes:
                    raise WebhookError(413, f"body is larger than {self._max_body_bytes} bytes")
                chunks.append(chunk)
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on plain bytes
            # The connection's parser is broken past repair: answer, then close it, so the
            # client does not send its next request down a connection about to drop.
            raise WebhookError(400, "body could not be read (bad Content-Encoding?)",
                               close=True) from exc
        return b"".join(chunks)

    def _authenticate_signature(
        self, source: WebhookSource, request: web.Request, body: bytes
    ) -> None:
        if source.basic_auth:
            problem = basic_auth_problem(source.basic_auth, request.headers.get("Authorization"))
            if problem is not None:
                raise WebhookError(401, problem)
        if source.verifier is not None:
            problem = source.verifier(request.headers, body, time.time())
            if problem is not None:
                raise WebhookError(401, problem)

    async def _ingest(
        self, source: WebhookSource, body: bytes
    ) -> tuple[web.Response, dict[str, int]]:
        try:
            parsed = source.format.parse(body, datetime.now(timezone.utc))
        except BodyError as exc:
            whole = NewReject(source.name, None, _body_text(body), str(exc))
            await self._store(IngestBatch(rejects=[whole]))
            raise WebhookError(400, str(exc)) from None
        accepted = [p for p in parsed if isinstance(p, Accepted)]
        rejected = [p for p in parsed if isinstance(p, Rejected)]
        ignored = sum(1 for p in parsed if isinstance(p, Ignored))
        result = await self._store(
            _batch(source.name, accepted, rejected, ignored, self._prepare))
        if result.accepted:
            self._on_stored(source.name)
        answer: dict[str, Any] = {"accepted": result.accepted, "duplicates": result.duplicates}
        if source.format.ignores:  # the key is there for every answer of such a source
            answer["ignored"] = ignored
        answer["rejected"] = [{"index": r.index, "error": r.reason} for r in rejected]
        counts = {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": len(rejected),
            "ignored": ignored,
        }
        if not accepted and not ignored:
            error = {"error": "no event in the body could be accepted", **answer}
            return web.json_response(error, status=400), counts
        return web.json_response(answer), counts

    async def _store(self, batch: IngestBatch) -> IngestResult:
        try:
            return await self._submit(batch)
        except DatabaseUnavailable as exc:
            logger.warning("webhook storage unavailable: %s", exc)
            raise WebhookError(
                503, "storage is unavailable, retry later", retry_after=RETRY_AFTER_S
            ) from None


def _batch(
    source: str, accepted: list[Accepted], rejected: list[Rejected], ignored: int,
    prepare: Prepare,
) -> IngestBatch:
    events = [
        NewEvent(source, a.dedup_key, a.event_type, a.event_time, a.fields_json, a.payload,
                 prepare(source, a))
        for a in accepted
    ]
    rejects = [NewReject(source, r.index, r.payload, r.reason) for r in rejected]
    return IngestBatch(events=events, rejects=rejects, ignored={source: ignored} if ignored else {})


def _body_text(body: bytes) -> str:
    """Return a body as storable text: undecodable bytes and NULs escaped, never lost."""
    return body.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _error(exc: WebhookError) -> web.Response:
    headers = {}
    retry_after = exc.extra.pop("retry_after", None)
    close = exc.extra.pop("close", False)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    response = web.json_response({"error": exc.error, **exc.extra}, status=exc.status,
                                 headers=headers)
    if close:
        response.force_close()
    return response


def _log_request(outcome: RequestOutcome) -> None:
    logger.info(
        "webhook source=%s status=%d accepted=%d duplicates=%d rejected=%d ignored=%d ms=%.1f",
        outcome.source,
        outcome.status,
        outcome.accepted,
        outcome.duplicates,
        outcome.rejected,
        outcome.ignored,
        outcome.seconds * 1000,
    )
