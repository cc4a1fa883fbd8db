"""Sender formats: the built-in presets (one YAML file each, next to this module) and the
operator's own, all read by one engine (`inbound.formats.engine`).

`nudgespot`, the default, is parsed by `inbound.parse`, the contract's own rules with their
precise error messages, at the speed the ingest path needs; `nudgespot.yaml` states the same
format in the language so that other formats can extend it (a test holds the two equal).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any, Protocol

import yaml

from inbound.formats.engine import (
    DataFormat,
    FormatError,
    check_definition,
    compile_definition,
    merge_definitions,
)
from inbound.parse import Parsed, parse_body, parse_event
from models.schema import DEFAULT_FORMAT

__all__ = [
    "BUILTIN_FORMATS",
    "DEFAULT_FORMAT",
    "DataFormat",
    "Format",
    "FormatError",
    "NudgespotFormat",
    "builtin_definition",
    "builtin_format",
    "resolve_formats",
]

BUILTIN_FORMATS = ("nudgespot", "sendgrid", "mailgun", "postmark", "customerio")
MAX_EXTENDS_DEPTH = 10


class Format(Protocol):
    """What the webhook, replay and preview need of a sender format."""

    name: str
    auth: str
    ignores: bool  # whether it drops some sender events on purpose (has an `ignore:` list)

    def parse(self, raw: bytes, now: datetime) -> list[Parsed]: ...

    def parse_event(
        self, obj: Any, index: int, now: datetime, payload: str | None = None
    ) -> Parsed: ...


class NudgespotFormat:
    """The default format: the contract's Nudgespot event fields."""

    name = DEFAULT_FORMAT
    auth = "nudgespot"
    ignores = False
    doc = ""

    def parse(self, raw: bytes, now: datetime) -> list[Parsed]:
        """Parse a whole webhook body (see inbound.parse.parse_body)."""
        return list(parse_body(raw, now))

    def parse_event(
        self, obj: Any, index: int, now: datetime, payload: str | None = None
    ) -> Parsed:
        """Parse one event object (see inbound.parse.parse_event)."""
        return parse_event(obj, index, now, payload)


@functools.cache
def builtin_definition(name: str) -> dict[str, Any]:
    """Return a preset's definition as written in its YAML file."""
    if name not in BUILTIN_FORMATS:
        raise FormatError(f"unknown format {name!r} (built in: {', '.join(BUILTIN_FORMATS)})")
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    definition = yaml.safe_load(text)
    if not isinstance(definition, dict):
        raise FormatError(f"inbound/formats/{name}.yaml: must be a mapping")
    return definition


@functools.cache
def builtin_format(name: str) -> Format:
    """Return a built-in format, compiled."""
    if name == DEFAULT_FORMAT:
        return NudgespotFormat()
    return compile_definition(name, builtin_definition(name), f"inbound/formats/{name}.yaml")


def resolve_formats(custom: Mapping[str, Any] | None) -> dict[str, Format]:
    """Return every usable format by name: the presets and the config's `formats:` section.

    Raises FormatError naming the config key (`formats.<name>...`) of the first problem.
    """
    formats: dict[str, Format] = {name: builtin_format(name) for name in BUILTIN_FORMATS}
    custom = custom or {}
    if not isinstance(custom, Mapping):
        raise FormatError("formats: must be a mapping of format names to definitions")
    # Each definition is first checked on its own, so that a mistake is named under the
    # format that makes it, not under one that extends it.
    for name, definition in custom.items():
        where = f"formats.{name}"
        if name in BUILTIN_FORMATS:
            raise FormatError(f"{where}: {name!r} is a built-in format; give yours another name "
                              f"and use 'extends: {name}'")
        if not isinstance(definition, Mapping):
            raise FormatError(f"{where}: must be a mapping")
        check_definition(definition, where)
    for name in custom:
        where = f"formats.{name}"
        merged = _flatten(name, custom, where)
        formats[name] = compile_definition(name, merged, where)
    return formats


def _flatten(name: str, custom: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return a custom definition with its `extends:` chain applied, base first."""
    chain: list[Mapping[str, Any]] = []
    visited: list[str] = []
    current: str | None = name
    while current is not None:
        if current in visited or len(visited) > MAX_EXTENDS_DEPTH:
            raise FormatError(f"{where}.extends: formats extend each other in a loop")
        visited.append(current)
        named_by = where if current == name else f"formats.{visited[-2]}"
        definition = _definition(current, custom, named_by)
        chain.append(definition)
        parent = definition.get("extends")
        if parent is not None and not isinstance(parent, str):
            raise FormatError(f"formats.{current}.extends: must be a format name")
        current = parent
    merged: dict[str, Any] = {}
    for definition in reversed(chain):
        merged = merge_definitions(merged, definition)
    return merged


def _definition(name: str, custom: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    if name in BUILTIN_FORMATS:
        return builtin_definition(name)
    definition = custom.get(name)
    if definition is None:
        raise FormatError(f"{where}.extends: unknown format {name!r}")
    if not isinstance(definition, Mapping):
        raise FormatError(f"formats.{name}: must be a mapping")
    return definition
