"""The status and replay commands: the same figures and filters as the HTTP endpoints."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from models import DatabaseUnavailable, Store
from models.time import utcnow
from service import __version__
from service.config import Settings
from service.replay import ReplayRequestError, replay_request, run_replay
from service.status import status_document

TABLE_COLUMNS = (
    ("pending", "pending"),
    ("retrying", "retrying"),
    ("delivered", "delivered"),
    ("dead", "dead"),
    ("rejected", "rejected"),
    ("duplicates", "dups"),
    ("ignored", "ignored"),
    ("oldest_pending_age_s", "oldest_s"),
    ("delivered_last_hour", "last_hour"),
    ("last_delivery_at", "last_delivery"),
)
EXIT_UNHEALTHY = 1
EXIT_UNAVAILABLE = 3
SHORT_RUN = 1000  # replays up to this many events finish without a progress bar


async def _report(settings: Settings) -> dict[str, Any]:
    async with Store(settings.database.url) as store:
        now = utcnow()
        stats = await store.admin.source_stats(now)
        dead = await store.admin.latest_dead(5)
        rejected = await store.admin.latest_rejected(5)
    names = [s.name for s in settings.sources]
    return status_document(names, stats, dead, rejected, now, __version__)


async def print_status(
    settings: Settings, check: bool, max_pending_age_s: float, as_json: bool,
    out: TextIO = sys.stdout,
) -> int:
    """Print the report; return 1 under --check when something needs attention."""
    try:
        document = await _report(settings)
    except DatabaseUnavailable as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if as_json:
        print(json.dumps(document, indent=2), file=out)
    else:
        print(render_table(document["sources"]), file=out)
    problems = health_problems(document["sources"], max_pending_age_s)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_UNHEALTHY if check and problems else 0


def health_problems(sources: dict[str, dict[str, Any]], max_pending_age_s: float) -> list[str]:
    """Return what --check counts as unhealthy: dead events, or a pending event too old."""
    problems = []
    for name, figures in sources.items():
        if figures["dead"]:
            problems.append(f"{name}: {figures['dead']} dead event(s)")
        age = figures["oldest_pending_age_s"]
        if age is not None and age > max_pending_age_s:
            problems.append(f"{name}: oldest pending event is {age:.0f} s old")
    return problems


def render_table(sources: dict[str, dict[str, Any]]) -> str:
    """Return the per-source figures as an aligned text table."""
    header = ["source", *(label for _, label in TABLE_COLUMNS)]
    rows = [header]
    for name, figures in sources.items():
        rows.append([name, *(_text(figures.get(key)) for key, _ in TABLE_COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    for name, figures in sources.items():
        if figures.get("last_error"):
            lines.append(f"last error ({name}): {figures['last_error'][:200]}")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


class ProgressBar:
    """A one-line progress bar on a terminal (plain lines otherwise) for long replays."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if total <= SHORT_RUN and not self._shown:
            return
        filled = int(self._width * done / total) if total else self._width
        line = f"[{'#' * filled}{'.' * (self._width - filled)}] {done}/{total}"
        if self._stream.isatty():
            self._stream.write("\r" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self._stream.isatty():
            self._stream.write("\n")


async def replay_from_cli(settings: Settings, args: argparse.Namespace) -> int:
    """Run a replay described by the command's flags; print the counts as JSON."""
    document = {
        "source": args.source,
        "status": args.status,
        "since": args.since,
        "until": args.until,
        "event": args.event,
        "ids": args.ids,
        "dry_run": args.dry_run,
        "rejected": args.rejected,
    }
    try:
        request = replay_request({k: v for k, v in document.items() if v is not None},
                                 [source.name for source in settings.sources])
    except ReplayRequestError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar()
    try:
        async with Store(settings.database.url) as store:
            result = await run_replay(store, request, formats=settings.source_formats(),
                                      progress=bar)
    except DatabaseUnavailable as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        bar.close()
    print(json.dumps(result.as_json()))
    return 0
