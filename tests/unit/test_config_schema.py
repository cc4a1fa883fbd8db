"""The JSON Schema of config.yaml: printed by `config-schema`, kept in docs/, and in agreement
with what the loader accepts and refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.cli import main
from service.config import ConfigError, parse_settings
from service.config_schema import config_schema

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft202012Validator(config_schema())


def valid(document: Any) -> bool:
    return VALIDATOR.is_valid(document)


def loads(document: Any) -> bool:
    try:
        parse_settings(document, env={"T": "x" * 16})
    except ConfigError:
        return False
    return True


def minimal(**sections: Any) -> dict[str, Any]:
    return {"sources": [{"name": "default", "token": "token-of-16-chars", "write_key": "wk"}],
            **sections}


def test_docs_config_schema_json_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    assert main(["config-schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    kept = json.loads((ROOT / "docs" / "config.schema.json").read_text(encoding="utf-8"))
    assert printed == kept == config_schema()


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_the_shipped_config_yaml_is_valid_and_names_its_schema() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=docs/config.schema.json"
    assert valid(yaml.safe_load(text))


def test_every_key_of_every_section_has_a_description_and_a_type() -> None:
    properties = config_schema()["properties"]
    keys = [(section, key, spec) for section, body in properties.items()
            if "properties" in body for key, spec in body["properties"].items()]
    keys += [("sources", key, spec)
             for key, spec in properties["sources"]["items"]["properties"].items()]
    assert len(keys) > 25
    for section, key, spec in keys:
        assert spec["description"], f"{section}.{key}"
        assert spec["anyOf"][0]["type"] in ("string", "integer", "number", "boolean")


@pytest.mark.parametrize("document", [
    minimal(),
    minimal(server={"port": 9000, "host": "${HOST:-0.0.0.0}"}),
    minimal(publisher={"concurrency": 4, "batch_max_events": 2500}),
    minimal(logging={"level": "DEBUG", "format": "json"}),
    minimal(formats={"acme": {"fields": {"event": "kind", "timestamp": "at", "email": "to"},
                              "event_names": {"opened": "Email Opened"}}}),
])
def test_what_the_loader_accepts_the_schema_accepts(document: dict[str, Any]) -> None:
    assert loads(document)
    assert valid(document)


@pytest.mark.parametrize("document", [
    minimal(server={"port": 70000}),
    minimal(server={"max_body_bytes": 10}),
    minimal(publisher={"concurrency": 0}),
    minimal(publisher={"batch_max_events": 2501}),
    minimal(segment={"timeout_s": 0}),
    minimal(logging={"format": "xml"}),
    minimal(server={"prot": 8080}),
    minimal(surprise={"x": 1}),
    {"sources": [{"name": "default", "token": "token-of-16-chars"}]},
    {"server": {"port": 8080}},
    minimal(formats={"acme": {"fields": {"colour": "x"}}}),
])
def test_what_the_loader_refuses_the_schema_refuses(document: dict[str, Any]) -> None:
    assert not loads(document)
    assert not valid(document)
