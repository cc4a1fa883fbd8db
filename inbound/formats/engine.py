"""The format engine: one interpreter for every sender format written as data.

A format says where the events are in a body, a JMESPath expression per field, which sender
event names become which Segment events, and which are dropped on purpose. The rules that hold
for every format (identity, dedup, timestamps, text checks) are those of `inbound.parse`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jmespath
from jmespath import visitor
from jmespath.exceptions import JMESPathError

from inbound.parse import (
    MAX_ID_CHARS,
    Accepted,
    BodyError,
    Ignored,
    Invalid,
    Parsed,
    Rejected,
    check_values,
    decode_body,
    dump,
    fallback_key,
    json_type,
    looks_like_email,
    parse_timestamp,
    text_value,
)
from models.schema import (
    CUSTOM_EVENT_TYPE,
    DEFAULT_FORMAT,
    EVENT_NAME_KEY,
    FORMAT_KEY,
    SEGMENT_EVENT_TYPES,
)

# Fields whose value may also be an integer (ids); every other text field must be a string.
ID_FIELDS = ("id", "user_id", "message_id", "campaign_id", "link_id", "list_id")
TEXT_FIELDS = (
    "email", "first_name", "last_name", "name", "subject", "campaign_name", "link_url",
    "list_name", "bounce_type", "bounce_reason", "ip", "user_agent",
)
FIELD_NAMES = ("event", "timestamp", *ID_FIELDS, *TEXT_FIELDS, "properties")
TIMESTAMP_UNITS = ("s", "ms", "auto")
AUTH_SCHEMES = ("nudgespot", "sendgrid", "mailgun", "customerio", "none")
MAX_EVENT_NAME_CHARS = 200
NULL_PROPERTIES = ("drop", "keep")
DEFINITION_KEYS = (
    "doc", "extends", "auth", "events", "timestamp_unit", "fields", "event_names", "ignore",
    "null_properties",
)


class FormatError(ValueError):
    """A format definition is invalid; the message names the key."""


@dataclass(frozen=True)
class Expression:
    """A compiled JMESPath expression and the text it came from."""

    text: str
    parsed: Any

    def search(self, value: Any) -> Any:
        """Return the expression's value on `value` (raises JMESPathError at run time)."""
        return _INTERPRETER.visit(self.parsed, value)


_INTERPRETER = visitor.TreeInterpreter()


class DataFormat:
    """A sender format defined as data, compiled once."""

    def __init__(
        self,
        name: str,
        *,
        auth: str,
        events: Expression | None,
        timestamp_unit: str,
        fields: Mapping[str, Expression],
        event_names: Mapping[str, str],
        ignore: tuple[str, ...],
        keep_null_properties: bool = False,
        doc: str = "",
    ) -> None:
        self.name = name
        self.auth = auth
        self.doc = doc
        self._events = events
        self._unit = timestamp_unit
        self._fields = tuple(fields.items())
        self._event_names = {k.lower(): v for k, v in event_names.items()}
        self._ignore = tuple(re.compile(fnmatch.translate(p.lower())) for p in ignore)
        self.ignores = bool(ignore)
        self._keep_nulls = keep_null_properties

    def __repr__(self) -> str:
        return f"DataFormat({self.name!r})"

    def parse(self, raw: bytes, now: datetime) -> list[Parsed]:
        """Parse a whole webhook body; raise BodyError when it holds no events at all."""
        objects = self.event_objects(decode_body(raw))
        if not objects:
            raise BodyError("body contains no events")
        return [self.parse_event(obj, index, now) for index, obj in enumerate(objects)]

    def event_objects(self, document: Any) -> list[Any]:
        """Return the event candidates the `events` expression finds in a body."""
        if self._events is None:
            return document if isinstance(document, list) else [document]
        try:
            found = self._events.search(document)
        except (JMESPathError, RecursionError) as exc:
            raise BodyError(f"format {self.name!r}: events: {_short(exc)}") from None
        if isinstance(found, list):
            return found
        if isinstance(found, dict):
            return [found]
        raise BodyError(
            f"format {self.name!r}: events expression {self._events.text!r} found "
            f"{json_type(found)}, not a list of events"
        )

    def parse_event(
        self, obj: Any, index: int, now: datetime, payload: str | None = None
    ) -> Parsed:
        """Map one event candidate; `payload` is its text as received (else it is serialized)."""
        if payload is None:
            payload = _payload(obj)
        try:
            return self._map(obj, index, now, payload)
        except Invalid as exc:
            return Rejected(index, str(exc), payload)
        except (ValueError, RecursionError):
            return Rejected(index, "event cannot be stored as JSON (a value out of range?)",
                            payload)

    def _map(self, obj: Any, index: int, now: datetime, payload: str) -> Parsed:
        if not isinstance(obj, dict):
            raise Invalid(f"event must be a JSON object, not {json_type(obj)}")
        values = self._evaluate(obj)
        sender_name = _sender_event(values.get("event"))
        segment_name = self._event_names.get(sender_name.strip().lower())
        if segment_name is None:
            if self._ignored(sender_name):
                return Ignored(index, sender_name, f"event {sender_name[:80]!r} is ignored")
            raise Invalid(f"unknown event {sender_name[:80]!r} (not in the format's "
                          "event_names or ignore)")
        event_time = parse_timestamp(values.get("timestamp"), now, self._unit)
        fields = _normalized(values, keep_nulls=self._keep_nulls)
        event_type = SEGMENT_EVENT_TYPES.get(segment_name, CUSTOM_EVENT_TYPE)
        if event_type == CUSTOM_EVENT_TYPE:
            fields[EVENT_NAME_KEY] = segment_name
        if self.name != DEFAULT_FORMAT:
            fields[FORMAT_KEY] = self.name
        dedup_key = _explicit_id(values) or fallback_key(
            event_type if event_type != CUSTOM_EVENT_TYPE else segment_name, event_time, fields
        )
        return Accepted(index, event_type, dedup_key, event_time, fields, payload, dump(fields))

    def _evaluate(self, obj: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, expression in self._fields:
            try:
                values[name] = expression.search(obj)
            except (JMESPathError, RecursionError) as exc:
                raise Invalid(f"fields.{name} ({expression.text!r}): {_short(exc)}") from None
        return values

    def _ignored(self, sender_name: str) -> bool:
        lowered = sender_name.strip().lower()
        return any(pattern.match(lowered) for pattern in self._ignore)


def _sender_event(value: Any) -> str:
    if value is None or value == "":
        raise Invalid("missing required field 'event'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"'event' must be a string, not {json_type(value)}")
    return str(value)


def _normalized(values: dict[str, Any], *, keep_nulls: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ID_FIELDS[1:]:
        _put(fields, name, text_value(values.get(name), name, is_id=True))
    for name in TEXT_FIELDS:
        _put(fields, name, text_value(values.get(name), name, is_id=False))
    if "user_id" not in fields and "email" not in fields:
        raise Invalid("the event has no recipient: neither 'email' nor 'user_id' was found")
    email = fields.get("email")
    if email is not None and not looks_like_email(email):
        raise Invalid("'email' is not an email address")
    properties = _properties(values.get("properties"), keep_nulls)
    if properties:
        fields["properties"] = properties
    return fields


def _properties(value: Any, keep_nulls: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"'properties' must be an object, not {json_type(value)}")
    kept = value if keep_nulls else {k: item for k, item in value.items() if item is not None}
    check_values(kept, "properties")
    return kept


def _explicit_id(values: dict[str, Any]) -> str | None:
    value = text_value(values.get("id"), "id", is_id=True)
    if value is not None and len(value) > MAX_ID_CHARS:
        raise Invalid(f"'id' is longer than {MAX_ID_CHARS} characters")
    return value


def _put(fields: dict[str, Any], name: str, value: str | None) -> None:
    if value is not None:
        fields[name] = value


def _payload(obj: Any) -> str:
    try:
        return dump(obj)
    except (ValueError, RecursionError):
        return json.dumps(repr(obj)[:10000])


def _short(exc: BaseException) -> str:
    """Return an error's first line as storable ASCII: JMESPath quotes the offending value,
    which may hold a NUL or a lone surrogate that no database column takes."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200].encode("ascii", "backslashreplace").decode().replace("\x00", "\\x00")


# --- compiling definitions -------------------------------------------------------------------


def compile_definition(name: str, definition: Mapping[str, Any], where: str) -> DataFormat:
    """Return the format a merged definition describes; FormatError names the bad key."""
    check_definition(definition, where)
    fields = _fields(definition, where)
    for required in ("event", "timestamp"):
        if required not in fields:
            raise FormatError(f"{where}.fields.{required}: is required")
    if "email" not in fields and "user_id" not in fields:
        raise FormatError(f"{where}.fields: needs 'email' or 'user_id' (who the event is about)")
    event_names = _event_names(definition.get("event_names"), f"{where}.event_names")
    if not event_names:
        raise FormatError(f"{where}.event_names: must map at least one sender event to a "
                          "Segment event")
    events_text = definition.get("events")
    return DataFormat(
        name,
        auth=definition.get("auth", "nudgespot"),
        events=None if events_text is None else _expression(events_text, f"{where}.events"),
        timestamp_unit=definition.get("timestamp_unit", "s"),
        fields=fields,
        event_names=event_names,
        ignore=_patterns(definition.get("ignore"), f"{where}.ignore"),
        keep_null_properties=definition.get("null_properties", "drop") == "keep",
        doc=str(definition.get("doc") or ""),
    )


def check_definition(definition: Mapping[str, Any], where: str) -> None:
    """Check what one definition states by itself (before `extends` merges it): its keys,
    expressions and values; FormatError names the bad key."""
    _known_keys(definition, where)
    _fields(definition, where)
    if definition.get("events") is not None:
        _expression(definition["events"], f"{where}.events")
    _choice(definition.get("auth", "nudgespot"), AUTH_SCHEMES, f"{where}.auth")
    _choice(definition.get("timestamp_unit", "s"), TIMESTAMP_UNITS, f"{where}.timestamp_unit")
    _choice(definition.get("null_properties", "drop"), NULL_PROPERTIES,
            f"{where}.null_properties")
    _event_names(definition.get("event_names"), f"{where}.event_names")
    _patterns(definition.get("ignore"), f"{where}.ignore")


def _fields(definition: Mapping[str, Any], where: str) -> dict[str, Expression]:
    fields_raw = _mapping(definition.get("fields"), f"{where}.fields")
    for key in fields_raw:
        if key not in FIELD_NAMES:
            allowed = ", ".join(FIELD_NAMES)
            raise FormatError(f"{where}.fields.{key}: unknown field (allowed: {allowed})")
    return {
        key: _expression(text, f"{where}.fields.{key}")
        for key, text in fields_raw.items()
        if text is not None
    }


def merge_definitions(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `override` applied on `base`: fields and event_names merge key by key (null
    removes a key), every other key is replaced."""
    merged = {key: value for key, value in base.items() if key not in ("extends", "doc")}
    for key, value in override.items():
        if key in ("fields", "event_names") and isinstance(value, dict):
            inner = dict(merged.get(key) or {})
            for inner_key, inner_value in value.items():
                if inner_value is None:
                    inner.pop(inner_key, None)
                else:
                    inner[inner_key] = inner_value
            merged[key] = inner
        elif key != "extends":
            merged[key] = value
    return merged


def _known_keys(definition: Mapping[str, Any], where: str) -> None:
    for key in definition:
        if key not in DEFINITION_KEYS:
            allowed = ", ".join(DEFINITION_KEYS)
            raise FormatError(f"{where}.{key}: unknown key (allowed: {allowed})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FormatError(f"{where}: must be a mapping")
    return {str(key): item for key, item in value.items()}


def _expression(text: Any, where: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise FormatError(f"{where}: must be a JMESPath expression (a non-empty string)")
    try:
        return Expression(text, jmespath.compile(text).parsed)
    except JMESPathError as exc:
        raise FormatError(f"{where}: invalid JMESPath expression {text!r}: {_short(exc)}") from None


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise FormatError(f"{where}: must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _event_names(value: Any, where: str) -> dict[str, str]:
    names = _mapping(value, where)
    for key, target in names.items():
        if target is None:  # removes an inherited name when merging; nothing to check
            continue
        if not isinstance(target, str) or not target.strip():
            raise FormatError(f"{where}.{key}: must be a Segment event name (a non-empty string)")
        if len(target) > MAX_EVENT_NAME_CHARS:
            raise FormatError(f"{where}.{key}: longer than {MAX_EVENT_NAME_CHARS} characters")
    return names


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise FormatError(f"{where}: must be a list of sender event names or patterns")
    return tuple(items)
