"""The status report: one JSON document, also rendered as a self-contained HTML page.

The page shows one card per source (its counts, the last error, when the next retry is due,
a Retry-After hold, and a chart of the last 24 hours drawn as inline SVG on the server), then
the latest dead and rejected events. It loads nothing from the network, and its markup is
built from a small set of tags: every value that came from a webhook or from Segment is
escaped, and the chart's coordinates are numbers formatted here, never text from outside.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from models.admin import MinuteFigures, SourceStats, StoredProblem
from models.time import minute_of

REFRESH_S = 10
# The chart: the last day, minute by minute (AdminQueries keeps two days of minutes).
CHART_WINDOW = timedelta(hours=24)
CHART_MINUTES = 1440
PLOT_HEIGHT = 100  # a plot's own units: y = PLOT_HEIGHT at zero, 0 at the top of its scale
BACKLOG_GAP_MIN = 5  # backlog samples further apart than this are not joined by the line


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
        "next_retry_at": _iso(stats.next_retry_at),
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


# --- the chart ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One line of the chart, in plot units: x is the minute (1 to CHART_MINUTES, the last is
    the current minute), y runs from PLOT_HEIGHT (zero) up to 0 (`top`, the scale's top)."""

    key: str  # "delivered" or "pending"
    runs: list[list[tuple[float, float]]]  # unbroken stretches of the line
    top: int
    peak: int
    latest: int | None  # the current minute's figure (delivered), the latest sample (pending)
    total: int


def nice_top(peak: int) -> int:
    """Return the top of a scale that holds `peak`: 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= peak:
        magnitude *= 10
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= peak)


def _minute_x(minute: datetime, end: datetime) -> int | None:
    """Return a minute's x (CHART_MINUTES for `end`), None outside the window."""
    age = int((end - minute_of(minute)).total_seconds() // 60)
    return CHART_MINUTES - age if 0 <= age < CHART_MINUTES else None


def _y(value: int, top: int) -> float:
    return round(PLOT_HEIGHT - value * PLOT_HEIGHT / top, 2)


def chart_series(figures: Sequence[MinuteFigures], now: datetime) -> tuple[Series, Series]:
    """Return the deliveries line and the backlog line of one source's last 24 hours.

    A minute without a deliveries row delivered nothing, so that line runs through every
    minute (points inside a flat stretch are left out: the line is the same). The backlog was
    sampled once a minute: where samples are missing for more than BACKLOG_GAP_MIN minutes
    (the service was down) the line breaks instead of inventing the figures in between.
    """
    end = minute_of(now)
    delivered: dict[int, int] = {}
    pending: dict[int, int] = {}
    for f in figures:
        x = _minute_x(f.minute, end)
        if x is None:
            continue
        delivered[x] = delivered.get(x, 0) + int(f.delivered)
        if f.pending is not None:
            pending[x] = int(f.pending)

    values = [delivered.get(x, 0) for x in range(1, CHART_MINUTES + 1)]
    top = nice_top(max(values))
    line = [
        (float(x), _y(v, top))
        for x, v in enumerate(values, start=1)
        if x in (1, CHART_MINUTES) or v != values[x - 2] or v != values[x]
    ]
    deliveries = Series("delivered", [line], top, max(values), values[-1], sum(values))

    xs = sorted(pending)
    ptop = nice_top(max(pending.values(), default=0))
    runs: list[list[tuple[float, float]]] = []
    for i, x in enumerate(xs):
        if i == 0 or x - xs[i - 1] > BACKLOG_GAP_MIN:
            runs.append([])
        runs[-1].append((float(x), _y(pending[x], ptop)))
    backlog = Series("pending", runs, ptop, max(pending.values(), default=0),
                     pending[xs[-1]] if xs else None, sum(pending.values()))
    return deliveries, backlog


def _num(value: float) -> str:
    """Format a coordinate: a number, whatever it was given (text raises)."""
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def series_path(runs: Sequence[Sequence[tuple[float, float]]]) -> str:
    """Return an SVG path's d for the runs (a lone point is drawn as a dot)."""
    parts = []
    for run in runs:
        points = list(run) if len(run) > 1 else [run[0], run[0]]
        parts.append("M" + "L".join(f"{_num(x)},{_num(y)}" for x, y in points))
    return "".join(parts)


CHART_HEIGHT = 218
PANEL_PLOT_PX = 64
X_TICKS = ((0, "−24 h", "start"), (25, "−18 h", "middle"), (50, "−12 h", "middle"),
           (75, "−6 h", "middle"), (100, "now", "end"))


def _panel(series: Series, top_px: int, label: str, summary: str, empty: str) -> str:
    plot_y = top_px + 18
    grid = "".join(
        f'<line class="grid" x1="{x}" y1="0" x2="{x}" y2="{PLOT_HEIGHT}"/>'
        for x in (360, 720, 1080)
    )
    line = (f'<path class="series s-{series.key}" data-series="{series.key}" '
            f'd="{series_path(series.runs)}"/>' if series.runs else "")
    note = "" if series.runs else (
        f'<text class="note" x="50%" y="{plot_y + PANEL_PLOT_PX // 2 + 4}" '
        f'text-anchor="middle">{escape(empty)}</text>')
    return (
        f'<text class="label t-{series.key}" x="0" y="{top_px + 12}">{escape(label)}</text>'
        f'<text class="summary" x="100%" y="{top_px + 12}" text-anchor="end">'
        f"{escape(summary)}</text>"
        f'<svg x="0" y="{plot_y}" width="100%" height="{PANEL_PLOT_PX}" '
        f'viewBox="0 0 {CHART_MINUTES} {PLOT_HEIGHT}" preserveAspectRatio="none" '
        f'overflow="visible">'
        f'<line class="grid" x1="0" y1="0" x2="{CHART_MINUTES}" y2="0"/>{grid}'
        f'<line class="axis" x1="0" y1="{PLOT_HEIGHT}" x2="{CHART_MINUTES}" '
        f'y2="{PLOT_HEIGHT}"/>{line}</svg>'
        f'<text class="tick" x="0" y="{plot_y + 11}">{series.top:,}</text>'
        f'<text class="tick" x="0" y="{plot_y + PANEL_PLOT_PX + 12}">0</text>{note}'
    )


def history_svg(
    figures: Sequence[MinuteFigures], now: datetime, *, source: str, ident: str
) -> str:
    """Return one source's last 24 hours as an inline SVG chart (or the empty state): the
    deliveries per minute above, the sampled backlog below, on one time axis."""
    end = minute_of(now)
    if not any(_minute_x(f.minute, end) is not None for f in figures):
        return ('<p class="chart-empty muted">No deliveries and no backlog samples in the '
                "last 24 hours yet: the chart starts with the first minute that has either."
                "</p>")
    delivered, pending = chart_series(figures, now)
    ident = escape(ident, quote=True)
    start = end - CHART_WINDOW + timedelta(minutes=1)
    backlog_words = (
        f"Backlog, sampled each minute: {pending.latest:,} pending at the latest sample, "
        f"at most {pending.peak:,}." if pending.latest is not None
        else "No backlog samples in this window.")
    desc = (f"Minutes from {_iso(start)} to {_iso(end)}. Deliveries per minute: "
            f"{delivered.total:,} in all, at most {delivered.peak:,} in one minute. "
            f"{backlog_words}")
    ticks = "".join(
        f'<text class="tick" x="{pct}%" y="{CHART_HEIGHT - 6}" text-anchor="{anchor}">'
        f"{label}</text>" for pct, label, anchor in X_TICKS
    )
    backlog_summary = (f"now {pending.latest:,} · peak {pending.peak:,}"
                       if pending.latest is not None else "")
    return (
        f'<svg class="chart" role="img" aria-labelledby="{ident}-t {ident}-d" width="100%" '
        f'height="{CHART_HEIGHT}">'
        f'<title id="{ident}-t">{escape(source)}: deliveries per minute and backlog, '
        f"last 24 hours</title>"
        f'<desc id="{ident}-d">{escape(desc)}</desc>'
        + _panel(delivered, 0, "Deliveries per minute",
                 f"peak {delivered.peak:,} · {delivered.total:,} in 24 h", "")
        + _panel(pending, 104, "Backlog (pending events)", backlog_summary,
                 "no backlog samples in the last 24 hours")
        + ticks + "</svg>"
    )


# --- the page ----------------------------------------------------------------------------------

COUNTS = (
    ("pending", "Pending"),
    ("retrying", "Retrying"),
    ("delivered", "Delivered"),
    ("dead", "Dead"),
    ("rejected", "Rejected"),
    ("duplicates", "Duplicates"),
    ("ignored", "Ignored"),
    ("oldest_pending_age_s", "Oldest pending"),
    ("delivered_last_minute", "Delivered/min"),
    ("delivered_last_hour", "Delivered/hour"),
)

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .25rem}h2{font-size:1.05rem;margin:2rem 0 .6rem}
p{margin:.2rem 0}.muted{color:#666}.bad{color:#a40000}
button{padding:.35rem .8rem;cursor:pointer;font:inherit}
#message{margin:.5rem 0;min-height:1.2em}
code{font:12px/1.4 ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
details{margin:.25rem 0}summary{cursor:pointer;color:#444}
details code{display:block;background:#f4f4f4;border:1px solid #e2e2e2;padding:.4rem .5rem;
  margin-top:.25rem}
table.source,table.source tbody{display:block}
table.source{background:#fff;border:1px solid #d6d6d6;border-radius:6px;
  padding:.6rem 1rem .8rem;margin:0 0 1rem}
table.source tr{display:grid;grid-template-columns:9rem minmax(0,1fr);gap:.2rem 1rem;
  padding:.5rem 0;border-top:1px solid #eee;align-items:baseline}
table.source th,table.source td{display:block;padding:0;border:0;text-align:left;
  min-width:0;overflow-wrap:anywhere}
table.source th{font-weight:600;color:#444}
table.source tr.card-head{display:flex;flex-wrap:wrap;justify-content:space-between;
  align-items:center;gap:.5rem;border-top:0;padding-top:0}
table.source tr.card-head h2{margin:0;font-size:1.15rem;color:#1b1b1b}
table.source tr[data-source]{grid-template-columns:repeat(auto-fill,minmax(6.6rem,1fr));
  gap:.5rem}
tr[data-source] td{background:#f5f5f5;border-radius:4px;padding:.3rem .5rem;
  font-size:1.15rem;font-variant-numeric:tabular-nums}
tr[data-source] td::before{content:attr(data-label);display:block;font-size:11px;color:#555}
tr[data-source] td.bad{color:#a40000;font-weight:600;background:#fcecec}
tr[data-source] td.none{color:#888}
.error-line{color:#a40000;font-weight:600}
table.source tr.chart-row{align-items:start}
svg.chart{display:block;width:100%;height:218px;overflow:visible}
svg.chart text{font:11px system-ui,sans-serif;fill:#555}
svg.chart text.label{font-weight:600}svg.chart .t-delivered{fill:#1a5fc9}
svg.chart .t-pending{fill:#b34d00}
svg.chart .tick,svg.chart .summary{paint-order:stroke;stroke:#fff;stroke-width:3px;
  stroke-linejoin:round}
svg.chart line{vector-effect:non-scaling-stroke;stroke-width:1}
svg.chart .grid{stroke:#e6e6e6}svg.chart .axis{stroke:#9a9a9a}
svg.chart .series{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round;
  vector-effect:non-scaling-stroke}
svg.chart .s-delivered{stroke:#1a5fc9}svg.chart .s-pending{stroke:#b34d00}
.chart-empty{padding:.5rem 0}
#dead,#rejected{border-collapse:collapse;background:#fff;width:100%;table-layout:fixed}
#dead th,#dead td,#rejected th,#rejected td{border:1px solid #ddd;padding:.35rem .5rem;
  text-align:left;vertical-align:top;overflow-wrap:anywhere}
#dead th,#rejected th{background:#f0f0f0}
th.w-source{width:9%}th.w-at{width:14%}th.w-event{width:11%}th.w-reason{width:28%}
@media (max-width:640px){
  body{margin:.75rem}
  table.source{padding:.5rem .75rem .7rem}
  table.source tr{grid-template-columns:minmax(0,1fr)}
  #dead,#rejected,#dead tbody,#rejected tbody,#dead tr,#rejected tr,#dead td,#rejected td{
    display:block}
  #dead tr.head,#rejected tr.head{display:none}
  #dead tr,#rejected tr{border:1px solid #ddd;border-radius:6px;margin:0 0 .6rem;
    background:#fff}
  #dead td,#rejected td{border:0;border-top:1px solid #eee}
  #dead td::before,#rejected td::before{content:attr(data-label);display:block;
    font-size:11px;font-weight:600;color:#555}
}
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
// A raw error opened stays open when the page refreshes itself.
for (const d of document.querySelectorAll("details[data-slot]")) {
  const key = "open:" + d.dataset.slot;
  try { if (sessionStorage.getItem(key)) d.open = true; } catch (e) {}
  d.addEventListener("toggle", () => {
    try { d.open ? sessionStorage.setItem(key, "1") : sessionStorage.removeItem(key); }
    catch (e) {}
  });
}
"""


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def relative(at: datetime, now: datetime) -> str:
    """Say how far `at` is from `now`, in words: "in 40 s", "3 min ago", "2 h 5 min ago"."""
    seconds = round((at - now).total_seconds())
    if seconds == 0:
        return "now"
    words = duration(abs(seconds))
    return f"in {words}" if seconds > 0 else f"{words} ago"


def duration(seconds: float) -> str:
    """Say a length of time in words: "40 s", "12 min", "2 h 5 min", "3 days"."""
    size = round(seconds)
    if size < 90:
        return f"{size} s"
    if size < 90 * 60:
        return f"{round(size / 60)} min"
    if size < 48 * 3600:
        hours, minutes = divmod(round(size / 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{round(size / 86400)} days"


def _when(value: str | None, now: datetime, css: str = "") -> str:
    at = _parse(value)
    if at is None:
        return '<p class="muted">–</p>'
    attribute = f' class="{css}"' if css else ""
    return f"<p{attribute}>{escape(str(value))} ({relative(at, now)})</p>"


def error_parts(error: str) -> tuple[str, str | None]:
    """Return a stored error's first line (what happened, in words) and, when the text goes
    on (the raw exception after a network failure), the whole text."""
    lines = error.strip().splitlines() or [""]
    return lines[0], (error.strip() if len(lines) > 1 else None)


def _error_html(error: str, slot: str) -> str:
    """The error's first line, and its whole text behind "Raw error" when there is more;
    `slot` names the disclosure so that it stays open across the page's refresh."""
    first, raw = error_parts(error)
    html = f'<p class="error-line">{escape(first)}</p>'
    if raw is not None:
        html += (f'<details data-slot="{escape(slot, quote=True)}"><summary>Raw error</summary>'
                 f"<code>{escape(raw)}</code></details>")
    return html


def _count_cell(key: str, label: str, value: Any) -> str:
    css = "num"
    if value is None:
        css, text = "num none", "–"
    elif key == "oldest_pending_age_s":
        text = duration(value)
    else:
        text = str(value)
    if key in ("dead", "rejected") and value:
        css += " bad"
    return (f'<td class="{css}" data-label="{escape(label, quote=True)}" '
            f'data-key="{key}">{escape(text)}</td>')


def _fact(css: str, label: str, html: str) -> str:
    return f'<tr class="fact {css}"><th scope="row">{escape(label)}</th><td>{html}</td></tr>'


def _source_card(index: int, name: str, figures: dict[str, Any],
                 history: Sequence[MinuteFigures], now: datetime) -> str:
    quoted = escape(name, quote=True)
    button = (f'<button data-replay="1" data-source="{quoted}">Replay dead</button>'
              if figures["dead"] else "")
    counts = "".join(_count_cell(key, label, figures.get(key)) for key, label in COUNTS)
    error = figures.get("last_error")
    if error:
        error_html = (_error_html(error, f"source:{name}")
                      + _when(figures.get("last_error_at"), now, "muted"))
    else:
        error_html = '<p class="muted">none</p>'
    retry_at = _parse(figures.get("next_retry_at"))
    if retry_at is None:
        retry_html = '<p class="muted">– (no failed event waiting)</p>'
    elif retry_at <= now:
        retry_html = f'<p>{escape(figures["next_retry_at"])} (due now)</p>'
    else:
        retry_html = _when(figures["next_retry_at"], now)
    rows = [
        f'<tr class="card-head"><th><h2>{escape(name)}</h2></th><td>{button}</td></tr>',
        f'<tr data-source="{quoted}">{counts}</tr>',
        _fact("last-error", "Last error", error_html),
        _fact("next-retry", "Next retry", retry_html),
    ]
    if figures.get("held_until"):
        rows.append(_fact(
            "held", "Held until",
            _when(figures["held_until"], now)
            + '<p class="muted">Segment asked to wait (Retry-After): nothing is sent for this '
              "source before then.</p>"))
    rows += [
        _fact("last-delivery", "Last delivery", _when(figures.get("last_delivery_at"), now)),
        _fact("chart-row", "Last 24 hours",
              history_svg(history, now, source=name, ident=f"chart-{index}")),
    ]
    return f'<table class="source" data-name="{quoted}">{"".join(rows)}</table>'


def _problem_rows(problems: list[dict[str, Any]], kind: str) -> str:
    if not problems:
        return f'<p class="muted">No {kind} events.</p>'
    rows = "".join(
        "<tr>"
        f'<td data-label="Source">{escape(str(p["source"]))}</td>'
        f'<td data-label="At">{escape(str(p.get("at") or ""))}</td>'
        f'<td data-label="Event">{escape(str(p.get("event") or ""))}</td>'
        f'<td data-label="Reason">{_error_html(str(p["error"]), kind + ":" + str(p["id"]))}</td>'
        f'<td data-label="Payload"><code>{escape(str(p["payload"]))}</code></td></tr>'
        for p in problems
    )
    return (
        f'<table id="{kind}"><tr class="head"><th class="w-source">Source</th>'
        '<th class="w-at">At</th><th class="w-event">Event</th>'
        f'<th class="w-reason">Reason</th><th>Payload</th></tr>{rows}</table>'
    )


def status_html(
    document: dict[str, Any],
    history: dict[str, list[MinuteFigures]] | None = None,
    now: datetime | None = None,
) -> str:
    """Render the status report as a page that needs nothing from the network; `history`
    (AdminQueries.history over the last CHART_WINDOW) draws each source's chart."""
    now = now or _parse(document["generated_at"])
    assert now is not None
    history = history or {}
    cards = "".join(
        _source_card(i, name, figures, history.get(name, []), now)
        for i, (name, figures) in enumerate(document["sources"].items())
    )
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
<p>{replay_all}</p><p id="message" role="status"></p>
{cards}
<h2>Latest dead events</h2>{_problem_rows(document["latest_dead"], "dead")}
<h2>Latest rejected events</h2>{_problem_rows(document["latest_rejected"], "rejected")}
<script>{SCRIPT}</script>
</body></html>"""
