"""The status page's chart and card parts, as pure functions: where each point of the inline
SVG lands, the empty state, and that only numbers (never text from outside) become markup."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from models.admin import MinuteFigures, SourceStats, StoredProblem
from service.status import (
    CHART_MINUTES,
    PLOT_HEIGHT,
    chart_series,
    duration,
    error_parts,
    history_svg,
    nice_top,
    relative,
    series_path,
    source_json,
    status_document,
    status_html,
)

NOW = datetime(2026, 11, 28, 12, 0, 42, tzinfo=timezone.utc)
END = NOW.replace(second=0)  # the current minute: x = CHART_MINUTES
XSS = "<script>alert(1)</script>"
NETWORK_ERROR = ("Segment unreachable (api.segment.io): connection refused\n"
                 "ConnectionError: [Errno 111] Connection refused <b>raw</b>")


def at(minutes_ago: int) -> datetime:
    return END - timedelta(minutes=minutes_ago)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("line", "path"):
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)


def parse(markup: str) -> Elements:
    parser = Elements()
    parser.feed(markup)
    return parser


def paths(svg: str) -> dict[str, list[list[tuple[float, float]]]]:
    """The runs of points of each series path, by its data-series."""
    found = {}
    for tag, attrs in parse(svg).tags:
        if tag == "path":
            d = attrs["d"] or ""
            assert re.fullmatch(r"(M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)*)+", d), d
            found[attrs["data-series"]] = [
                [(float(x), float(y)) for x, y in re.findall(r"([\d.]+),([\d.]+)", run)]
                for run in d.split("M")[1:]
            ]
    return found


def svg_of(figures: list[MinuteFigures], source: str = "default") -> str:
    return history_svg(figures, NOW, source=source, ident="chart-0")


# --- the scale -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("peak", "top"), [
    (0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (42, 50), (99, 100),
    (101, 200), (1234, 2000), (5000, 5000), (5001, 10000),
])
def test_the_scale_tops_out_at_one_two_or_five_times_a_power_of_ten(peak: int, top: int) -> None:
    assert nice_top(peak) == top


# --- where the points land ---------------------------------------------------------------------


def test_deliveries_line_puts_each_minute_at_its_x_and_its_count_on_the_scale() -> None:
    figures = [MinuteFigures(at(60), delivered=5), MinuteFigures(at(0), delivered=10)]

    [run] = paths(svg_of(figures))["delivered"]

    # x: the current minute is 1440, an hour ago 1380; y: 100 is zero, 0 the scale's top (10).
    # Inside the flat stretches of zeros the points are left out: the line is the same.
    assert run == [(1, 100), (1379, 100), (1380, 50), (1381, 100), (1439, 100), (1440, 0)]


def test_deliveries_line_with_nothing_delivered_lies_flat_on_zero() -> None:
    figures = [MinuteFigures(at(5), delivered=0, pending=3)]

    [run] = paths(svg_of(figures))["delivered"]

    assert run == [(1, PLOT_HEIGHT), (CHART_MINUTES, PLOT_HEIGHT)]


def test_backlog_line_follows_the_samples_and_breaks_where_none_were_taken() -> None:
    figures = [
        MinuteFigures(at(1000), pending=40),  # alone: drawn as a dot
        MinuteFigures(at(12), pending=10), MinuteFigures(at(11), pending=20),
        MinuteFigures(at(8), pending=30),  # 3 minutes later: still the same stretch
        MinuteFigures(at(0), pending=50),  # 8 minutes later: the line breaks before it
    ]

    runs = paths(svg_of(figures))["pending"]

    # The scale's top is 50: y = 100 - value * 2.
    assert runs == [
        [(440, 20), (440, 20)],
        [(1428, 80), (1429, 60), (1432, 40)],
        [(1440, 0), (1440, 0)],
    ]


def test_minutes_outside_the_last_24_hours_are_left_out() -> None:
    figures = [
        MinuteFigures(at(CHART_MINUTES), delivered=1000, pending=1000),  # a day ago: out
        MinuteFigures(at(CHART_MINUTES - 1), delivered=2, pending=4),  # the first minute in
        MinuteFigures(END + timedelta(minutes=1), delivered=1000, pending=1000),  # future
    ]

    deliveries, backlog = chart_series(figures, NOW)

    assert (deliveries.peak, deliveries.top, deliveries.total) == (2, 2, 2)
    assert deliveries.runs[0][0] == (1, 0)
    assert backlog.runs == [[(1, 20)]]  # 4 on a scale of 5
    assert (backlog.peak, backlog.top, backlog.latest) == (4, 5, 4)


def test_a_full_day_of_minutes_draws_at_most_one_point_per_minute_per_series() -> None:
    figures = [MinuteFigures(at(i), delivered=i % 97, pending=i % 89)
               for i in range(CHART_MINUTES)]

    lines = paths(svg_of(figures))

    assert sum(len(r) for r in lines["delivered"]) <= CHART_MINUTES
    assert sum(len(r) for r in lines["pending"]) <= CHART_MINUTES
    assert [len(lines["delivered"]), len(lines["pending"])] == [1, 1]


def test_the_series_figures_say_what_the_desc_says() -> None:
    figures = [MinuteFigures(at(2), delivered=7, pending=3),
               MinuteFigures(at(1), delivered=5, pending=9), MinuteFigures(at(0), pending=4)]

    deliveries, backlog = chart_series(figures, NOW)
    desc = "".join(parse(svg_of(figures)).text["desc"])

    assert (deliveries.total, deliveries.peak, deliveries.latest) == (12, 7, 0)
    assert (backlog.peak, backlog.latest) == (9, 4)
    assert "12 in all, at most 7 in one minute" in desc
    assert "4 pending at the latest sample, at most 9" in desc


# --- the SVG as markup ---------------------------------------------------------------------------


def test_chart_has_one_path_per_series_axis_labels_and_an_accessible_name() -> None:
    figures = [MinuteFigures(at(3), delivered=4, pending=12)]

    svg = svg_of(figures)
    page = parse(svg)

    [root] = [attrs for tag, attrs in page.tags if tag == "svg" and attrs.get("role")]
    assert root["role"] == "img"
    assert root["aria-labelledby"] == "chart-0-t chart-0-d"
    assert [attrs["id"] for tag, attrs in page.tags if tag in ("title", "desc")] == [
        "chart-0-t", "chart-0-d"]
    assert sorted(paths(svg)) == ["delivered", "pending"]
    texts = page.text["text"]
    assert {"Deliveries per minute", "Backlog (pending events)"} <= set(texts)
    assert {"−24 h", "−12 h", "now"} <= set(texts)
    assert {"5", "20", "0"} <= set(texts)  # each scale's top, and zero
    assert "http" not in svg  # no namespace URL, nothing else from the network either


def test_backlog_without_samples_has_no_line_but_says_so() -> None:
    svg = svg_of([MinuteFigures(at(3), delivered=4)])

    assert sorted(paths(svg)) == ["delivered"]
    assert "no backlog samples in the last 24 hours" in parse(svg).text["text"]


@pytest.mark.parametrize("figures", [
    [],
    [MinuteFigures(at(CHART_MINUTES + 30), delivered=9, pending=9)],  # only older minutes
])
def test_no_minutes_in_the_window_gives_the_empty_state(figures: list[MinuteFigures]) -> None:
    markup = svg_of(figures)

    assert "<svg" not in markup
    assert markup.startswith('<p class="chart-empty')
    assert "No deliveries and no backlog samples in the last 24 hours yet" in markup


def test_the_source_name_is_escaped_in_the_charts_title() -> None:
    svg = svg_of([MinuteFigures(at(1), delivered=1)], source=XSS)

    assert XSS not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;: deliveries per minute" in svg
    assert [tag for tag, _ in parse(svg).tags].count("script") == 0


def test_coordinates_are_formatted_numbers_and_text_is_refused() -> None:
    assert series_path([[(1, 100.0), (2.5, 33.333333)]]) == "M1,100L2.5,33.33"
    with pytest.raises(ValueError):
        series_path([[("1", '0"/><script>alert(1)</script>')]])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        chart_series([MinuteFigures(at(1), delivered='1" onload="x')], NOW)  # type: ignore[arg-type]


# --- the card's words ----------------------------------------------------------------------------


def test_error_first_line_is_the_summary_and_the_raw_text_follows_only_when_there_is_more() -> None:
    assert error_parts(NETWORK_ERROR) == (
        "Segment unreachable (api.segment.io): connection refused", NETWORK_ERROR)
    assert error_parts("Segment answered 503: try later") == (
        "Segment answered 503: try later", None)


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 s"), (40, "40 s"), (89, "89 s"), (400, "7 min"), (3600, "60 min"),
    (7500, "2 h 5 min"), (7200, "2 h"), (3 * 86400, "3 days"),
])
def test_durations_are_said_in_words(seconds: int, words: str) -> None:
    assert duration(seconds) == words


def test_relative_times_say_in_or_ago() -> None:
    assert relative(NOW + timedelta(seconds=40), NOW) == "in 40 s"
    assert relative(NOW - timedelta(minutes=3), NOW) == "3 min ago"
    assert relative(NOW, NOW) == "now"


# --- the document and the whole page -------------------------------------------------------------


def test_source_json_names_when_the_next_retry_is_due() -> None:
    due = NOW + timedelta(seconds=30)
    figures = source_json(SourceStats("default", retrying=2, pending=2, next_retry_at=due), NOW)

    assert figures["next_retry_at"] == "2026-11-28T12:01:12+00:00"
    assert source_json(SourceStats("default"), NOW)["next_retry_at"] is None


def page_of(stats: SourceStats, history: dict[str, list[MinuteFigures]] | None = None,
            dead: list[StoredProblem] | None = None) -> str:
    document = status_document(["default"], {"default": stats}, dead or [], [], NOW, "9.9")
    return status_html(document, history, NOW)


def test_page_shows_the_error_summary_raw_text_retry_and_hold_escaped() -> None:
    stats = SourceStats(
        "default", pending=3, retrying=3, dead=1,
        last_error=NETWORK_ERROR.replace("refused\n", f"refused {XSS}\n"),
        last_error_at=NOW - timedelta(minutes=2), next_retry_at=NOW + timedelta(seconds=40),
        held_until=NOW + timedelta(minutes=5))

    page = page_of(stats, {"default": [MinuteFigures(at(1), delivered=2, pending=3)]})
    elements = parse(page)

    assert XSS not in page and "<b>raw</b>" not in page
    assert [tag for tag, _ in elements.tags].count("script") == 1  # the page's own
    assert "Segment unreachable (api.segment.io): connection refused &lt;script&gt;" in page
    [raw] = elements.text["code"]
    assert raw.startswith("Segment unreachable") and "<b>raw</b>" in raw  # as text
    assert "Raw error" in elements.text["summary"]
    assert [attrs.get("data-slot") for tag, attrs in elements.tags if tag == "details"] == [
        "source:default"]
    assert "2026-11-28T12:01:22+00:00 (in 40 s)" in page
    assert "2026-11-28T12:05:42+00:00 (in 5 min)" in page and "Retry-After" in page
    assert "2026-11-28T11:58:42+00:00 (2 min ago)" in page
    assert page.count('data-series="') == 2
    assert 'data-source="default">Replay dead</button>' in page


def test_page_without_history_shows_the_empty_state_and_a_one_line_error_without_details() -> None:
    stats = SourceStats("default", last_error=f"Segment answered 400: {XSS}",
                        last_error_at=NOW)

    page = page_of(stats)

    assert "<svg" not in page and "<details" not in page
    assert "No deliveries and no backlog samples" in page
    assert "Segment answered 400: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "– (no failed event waiting)" in page
