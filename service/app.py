"""The composition root: builds the aiohttp application from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from inbound.webhook import Webhook, WebhookSource
from models import DatabaseUnavailable, Store
from models.outbox import OutboxQueries
from models.writer import GroupWriter
from service import __version__
from service.admin_views import AdminViews
from service.config import Settings, placeholder_secrets, source_verifier
from service.metrics import Metrics
from service.wiring import prepare_message

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
RETENTION_INTERVAL_S = 3600
SAMPLE_INTERVAL_S = 60

STORE = web.AppKey("store", Store)
WRITER = web.AppKey("writer", GroupWriter)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)


class Publisher(Protocol):
    """What the application needs of the republishing side."""

    async def start(self, outbox: OutboxQueries) -> None: ...

    async def stop(self) -> None: ...

    def wake(self, source: str) -> None: ...


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    metrics: Metrics | None = None,
    migrate_sqlite: bool = True,
    retention: bool = True,
) -> web.Application:
    """Return the service's application.

    `publisher` is the republishing side (None: ingest only); pass the same `metrics` that the
    publisher reports to, so /metrics shows both sides.
    """
    metrics = metrics or Metrics()
    app = web.Application(client_max_size=settings.server.max_body_bytes,
                          middlewares=[bugs_are_not_outages(metrics)])
    app[SETTINGS] = settings
    app.on_response_prepare.append(_server_header)
    app[METRICS] = metrics
    store = Store(settings.database.url)
    app[STORE] = store
    writer = GroupWriter(store.ingest, writers=store.db.concurrent_writers)
    app[WRITER] = writer
    # Exits run in reverse: the publisher stops, then the writer drains, then the store closes.
    app.cleanup_ctx.append(_store_ctx(store, migrate_sqlite, exclusive=publisher is not None))
    app.cleanup_ctx.append(_writer_ctx(writer))
    if retention:
        app.cleanup_ctx.append(_retention_ctx(store, settings.retention.delivered_days))
    if publisher is not None:
        app.cleanup_ctx.append(_publisher_ctx(publisher, store))
    wake = publisher.wake if publisher is not None else (lambda source: None)
    webhook = Webhook(
        webhook_sources(settings),
        writer.submit,
        max_body_bytes=settings.server.max_body_bytes,
        on_stored=wake,
        on_request=metrics.request_done,
        prepare=prepare_message,
    )
    app.add_routes(webhook.routes())
    app.add_routes(AdminViews(settings, store, metrics, wake).routes())
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


def bugs_are_not_outages(metrics: Metrics) -> Any:
    """Return a middleware that answers an unexpected exception (a bug, not an outage: those
    are answered 503 where they happen) with a generic 500, logs it at ERROR with its
    traceback, and counts it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            return _json_error(request, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            route = _route_name(request)  # never the path: a webhook's path holds its token
            logger.exception("internal error answering %s %s", request.method, route)
            metrics.internal_error(route)
            return web.json_response({"error": "internal error"}, status=500)

    return middleware


def _json_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own plain-text errors (no such route, method not allowed) as JSON, like
    every other answer of the service."""
    error = exc.reason.lower()
    if exc.status == 404 and request.path.rstrip("/") in ("/webhooks", "/webhooks/nudgespot"):
        error = "no webhook token in the URL: POST /webhooks/<token>"
    return web.json_response({"error": error}, status=exc.status, headers={
        k: v for k, v in exc.headers.items() if k.lower() == "allow"})


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "nudgespot-segment"  # not the Python and aiohttp versions


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "-"


def _outage_noise_as_warning(store: Store) -> Any:
    """Return a loop exception handler that logs what a database outage leaves behind in the
    driver's background tasks (a connection lost, never awaited) as the WARNING it is;
    anything else goes to asyncio's own handler (an ERROR)."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is not None and isinstance(store.db.translate(exc), DatabaseUnavailable):
            logger.warning("database connection lost in the background: %s: %s",
                           type(exc).__name__, str(exc)[:200])
            return
        loop.default_exception_handler(context)

    return handler


def webhook_sources(settings: Settings) -> list[WebhookSource]:
    """Return what the webhook needs of each source: token, format and its checks."""
    return [
        WebhookSource(s.name, s.token, settings.format_of(s), source_verifier(settings, s),
                      s.basic_auth)
        for s in settings.sources
    ]


def _store_ctx(store: Store, migrate_sqlite: bool, *, exclusive: bool):  # noqa: ANN202
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # A publishing app claims the database first (one process serves a SQLite file).
        release = store.db.exclusive() if exclusive else (lambda: None)
        try:
            async with _opened(store, migrate_sqlite, app[SETTINGS]):
                yield
        finally:
            release()

    return ctx


@contextlib.asynccontextmanager
async def _opened(store: Store, migrate_sqlite: bool, settings: Settings) -> AsyncIterator[None]:
    if migrate_sqlite and store.db.migrates_on_serve:
        await store.migrate()
    await store.open()
    asyncio.get_running_loop().set_exception_handler(_outage_noise_as_warning(store))
    for key in placeholder_secrets(settings):
        logger.warning("%s still holds the placeholder from config.yaml; set it", key)
    logger.info("nudgespot-segment %s starting: database %s; sources %s", __version__,
                store.db.dialect.name,
                ", ".join(f"{s.name} (format {s.format})" for s in settings.sources))
    yield
    await store.close()
    logger.info("nudgespot-segment stopped: the database is closed")


def _writer_ctx(writer: GroupWriter):  # noqa: ANN202 - cleanup_ctx factory
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await writer.start()
        yield
        await writer.stop()

    return ctx


def _retention_ctx(store: Store, days: int):  # noqa: ANN202 - cleanup_ctx factory
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.add_job(
            run_retention, "interval", args=[store, days], seconds=RETENTION_INTERVAL_S,
            next_run_time=datetime.now(timezone.utc) + timedelta(seconds=60),
            max_instances=1, coalesce=True, misfire_grace_time=RETENTION_INTERVAL_S,
        )
        scheduler.add_job(
            sample_backlog, "interval", args=[store], seconds=SAMPLE_INTERVAL_S,
            next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True,
            misfire_grace_time=SAMPLE_INTERVAL_S,
        )
        scheduler.start()
        yield
        scheduler.shutdown(wait=False)

    return ctx


async def sample_backlog(store: Store) -> None:
    """Record this minute's backlog per source, for the status page's chart."""
    try:
        await store.admin.sample_backlog()
    except DatabaseUnavailable as exc:
        logger.debug("backlog sample skipped: %s", exc)


async def run_retention(store: Store, days: int) -> tuple[int, int]:
    """Delete delivered events and quarantined rejects older than `days`; return the counts."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    try:
        events, rejects = await store.admin.purge(older_than=cutoff)
    except DatabaseUnavailable as exc:
        logger.warning("retention skipped: %s", exc)
        return 0, 0
    if events or rejects:
        logger.info("retention deleted %d delivered event(s), %d reject(s) older than %s",
                    events, rejects, cutoff.isoformat(timespec="seconds"))
    return events, rejects


def _publisher_ctx(publisher: Publisher, store: Store):  # noqa: ANN202 - cleanup_ctx factory
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await publisher.start(store.outbox)
        yield
        await publisher.stop()

    return ctx


async def healthz(request: web.Request) -> web.Response:
    """Answer 200 while the process is serving."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 when the database answers, 503 otherwise."""
    try:
        await asyncio.wait_for(request.app[STORE].ping(), READY_TIMEOUT_S)
    except (TimeoutError, DatabaseUnavailable) as exc:
        reason = str(exc) or "database did not answer in time"
        return web.json_response({"ok": False, "error": reason}, status=503)
    return web.json_response({"ok": True})
