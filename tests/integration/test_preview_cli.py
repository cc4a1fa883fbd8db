"""`nudgespot-segment preview --source NAME [FILE|-]`, run as a real subprocess.

Each test writes a config file in tmp_path with three sources: `sg` (the sendgrid preset),
`acme` (a custom format defined in the config's `formats:`) and `mail` (the default nudgespot
format). Its database is a SQLite file in tmp_path and its Segment endpoint a closed port:
preview must neither store nor send anything, so it succeeds all the same. Bodies come from
the SendGrid samples in tests/fixtures/formats/sendgrid (each file holds {"source_url", "note",
"body"}; the body is written to a file of its own) or are written out here. The expected
messages are written out by hand (context.library, the Segment library's own name and version,
left out); the messageIds are sha256 hex digests computed once, outside the code under test.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service import __version__ as SERVICE_VERSION

ROOT = Path(__file__).resolve().parents[2]
SENDGRID_FIXTURES = ROOT / "tests" / "fixtures" / "formats" / "sendgrid"

CONFIG = """\
database:
  url: "sqlite://{db}"
segment:
  endpoint: "{endpoint}"
sources:
  - name: sg
    token: webhook-token-sg-0001
    write_key: segment-write-key-sg
    format: sendgrid
  - name: acme
    token: webhook-token-acme-0002
    write_key: segment-write-key-acme
    format: acme
  - name: mail
    token: webhook-token-mail-0003
    write_key: segment-write-key-mail
formats:
  acme:
    events: "data"
    timestamp_unit: ms
    fields:
      id: "uuid"
      event: "kind"
      timestamp: "at"
      email: "recipient.address"
      user_id: "recipient.customer"
      first_name: "recipient.first"
      subject: "mail.subject"
      message_id: "mail.id"
      link_url: "link"
    event_names:
      opened: Email Opened
      replied: Email Replied
    ignore: ["test.*"]
"""


def integration(name: str) -> dict[str, str]:
    return {"name": name, "version": SERVICE_VERSION}


SENDGRID_OPEN = {
    "type": "track",
    "event": "Email Opened",
    "anonymousId": "alex@example.com",
    "timestamp": "2017-12-15T00:59:29.000Z",
    "properties": {
        "category": "cat facts",
        "machine_open": False,
        "email_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    },
    "context": {
        "traits": {"email": "alex@example.com"},
        "ip": "255.255.255.255",
        "userAgent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; "
                     ".NET CLR 2.0.50727)",
        "integration": integration("sendgrid"),
    },
    "integrations": {"Nudgespot": False},
    "messageId": "nudgespot-bf2828fdaa4433d86880606e1205e3c52d0656fc415c2dfc17bc2423eee32c30",
}
SENDGRID_CLICK = {
    "type": "track",
    "event": "Email Link Clicked",
    "anonymousId": "email@example.com",
    "timestamp": "2009-08-11T00:00:00.000Z",
    "properties": {
        "category": ["category1", "category2"],
        "email_id": "sendgrid_internal_message_id",
        "link_id": "0",
        "link_url": "http://example.com/blog/news.html",
    },
    "context": {
        "traits": {"email": "email@example.com"},
        "ip": "255.255.255.255",
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) "
                     "AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 "
                     "Safari/9537.53",
        "integration": integration("sendgrid"),
    },
    "integrations": {"Nudgespot": False},
    "messageId": "nudgespot-81206dfea483f3b2a5680a40a6426a97b22426c8e93863694ccf073c39bcfbef",
}

ACME_BODY = {"data": [
    {"uuid": "a-1", "kind": "opened", "at": 1741080000000,
     "recipient": {"address": "zoe@example.com", "customer": 7, "first": "Zoë"},
     "mail": {"subject": "Spring sale", "id": "mail-9"}},
    {"uuid": "a-2", "kind": "Replied", "at": "2025-03-04T09:21:00.250Z",
     "recipient": {"address": "zoe@example.com"}, "mail": {"id": "mail-9"},
     "link": "https://acme.example/r"},
    {"uuid": "a-3", "kind": "test.ping", "at": 1741080000000,
     "recipient": {"address": "zoe@example.com"}},
]}
ACME_OPENED = {
    "type": "track",
    "event": "Email Opened",
    "userId": "7",
    "timestamp": "2025-03-04T09:20:00.000Z",
    "properties": {"email_id": "mail-9", "email_subject": "Spring sale"},
    "context": {"traits": {"email": "zoe@example.com", "first_name": "Zoë"},
                "integration": integration("acme")},
    "integrations": {"Nudgespot": False},
    "messageId": "nudgespot-325268565e6e2e8c3a3478877768d7029abd7551f3b7a6785e14502d2f8fb7ac",
}
ACME_REPLIED = {  # a custom event name: sent with every mapped property the event has
    "type": "track",
    "event": "Email Replied",
    "anonymousId": "zoe@example.com",
    "timestamp": "2025-03-04T09:21:00.250Z",
    "properties": {"email_id": "mail-9", "link_url": "https://acme.example/r"},
    "context": {"traits": {"email": "zoe@example.com"}, "integration": integration("acme")},
    "integrations": {"Nudgespot": False},
    "messageId": "nudgespot-cae269edb31adc582858c9cf558c24636cd0b3981f6f4b33f040f6c220ac64df",
}

NUDGESPOT_BODY = [{"id": "n-1", "event": "open", "timestamp": "2025-03-04T09:20:00Z",
                   "subscriber": {"uid": "42", "email": "ada@example.com"},
                   "message": {"id": "m-1"}}]
NUDGESPOT_OPENED = {
    "type": "track",
    "event": "Email Opened",
    "userId": "42",
    "timestamp": "2025-03-04T09:20:00.000Z",
    "properties": {"email_id": "m-1"},
    "context": {"traits": {"email": "ada@example.com"}, "integration": integration("nudgespot")},
    "integrations": {"Nudgespot": False},
    "messageId": "nudgespot-dae879e8b617bd94cb5028c7b256e4de713d3948b43221a194f1591ae0e06a8c",
}


def sendgrid_body(*names: str) -> list[dict[str, Any]]:
    """The events of SendGrid sample files, in order, as one body."""
    events: list[dict[str, Any]] = []
    for name in names:
        document = json.loads((SENDGRID_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        events.extend(document["body"])
    return events


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    dropped = ("NUDGESPOT_", "SEGMENT_", "DATABASE_URL", "ADMIN_TOKEN", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONPATH"] = str(ROOT)  # the tree under test, whatever the working directory
    return env


@dataclass
class Preview:
    """A config file (and the database path it names) in a temporary directory."""

    directory: Path
    config: Path
    db: Path

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "preview", *args, "--config", str(self.config)],
            cwd=self.directory, env=clean_env(), input=stdin if stdin is not None else "",
            capture_output=True, text=True, encoding="utf-8", timeout=60,
        )

    def body_file(self, body: Any, name: str = "body.json") -> Path:
        path = self.directory / name
        path.write_text(json.dumps(body), encoding="utf-8")
        return path


def make_preview(tmp_path: Path, endpoint: str) -> Preview:
    db = tmp_path / "preview.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(db=db, endpoint=endpoint), encoding="utf-8")
    return Preview(tmp_path, config, db)


@pytest.fixture
def preview(tmp_path: Path) -> Preview:
    return make_preview(tmp_path, f"http://127.0.0.1:{closed_port()}")


def messages(stdout: str) -> list[dict[str, Any]]:
    """stdout as JSON lines (every line must be one JSON object), context.library left out."""
    found = []
    for line in stdout.splitlines():
        message = json.loads(line)
        assert isinstance(message, dict), line
        message.get("context", {}).pop("library", None)
        found.append(message)
    return found


# --- what a body becomes ----------------------------------------------------------------------


def test_sendgrid_open_sample_prints_its_track_message(preview: Preview) -> None:
    result = preview.run("--source", "sg", str(preview.body_file(sendgrid_body("open"))))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [SENDGRID_OPEN]


def test_every_event_is_one_json_line_in_body_order(preview: Preview) -> None:
    body = preview.body_file(sendgrid_body("open", "click"))

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert messages(result.stdout) == [SENDGRID_OPEN, SENDGRID_CLICK]


def test_custom_format_from_the_config_maps_spec_and_custom_event_names(
    preview: Preview,
) -> None:
    result = preview.run("--source", "acme", str(preview.body_file(ACME_BODY)))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [ACME_OPENED, ACME_REPLIED]


def test_source_without_a_format_previews_with_the_nudgespot_format(preview: Preview) -> None:
    result = preview.run("--source", "mail", str(preview.body_file(NUDGESPOT_BODY)))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [NUDGESPOT_OPENED]


def test_the_summary_line_counts_messages_ignored_and_rejected(preview: Preview) -> None:
    result = preview.run("--source", "acme", str(preview.body_file(ACME_BODY)))

    assert result.stderr.splitlines()[-1] == "format acme: 2 message(s), 1 ignored, 0 rejected"


# --- ignored and rejected events ---------------------------------------------------------------


def test_ignored_event_is_reported_on_stderr_and_exit_status_stays_0(preview: Preview) -> None:
    body = preview.body_file(sendgrid_body("open", "deferred"))

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 0
    assert "event 1 ignored: event 'deferred' is ignored" in result.stderr.splitlines()
    assert messages(result.stdout) == [SENDGRID_OPEN]


def test_custom_format_ignore_pattern_is_reported_on_stderr(preview: Preview) -> None:
    result = preview.run("--source", "acme", str(preview.body_file(ACME_BODY)))

    assert result.returncode == 0
    assert "event 2 ignored: event 'test.ping' is ignored" in result.stderr.splitlines()


def test_body_of_only_ignored_events_prints_no_message_and_exits_0(preview: Preview) -> None:
    body = preview.body_file(sendgrid_body("deferred", "dropped"))

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "event 0 ignored: event 'deferred' is ignored",
        "event 1 ignored: event 'dropped' is ignored",
        "format sendgrid: 0 message(s), 2 ignored, 0 rejected",
    ]


def test_unknown_event_exits_1_and_stderr_names_it(preview: Preview) -> None:
    teleported = {"email": "alex@example.com", "timestamp": 1513299569,
                  "event": "teleported", "sg_event_id": "tp-1"}
    body = preview.body_file([*sendgrid_body("open"), teleported])

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 1
    rejected = [line for line in result.stderr.splitlines() if "rejected:" in line]
    assert len(rejected) == 1
    assert rejected[0].startswith("event 1 rejected: unknown event 'teleported'")
    assert messages(result.stdout) == [SENDGRID_OPEN]  # what maps is printed all the same


def test_body_that_is_not_json_exits_1(preview: Preview) -> None:
    body = preview.directory / "body.txt"
    body.write_text("event=open&email=alex@example.com", encoding="utf-8")

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "rejected body: body is not valid JSON" in result.stderr


# --- where the body comes from -----------------------------------------------------------------


def test_dash_reads_the_body_from_stdin(preview: Preview) -> None:
    result = preview.run("--source", "sg", "-", stdin=json.dumps(sendgrid_body("open")))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [SENDGRID_OPEN]


def test_no_file_reads_the_body_from_stdin(preview: Preview) -> None:
    result = preview.run("--source", "acme", stdin=json.dumps(ACME_BODY))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [ACME_OPENED, ACME_REPLIED]


# --- usage errors --------------------------------------------------------------------------------


def test_unknown_source_exits_2_naming_it(preview: Preview) -> None:
    body = preview.body_file(sendgrid_body("open"))

    result = preview.run("--source", "mailchimp", str(body))

    assert result.returncode == 2
    assert "'mailchimp'" in result.stderr
    assert result.stdout == ""


def test_missing_file_exits_2_naming_it(preview: Preview) -> None:
    missing = preview.directory / "no-such-body.json"

    result = preview.run("--source", "sg", str(missing))

    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert result.stdout == ""


# --- nothing stored, nothing sent ------------------------------------------------------------


def test_preview_does_not_create_the_database(preview: Preview) -> None:
    body = preview.body_file(sendgrid_body("open", "deferred"))

    results = [
        preview.run("--source", "sg", str(body)),
        preview.run("--source", "sg", "-", stdin="not json"),
        preview.run("--source", "sg", "-", stdin=json.dumps([{"event": "teleported"}])),
    ]

    assert [r.returncode for r in results] == [0, 1, 1]
    assert list(preview.directory.glob("preview.sqlite3*")) == []


def test_preview_writes_no_row_to_a_migrated_database(preview: Preview) -> None:
    migrated = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate", "--config", str(preview.config)],
        cwd=preview.directory, env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    teleported = {"email": "alex@example.com", "timestamp": 1513299569,
                  "event": "teleported", "sg_event_id": "tp-1"}
    body = preview.body_file([*sendgrid_body("open", "deferred"), teleported])

    result = preview.run("--source", "sg", str(body))

    assert result.returncode == 1  # one mapped, one ignored, one rejected
    connection = sqlite3.connect(preview.db)
    try:
        counts = {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                  for table in ("nudgespot_event", "nudgespot_rejected",
                                "nudgespot_source_counter", "nudgespot_identified_user")}
    finally:
        connection.close()
    assert counts == {"nudgespot_event": 0, "nudgespot_rejected": 0,
                      "nudgespot_source_counter": 0, "nudgespot_identified_user": 0}


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket that listens and never answers: a connection to it would wait in its backlog."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def test_preview_sends_nothing_to_segment(tmp_path: Path, listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    preview = make_preview(tmp_path, f"http://127.0.0.1:{port}")

    result = preview.run("--source", "sg", str(preview.body_file(sendgrid_body("open"))))

    assert result.returncode == 0, result.stderr
    assert messages(result.stdout) == [SENDGRID_OPEN]
    with pytest.raises(BlockingIOError):  # nobody connected to the Segment endpoint
        listening.accept()
