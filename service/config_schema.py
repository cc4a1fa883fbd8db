"""A JSON Schema of config.yaml, made from the same fields (types, defaults, bounds,
descriptions) the loader checks: `nudgespot-segment config-schema` prints it, and
docs/config.schema.json is kept equal to it by a test."""

from __future__ import annotations

import dataclasses
from typing import Any

from inbound.formats.engine import AUTH_SCHEMES, FIELD_NAMES, NULL_PROPERTIES, TIMESTAMP_UNITS
from service.config import SECTIONS, SourceSettings

# Any value may be read from the environment instead ("${VAR}" or "${VAR:-default}").
ENV_REFERENCE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}
JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of config.yaml."""
    properties = {name: _object(cls) for name, cls in SECTIONS.items()}
    properties["sources"] = {
        "type": "array", "minItems": 1, "items": _object(SourceSettings),
        "description": "one entry per sender account; each has its own webhook URL",
    }
    properties["formats"] = {
        "type": "object", "additionalProperties": _format(),
        "description": "your own sender formats, by name (docs/formats.md)",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nudgespot-segment config.yaml",
        "type": "object",
        "additionalProperties": False,
        "required": ["sources"],
        "properties": properties,
    }


def _object(cls: type) -> dict[str, Any]:
    fields = dataclasses.fields(cls)
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _key(f) for f in fields},
    }
    required = [f.name for f in fields if f.default is None]
    if required:
        schema["required"] = required
    return schema


def _key(f: dataclasses.Field[Any]) -> dict[str, Any]:
    meta = f.metadata
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    value: dict[str, Any] = {"type": JSON_TYPES[kind]}
    if meta.get("minimum") is not None:
        value["minimum"] = meta["minimum"]
    if meta.get("maximum") is not None:
        value["maximum"] = meta["maximum"]
    if meta.get("positive"):
        value["exclusiveMinimum"] = 0
    if meta.get("choices"):
        value["enum"] = list(meta["choices"])
    schema: dict[str, Any] = {"description": meta.get("description", "")}
    if f.default is not None:
        schema["default"] = f.default
    if meta.get("secret"):
        schema["description"] += " (a secret: read it from the environment)"
    # A value may be given as it is or as a reference to the environment.
    schema["anyOf"] = [value, ENV_REFERENCE]
    return schema


def _format() -> dict[str, Any]:
    expression = {"type": "string", "description": "a JMESPath expression"}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "extends": {"type": "string", "description": "start from another format"},
            "auth": {"enum": list(AUTH_SCHEMES), "default": "nudgespot"},
            "events": {**expression, "description": "where the list of events is in the body"},
            "timestamp_unit": {"enum": list(TIMESTAMP_UNITS), "default": "s"},
            "null_properties": {"enum": list(NULL_PROPERTIES), "default": "drop"},
            "fields": {
                "type": "object", "additionalProperties": False,
                "properties": {name: {"type": ["string", "null"]} for name in FIELD_NAMES},
            },
            "event_names": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "sender event name -> Segment event name"},
            "ignore": {"type": "array", "items": {"type": "string"},
                       "description": "sender event names or patterns dropped on purpose"},
            "doc": {"type": "string"},
        },
    }
