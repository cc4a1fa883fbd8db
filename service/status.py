"""The status report: one JSON document, also rendered as a self-contained HTML page."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

from models.admin import SourceStats, StoredProblem

REFRESH_S = 10


def payload_preview(payload: str, limit: int = 300) -> str:
    """Return a stored payload, bounded; shown as stored (never re-parsed, whatever it is)."""
    return payload if len(payload) <= limit else payload[: limit - 1] + "…"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def source_json(stats: SourceStats, now: datetime) -> dict[str, Any]:
    """Return one source's figures as the contract names them."""
    age = stats.oldest_pending_age_s(now)
    return {
        "pending": stats.pending,
        "retrying": stats.retrying,
        "delivered": stats.delivered,
        "dead": stats.dead,
        "rejected": stats.rejected,
        "duplicates": stats.duplicates,
        "ignored": stats.ignored,
        "oldest_pending_age_s": round(age, 3) if age is not None else None,
        "delivered_last_minute": stats.delivered_last_minute,
        "delivered_last_hour": stats.delivered_last_hour,
        "last_delivery_at": _iso(stats.last_delivery_at),
        "last_error": stats.last_error,
        "last_error_at": _iso(stats.last_error_at),
        "held_until": _iso(stats.held_until) if stats.held_until and stats.held_until > now
        else None,
    }


def problem_json(problem: StoredProblem) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": problem.id,
        "source": problem.source,
        "at": _iso(problem.at),
        "error": problem.reason,
        "payload": payload_preview(problem.payload, 2000),
    }
    if problem.event_type is not None:
        entry["event"] = problem.event_type
        entry["event_id"] = problem.dedup_key
    return entry


def status_document(
    sources: Iterable[str],
    stats: dict[str, SourceStats],
    dead: list[StoredProblem],
    rejected: list[StoredProblem],
    now: datetime,
    version: str,
) -> dict[str, Any]:
    """Return the whole status report: configured sources first, then any others with data."""
    names = list(dict.fromkeys([*sources, *sorted(stats)]))
    return {
        "generated_at": _iso(now),
        "version": version,
        "sources": {n: source_json(stats.get(n) or SourceStats(n), now) for n in names},
        "latest_dead": [problem_json(p) for p in dead],
        "latest_rejected": [problem_json(p) for p in rejected],
    }


COLUMNS = (
    ("pending", "Pending"),
    ("retrying", "Retrying"),
    ("delivered", "Delivered"),
    ("dead", "Dead"),
    ("rejected", "Rejected"),
    ("duplicates", "Duplicates"),
    ("ignored", "Ignored"),
    ("oldest_pending_age_s", "Oldest pending (s)"),
    ("delivered_last_minute", "Last minute"),
    ("delivered_last_hour", "Last hour"),
    ("last_delivery_at", "Last delivery"),
    ("last_error", "Last error"),
)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:2rem}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.bad{color:#a40000;font-weight:600}code{font-size:12px;word-break:break-all}
button{padding:.3rem .7rem;cursor:pointer}.muted{color:#666}
#message{margin:.5rem 0;min-height:1.2em}
"""

SCRIPT = """
async function replay(source){
  const body = {status: ["dead"]};
  if (source) body.source = source;
  const out = document.getElementById("message");
  out.textContent = "Replaying…";
  try {
    const r = await fetch("replay", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const j = await r.json();
    out.textContent = r.ok ? `Requeued ${j.requeued} of ${j.matched} dead event(s).`
                           : `Replay failed: ${j.error || r.status}`;
  } catch (e) { out.textContent = "Replay failed: " + e; }
  setTimeout(() => location.reload(), 1500);
}
document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-replay]");
  if (b) replay(b.dataset.source || null);
});
"""


def _cell(key: str, value: Any) -> str:
    if value is None:
        return '<td class="muted">–</td>'
    css = "num" if isinstance(value, int | float) else ""
    if key in ("dead", "rejected") and value:
        css += " bad"
    return f'<td class="{css.strip()}" data-key="{key}">{escape(str(value))}</td>'


def _source_row(name: str, figures: dict[str, Any]) -> str:
    cells = "".join(_cell(key, figures.get(key)) for key, _ in COLUMNS)
    button = (
        f'<button data-replay="1" data-source="{escape(name, quote=True)}">Replay dead</button>'
        if figures["dead"] else ""
    )
    return f'<tr data-source="{escape(name, quote=True)}"><th>{escape(name)}</th>{cells}' \
           f"<td>{button}</td></tr>"


def _problem_rows(problems: list[dict[str, Any]], kind: str) -> str:
    if not problems:
        return f'<p class="muted">No {kind} events.</p>'
    rows = "".join(
        "<tr>"
        f"<td>{escape(str(p['source']))}</td><td>{escape(str(p.get('at') or ''))}</td>"
        f"<td>{escape(str(p.get('event') or ''))}</td>"
        f"<td class=\"bad\">{escape(str(p['error']))}</td>"
        f"<td><code>{escape(str(p['payload']))}</code></td></tr>"
        for p in problems
    )
    return (
        f'<table id="{kind}"><tr><th>Source</th><th>At</th><th>Event</th><th>Reason</th>'
        f"<th>Payload</th></tr>{rows}</table>"
    )


def status_html(document: dict[str, Any]) -> str:
    """Render the status report as a page that needs nothing from the network."""
    header = "".join(f"<th>{escape(label)}</th>" for _, label in COLUMNS)
    rows = "".join(_source_row(n, f) for n, f in document["sources"].items())
    any_dead = any(f["dead"] for f in document["sources"].values())
    replay_all = '<button data-replay="1">Replay all dead</button>' if any_dead else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>nudgespot-segment status</title><style>{STYLE}</style></head>
<body>
<h1>nudgespot-segment status</h1>
<p class="muted">Version {escape(document["version"])} · generated
{escape(document["generated_at"] or "")} · refreshes every {REFRESH_S} s</p>
<table id="sources"><tr><th>Source</th>{header}<th></th></tr>{rows}</table>
<p>{replay_all}</p><p id="message" role="status"></p>
<h2>Latest dead events</h2>{_problem_rows(document["latest_dead"], "dead")}
<h2>Latest rejected events</h2>{_problem_rows(document["latest_rejected"], "rejected")}
<script>{SCRIPT}</script>
</body></html>"""
