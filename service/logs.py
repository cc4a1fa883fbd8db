"""Logging set-up: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from service.config import LoggingSettings


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: LoggingSettings) -> None:
    """Send logs to stderr at the configured level and format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Tortoise logs every statement with its parameters at DEBUG: never let that leak data.
    logging.getLogger("tortoise").setLevel(max(logging.INFO, root.level))
    # aiosqlite logs each statement with its parameters (subscribers' ids) at DEBUG.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    # segment-analytics-python logs whole request bodies, write key included, at DEBUG, and
    # an ERROR for every batch answered with a non-JSON body; the publisher says what went
    # wrong once per outage, so only the library's CRITICAL lines pass.
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
