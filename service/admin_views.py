"""Operator endpoints: /status, /replay, /metrics, /openapi.yaml."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models import DatabaseUnavailable, Store
from models.time import utcnow
from service import __version__
from service.admin_auth import admin_only
from service.config import Settings
from service.metrics import Metrics
from service.replay import ReplayRequestError, replay_request, run_replay
from service.status import CHART_WINDOW, status_document, status_html

logger = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
RETRY_AFTER_S = "5"


class AdminViews:
    """Handlers of the operator endpoints; every one but the spec needs admin auth."""

    def __init__(
        self, settings: Settings, store: Store, metrics: Metrics, wake: Callable[[str], None]
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._wake = wake
        self._formats = settings.source_formats()

    def routes(self) -> list[web.RouteDef]:
        guard = admin_only(self._settings.admin.token)
        return [
            web.get("/status", guard(self.status)),
            web.post("/replay", guard(self.replay)),
            web.get("/metrics", guard(self.metrics)),
            web.get("/openapi.yaml", self.openapi),
        ]

    async def status(self, request: web.Request) -> web.Response:
        """The status report: HTML for browsers, JSON otherwise."""
        try:
            now = utcnow()
            stats = await self._store.admin.source_stats(now)
            dead = await self._store.admin.latest_dead()
            rejected = await self._store.admin.latest_rejected()
        except DatabaseUnavailable as exc:
            return _unavailable(exc)
        names = [s.name for s in self._settings.sources]
        document = status_document(names, stats, dead, rejected, now, __version__)
        if _wants_html(request):
            try:  # the chart's minutes: for the page only, so the JSON stays small
                history = await self._store.admin.history(now - CHART_WINDOW)
            except DatabaseUnavailable as exc:
                return _unavailable(exc)
            return web.Response(text=status_html(document, history, now),
                                content_type="text/html", headers={"Cache-Control": "no-store"})
        return web.json_response(document, headers={"Cache-Control": "no-store"})

    async def replay(self, request: web.Request) -> web.Response:
        """Requeue the matching events (or admit quarantined ones); answer the counts."""
        if request.content_type != "application/json":
            return web.json_response({"error": "Content-Type must be application/json"},
                                     status=415)
        try:
            document = json.loads(await request.read() or b"{}")
            replay = replay_request(document, self._formats.keys())
        except RecursionError:
            return web.json_response({"error": "bad replay request: nested too deeply"},
                                     status=400)
        except (ValueError, ReplayRequestError) as exc:
            return web.json_response({"error": f"bad replay request: {exc}"}, status=400)
        try:
            result = await run_replay(self._store, replay, formats=self._formats)
        except DatabaseUnavailable as exc:
            return _unavailable(exc)
        logger.info("replay %s: %s", document, result.as_json())
        if result.requeued:
            for source in self._settings.sources:
                self._wake(source.name)
        return web.json_response(result.as_json())

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition, gauges refreshed from the database."""
        try:
            now = utcnow()
            self._metrics.refresh(await self._store.admin.source_stats(now), now)
        except DatabaseUnavailable as exc:
            logger.warning("metrics: gauges not refreshed: %s", exc)
        body = generate_latest(self._metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI description of every endpoint."""
        return web.Response(text=OPENAPI_PATH.read_text(encoding="utf-8"),
                            content_type="application/yaml")


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and request.query.get("format") != "json"


def _unavailable(exc: Exception) -> web.Response:
    return web.json_response(
        {"error": "storage is unavailable, retry later"},
        status=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )
