"""The real `nudgespot-segment` console script's migrate, status and replay, run as subprocesses.

Each test writes a config file with one source and a SQLite database in tmp_path, runs
`migrate` through the script, seeds rows through the store's API from the test process (and
puts them in the wanted state with SQL updates through the store's tortoise models), then runs
the command under test and checks its output, its exit status and the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from models import IngestBatch, NewEvent, NewReject, Store
from models.tables import Event, RejectedEvent

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.prefix) / "bin" / "nudgespot-segment"
if not SCRIPT.exists():  # pragma: no cover - running outside the project venv
    SCRIPT = ROOT / ".venv" / "bin" / "nudgespot-segment"
UTC = timezone.utc
CONTRACT_KEYS = {
    "pending", "delivered", "dead", "rejected", "duplicates", "oldest_pending_age_s",
    "last_delivery_at", "last_error",
}
CONFIG = """\
database:
  url: "{url}"
sources:
  - name: default
    token: webhook-token-0001
    write_key: segment-write-key-0001
"""


def clean_env() -> dict[str, str]:
    dropped = ("NUDGESPOT_", "SEGMENT_", "DATABASE_URL", "ADMIN_TOKEN")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


@dataclass
class Cli:
    """A config file and its database in a temporary directory."""

    directory: Path
    config: Path
    url: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args, "--config", str(self.config)],
            cwd=self.directory, env=clean_env(), capture_output=True, text=True, timeout=60,
        )


def make_cli(tmp_path: Path) -> Cli:
    url = f"sqlite://{tmp_path}/nudgespot.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=url), encoding="utf-8")
    return Cli(tmp_path, config, url)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A migrated database (migrated by the console script) and its config."""
    cli = make_cli(tmp_path)
    result = cli.run("migrate")
    assert result.returncode == 0, result.stderr
    return cli


# --- seeding (set-up only) -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    status: str = "dead"
    source: str = "default"
    event_type: str = "email_opened"
    received_at: datetime | None = None


async def _seed(url: str, rows: list[Row], rejects: list[NewReject], repeats: list[Row]) -> None:
    now = datetime.now(UTC)

    def new(r: Row) -> NewEvent:
        return NewEvent(r.source, r.key, r.event_type, now - timedelta(minutes=5),
                        json.dumps({"user_id": "42"}), json.dumps({"id": r.key}))

    async with Store(url) as store:
        await store.ingest.write([IngestBatch(events=[new(r) for r in rows], rejects=rejects)])
        if repeats:  # the same events again: counted as duplicates
            await store.ingest.write([IngestBatch(events=[new(r) for r in repeats])])
        with store.db.orm():
            for status in ("dead", "delivered", "pending"):
                keys = [r.key for r in rows if r.status == status]
                changes: dict[str, Any] = {"status": status}
                if status == "dead":
                    changes.update(attempts=1, last_error="Segment answered 400: seeded")
                if status == "delivered":
                    changes.update(attempts=1, delivered_at=now)
                for start in range(0, len(keys), 500):
                    await Event.filter(dedup_key__in=keys[start:start + 500]).update(**changes)
            for r in rows:
                if r.received_at is not None:
                    await Event.filter(source=r.source, dedup_key=r.key).update(
                        received_at=r.received_at)
        await store.admin.recount()  # the counters follow the rows changed behind their back


def seed(cli: Cli, *rows: Row, rejects: tuple[NewReject, ...] = (),
         repeats: tuple[Row, ...] = ()) -> None:
    asyncio.run(_seed(cli.url, list(rows), list(rejects), list(repeats)))


async def _states(url: str) -> dict[str, tuple[str, int]]:
    async with Store(url) as store:
        with store.db.orm():
            return {f"{e.source}/{e.dedup_key}": (e.status, e.attempts)
                    for e in await Event.all().order_by("id")}


def states(cli: Cli) -> dict[str, tuple[str, int]]:
    return asyncio.run(_states(cli.url))


def statuses(cli: Cli) -> dict[str, str]:
    return {key: status for key, (status, _) in states(cli).items()}


async def _reject_payloads(url: str) -> list[str]:
    async with Store(url) as store:
        with store.db.orm():
            return [r.payload for r in await RejectedEvent.all().order_by("id")]


def table(stdout: str) -> dict[str, dict[str, str]]:
    """Parse the status table: {source: {column: cell}}."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = lines[0].split()
    assert header[0] == "source", stdout
    rows = {}
    for line in lines[1:]:
        if line.startswith("last error"):
            continue
        cells = line.split()
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def mixed_rows() -> tuple[Row, ...]:
    return (Row("p-1", "pending"), Row("p-2", "pending"), Row("x-1", "delivered"),
            Row("x-2", "delivered"), Row("x-3", "delivered"), Row("d-1", "dead"))


# --- migrate ------------------------------------------------------------------------------------


def test_migrate_creates_the_database(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)

    result = cli.run("migrate")

    assert result.returncode == 0, result.stderr
    assert "migrations applied" in result.stdout
    assert (tmp_path / "nudgespot.sqlite3").exists()
    assert statuses(cli) == {}


def test_migrate_again_changes_nothing(cli: Cli) -> None:
    seed(cli, Row("d-1"))

    result = cli.run("migrate")

    assert result.returncode == 0, result.stderr
    assert statuses(cli) == {"default/d-1": "dead"}


# --- status -------------------------------------------------------------------------------------


def test_status_prints_a_table_with_the_sources_counts(cli: Cli) -> None:
    seed(cli, *mixed_rows(), rejects=(NewReject("default", 0, "{}", "bad"),),
         repeats=(Row("x-1"),))

    result = cli.run("status")

    assert result.returncode == 0, result.stderr
    row = table(result.stdout)["default"]
    assert {k: row[k] for k in ("pending", "delivered", "dead", "rejected", "dups")} == {
        "pending": "2", "delivered": "3", "dead": "1", "rejected": "1", "dups": "1"}
    assert row["last_delivery"] != "-"


def test_status_prints_the_last_error(cli: Cli) -> None:
    seed(cli, Row("d-1"))

    result = cli.run("status")

    assert "last error (default): Segment answered 400: seeded" in result.stdout


def test_status_lists_a_source_with_data_that_is_not_configured(cli: Cli) -> None:
    seed(cli, Row("o-1", "pending", source="legacy"))

    rows = table(cli.run("status").stdout)

    assert set(rows) == {"default", "legacy"}
    assert rows["legacy"]["pending"] == "1"


def test_status_json_prints_the_contract_keys(cli: Cli) -> None:
    seed(cli, *mixed_rows(), repeats=(Row("x-1"),))

    result = cli.run("status", "--json")

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["sources"]["default"]
    assert set(figures) >= CONTRACT_KEYS
    assert {k: figures[k] for k in ("pending", "delivered", "dead", "rejected", "duplicates")} \
        == {"pending": 2, "delivered": 3, "dead": 1, "rejected": 0, "duplicates": 1}
    assert figures["oldest_pending_age_s"] >= 0
    assert datetime.fromisoformat(figures["last_delivery_at"]).tzinfo is not None
    assert figures["last_error"] == "Segment answered 400: seeded"


def test_status_check_exits_0_when_healthy(cli: Cli) -> None:
    seed(cli, Row("x-1", "delivered"), Row("p-1", "pending"))

    result = cli.run("status", "--check")

    assert result.returncode == 0, result.stderr
    assert "problem" not in result.stderr


def test_status_check_exits_1_when_there_are_dead_events(cli: Cli) -> None:
    seed(cli, Row("x-1", "delivered"), Row("d-1", "dead"))

    result = cli.run("status", "--check")

    assert result.returncode == 1
    assert "1 dead event" in result.stderr
    assert table(result.stdout)["default"]["dead"] == "1"  # the table is printed all the same


def test_status_check_exits_1_when_the_oldest_pending_is_older_than_the_limit(cli: Cli) -> None:
    seed(cli, Row("p-1", "pending", received_at=datetime.now(UTC) - timedelta(hours=1)))

    result = cli.run("status", "--check", "--max-pending-age-s", "600")

    assert result.returncode == 1
    assert "oldest pending" in result.stderr


def test_status_check_accepts_a_pending_event_younger_than_the_limit(cli: Cli) -> None:
    seed(cli, Row("p-1", "pending", received_at=datetime.now(UTC) - timedelta(hours=1)))

    result = cli.run("status", "--check", "--max-pending-age-s", "7200")

    assert result.returncode == 0, result.stderr


def test_status_without_check_exits_0_even_with_dead_events(cli: Cli) -> None:
    seed(cli, Row("d-1", "dead"))

    assert cli.run("status").returncode == 0


def test_status_with_an_unreachable_database_exits_3_saying_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url="postgres://root@127.0.0.1:1/x"), encoding="utf-8")
    cli = Cli(tmp_path, config, "")

    result = cli.run("status", "--check")

    assert result.returncode == 3
    assert "database unavailable" in result.stderr
    assert "Traceback" not in result.stderr


# --- replay -------------------------------------------------------------------------------------


def test_replay_dry_run_prints_counts_and_changes_nothing(cli: Cli) -> None:
    seed(cli, Row("d-1"), Row("d-2"), Row("x-1", "delivered"))
    before = states(cli)

    result = cli.run("replay", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 2, "requeued": 0}
    assert states(cli) == before


def test_replay_requeues_dead_events(cli: Cli) -> None:
    seed(cli, Row("d-1"), Row("d-2"), Row("x-1", "delivered"))

    result = cli.run("replay")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 2, "requeued": 2}
    assert states(cli) == {"default/d-1": ("pending", 0), "default/d-2": ("pending", 0),
                           "default/x-1": ("delivered", 1)}


def test_replay_filters_by_source_event_and_id_together(cli: Cli) -> None:
    seed(cli, Row("k1"), Row("k2"), Row("k3", event_type="email_clicked"),
         Row("k1", source="legacy"))

    result = cli.run("replay", "--source", "default", "--event", "opened",
                     "--id", "k1", "--id", "k3")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 1, "requeued": 1}
    assert statuses(cli) == {"default/k1": "pending", "default/k2": "dead",
                             "default/k3": "dead", "legacy/k1": "dead"}


def test_replay_since_and_until_select_by_received_time(cli: Cli) -> None:
    seed(cli, Row("d-jan", received_at=datetime(2026, 1, 1, tzinfo=UTC)),
         Row("d-feb", received_at=datetime(2026, 2, 1, tzinfo=UTC)),
         Row("d-mar", received_at=datetime(2026, 3, 1, tzinfo=UTC)))

    result = cli.run("replay", "--since", "2026-01-15T00:00:00Z",
                     "--until", "2026-02-15T00:00:00+00:00")

    assert json.loads(result.stdout) == {"matched": 1, "requeued": 1}
    assert statuses(cli)["default/d-feb"] == "pending"


def test_replay_status_flag_requeues_delivered_events(cli: Cli) -> None:
    seed(cli, Row("d-1"), Row("x-1", "delivered"))

    result = cli.run("replay", "--status", "delivered")

    assert json.loads(result.stdout) == {"matched": 1, "requeued": 1}
    assert statuses(cli) == {"default/d-1": "dead", "default/x-1": "pending"}


def test_replay_rejected_admits_quarantined_events_that_now_parse(cli: Cli) -> None:
    valid = json.dumps({"id": "q-ok", "event": "open", "timestamp": 1790000000,
                        "subscriber": {"uid": "1"}})
    invalid = json.dumps({"id": "q-bad", "event": "open", "subscriber": {"uid": "1"}})
    seed(cli, rejects=(NewReject("default", 0, valid, "old"),
                       NewReject("default", 1, invalid, "timestamp is required")))

    result = cli.run("replay", "--rejected")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 2, "requeued": 1, "still_rejected": 1}
    assert statuses(cli) == {"default/q-ok": "pending"}
    assert asyncio.run(_reject_payloads(cli.url)) == [invalid]


def test_replay_of_more_than_1000_events_shows_progress_on_stderr(cli: Cli) -> None:
    seed(cli, *(Row(f"bulk-{i:05d}") for i in range(1001)))

    result = cli.run("replay")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 1001, "requeued": 1001}
    progress = re.findall(r"^\[[#.]+\] (\d+)/(\d+)$", result.stderr, re.M)
    assert progress and progress[-1] == ("1001", "1001")
    assert all(total == "1001" for _, total in progress)
    assert set(statuses(cli).values()) == {"pending"}


def test_replay_of_few_events_prints_no_progress(cli: Cli) -> None:
    seed(cli, Row("d-1"), Row("d-2"))

    result = cli.run("replay")

    assert json.loads(result.stdout) == {"matched": 2, "requeued": 2}
    assert "[" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        (["--since", "2026-01-01T00:00:00"], "since"),
        (["--until", "tomorrow"], "until"),
        (["--status", "failed"], "failed"),
        (["--event", "email_exploded"], "email_exploded"),
        (["--frobnicate"], "--frobnicate"),
    ],
    ids=["since-without-zone", "until-not-a-time", "unknown-status", "unknown-event",
         "unknown-flag"],
)
def test_replay_with_bad_flags_exits_non_zero_with_a_message_and_changes_nothing(
    cli: Cli, flags: list[str], mentions: str
) -> None:
    seed(cli, Row("d-1"))

    result = cli.run("replay", *flags)

    assert result.returncode != 0
    assert mentions in result.stderr
    assert result.stdout == ""
    assert statuses(cli) == {"default/d-1": "dead"}
