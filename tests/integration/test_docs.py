"""The README and docs/ keep their promises: links resolve, cited tests exist, examples run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from service.config import parse_settings
from service.preview import preview

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED_TEST = re.compile(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`")


def _anchors(document: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(slug)
    return anchors


def _relative_links() -> list[tuple[Path, str]]:
    links = []
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if not re.match(r"^[a-z]+:", target):
                links.append((document, target))
    return links


def test_documents_have_relative_links_to_check() -> None:
    assert len(_relative_links()) >= 10


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    broken = []
    for document, target in _relative_links():
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{document.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{document.name}: {target} (no such heading)")
        elif ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{document.name}: {target} (outside the project)")
    assert broken == []


def _promised_tests() -> list[str]:
    """Node ids cited in the README's "What we promise" table; `::name` continues the file
    named before it in the same row."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What we promise", 1)[1].split("\n## ", 1)[0]
    cited = []
    for row in section.splitlines():
        if not row.startswith("|"):
            continue
        current = ""
        for ref in CITED_TEST.findall(row.split("|")[2] if row.count("|") >= 3 else ""):
            if ref.startswith("tests/"):
                current = ref.split("::")[0]
                cited.append(ref)
            elif ref.startswith("::") and current:
                cited.append(current + ref)
    return cited


def test_every_test_the_readme_promises_is_collected_by_pytest() -> None:
    cited = _promised_tests()
    assert len(cited) >= 20
    files = sorted({ref.split("::")[0] for ref in cited})
    missing_files = [f for f in files if not (ROOT / f).exists()]
    assert missing_files == []
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = {line.split("[")[0] for line in result.stdout.splitlines() if "::" in line}
    missing = [ref for ref in cited if "::" in ref and ref not in collected]
    assert missing == []


def _code_block(document: Path, language: str, containing: str) -> str:
    text = document.read_text(encoding="utf-8")
    for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S):
        if containing in block:
            return block
    raise AssertionError(f"no {language} block with {containing!r} in {document.name}")


def test_the_worked_custom_format_in_docs_formats_md_does_what_it_says() -> None:
    document = ROOT / "docs" / "formats.md"
    config = yaml.safe_load(_code_block(document, "yaml", "parcelmail:"))
    body = _code_block(document, "json", '"data"').encode()
    env = {"PARCELMAIL_HOOK_TOKEN": "token-of-parcelmail", "SEGMENT_WRITE_KEY": "wk"}
    settings = parse_settings(config, env)
    out, err = io.StringIO(), io.StringIO()

    code = preview(settings, "parcelmail", body, datetime.now(timezone.utc), out, err)

    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0
    assert [m["event"] for m in messages] == ["Email Opened", "Email Unsubscribed"]
    first = messages[0]
    assert first["userId"] == "42"
    assert first["timestamp"] == "2026-11-20T09:31:00.000Z"
    assert first["properties"] == {"variant": "B", "email_id": "m-9",
                                   "email_subject": "Your receipt"}
    assert first["context"]["traits"] == {"email": "ada@example.com"}
    assert first["context"]["integration"]["name"] == "parcelmail"
    assert messages[1]["properties"] == {"list_id": "news", "list_name": "Newsletter"}
    assert "event 2 ignored: event 'queued' is ignored" in err.getvalue()
