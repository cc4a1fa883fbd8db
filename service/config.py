"""Loading and validating config.yaml into frozen settings."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from inbound.formats import DEFAULT_FORMAT, Format, FormatError, resolve_formats
from inbound.signature import SecretError, Verifier, verifier
from outbound.settings import PublisherSettings, SegmentSettings, setting

CONFIG_ENV = "NUDGESPOT_SEGMENT_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"
PLACEHOLDER_PREFIX = "change-me"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 in a container)")
    port: int = setting(8080, "port to listen on", minimum=1, maximum=65535)
    max_body_bytes: int = setting(1_048_576, "larger webhook bodies are answered 413",
                                  minimum=1024)
    shutdown_timeout_s: float = setting(
        30.0, "on SIGTERM, how long in-flight requests and batches may take", positive=True)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = setting(
        "sqlite://data/nudgespot-segment.sqlite3",
        "sqlite://PATH (embedded, one process) or postgres://user:password@host:5432/db "
        "(several replicas; pool size with ?maxsize=20)", secret=True)


@dataclass(frozen=True)
class AdminSettings:
    token: str = setting("", "token for /status, /replay and /metrics (empty: loopback only)",
                         secret=True)


@dataclass(frozen=True)
class RetentionSettings:
    delivered_days: int = setting(
        30, "days delivered events (and so their deduplication) and rejects are kept",
        minimum=1)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR",
                         choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = setting("text", "text, or json for one JSON object per line",
                          choices=("text", "json"))


@dataclass(frozen=True)
class SourceSettings:
    name: str = setting(None, "the source's name (1-100 letters, digits, '_', '.', '-')")
    token: str = setting(None, "secret part of the webhook URL (at least 8 characters)",
                         secret=True)
    write_key: str = setting(None, "the Segment source's write key", secret=True)
    signing_secret: str = setting(
        "", "checks the sender's signature (nudgespot, mailgun, customerio formats)",
        secret=True)
    identify: bool = setting(
        False, "send an identify with the recipient's traits before a user's first track")
    format: str = setting(
        DEFAULT_FORMAT, "the payload format: nudgespot, sendgrid, mailgun, postmark, "
        "customerio, or a name under formats:")
    verification_key: str = setting(
        "", "SendGrid's Signed Event Webhook public key (format sendgrid)", secret=True)
    basic_auth: str = setting(
        "", "user:password every request must carry as HTTP Basic credentials", secret=True)

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return (f"SourceSettings(name={self.name!r}, format={self.format!r}, "
                f"identify={self.identify!r})")


@dataclass(frozen=True)
class Settings:
    sources: tuple[SourceSettings, ...]
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    segment: SegmentSettings = SegmentSettings()
    publisher: PublisherSettings = PublisherSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()
    formats: Mapping[str, Format] = field(default_factory=lambda: resolve_formats(None))

    def format_of(self, source: SourceSettings) -> Format:
        """Return the format a source's webhook bodies are parsed with."""
        return self.formats[source.format]

    def source_formats(self) -> dict[str, Format]:
        """Return each configured source's format, by source name."""
        return {source.name: self.format_of(source) for source in self.sources}

    def __repr__(self) -> str:
        return f"Settings(sources={list(self.sources)!r}, database=<hidden>)"


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "admin": AdminSettings,
    "segment": SegmentSettings,
    "publisher": PublisherSettings,
    "retention": RetentionSettings,
    "logging": LoggingSettings,
}


def config_path(given: str | None) -> Path:
    """Return the config file: the flag, else $NUDGESPOT_SEGMENT_CONFIG, else ./config.yaml."""
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Read, expand and validate a config file; raise ConfigError naming what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_settings(document, os.environ if env is None else env)


def parse_settings(document: Any, env: Mapping[str, str]) -> Settings:
    """Validate a loaded YAML document (with ${VAR} references) into Settings."""
    if not isinstance(document, dict):
        raise ConfigError("the config file must be a mapping of sections")
    expanded = _expand(document, "", env)
    _refuse_unknown(expanded, {*SECTIONS, "sources", "formats"}, "")
    values: dict[str, Any] = {
        name: _section(expanded.get(name), cls, name) for name, cls in SECTIONS.items()
    }
    values["sources"] = _sources(expanded.get("sources"))
    try:
        values["formats"] = resolve_formats(expanded.get("formats"))
    except FormatError as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(**values)
    _check_semantics(settings)
    return settings


def _expand(value: Any, where: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, _join(where, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: _lookup(m, where, env), value)
    return value


def _lookup(match: re.Match[str], where: str, env: Mapping[str, str]) -> str:
    name, default = match.group(1), match.group(2)
    value = env.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _refuse_unknown(mapping: dict[str, Any], known: set[str], where: str) -> None:
    for key in mapping:
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{_join(where, str(key))}: unknown key (allowed: {allowed})")


def _section(raw: Any, cls: type, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    known = {f.name: f for f in fields(cls)}
    _refuse_unknown(raw, set(known), where)
    values = {key: _coerce(raw[key], known[key].type, _join(where, key)) for key in raw}
    return cls(**values)


def _sources(raw: Any) -> tuple[SourceSettings, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("sources: must be a non-empty list of sources")
    return tuple(_source(item, f"sources[{i}]") for i, item in enumerate(raw))


def _source(raw: Any, where: str) -> SourceSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    for required in ("name", "token", "write_key"):
        if raw.get(required) in (None, ""):
            raise ConfigError(f"{_join(where, required)}: is required and must not be empty")
    return _section(raw, SourceSettings, where)


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if kind == "bool":
            return _as_bool(value)
        if kind == "int":
            return _as_int(value)
        if kind == "float":
            return _as_float(value)
        if kind == "str":
            return _as_str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be {_article(kind)}, got {value!r}") from None
    raise ConfigError(f"{where}: unsupported setting type {kind}")  # pragma: no cover


def _article(kind: str) -> str:
    names = {"bool": "true or false", "int": "an integer", "float": "a finite number"}
    return names.get(kind, "a string")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _as_str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise TypeError
    return str(value)


def _check_semantics(settings: Settings) -> None:
    for rule in _RULES:
        rule(settings)


def _check_bounds(s: Settings) -> None:
    """Check every key against the bounds its field declares (see outbound.settings.setting)."""
    for name in SECTIONS:
        section = getattr(s, name)
        for f in fields(section):
            _check_bound(f"{name}.{f.name}", getattr(section, f.name), f.metadata)


def _check_bound(where: str, value: Any, meta: Mapping[str, Any]) -> None:
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and high is not None:
        _require(low <= value <= high, f"{where}: must be between {low:g} and {high:g}")
    elif low is not None:
        _require(value >= low, f"{where}: must be at least {low:g}")
    if meta.get("positive"):
        _require(value > 0, f"{where}: must be positive")
    choices = meta.get("choices")
    if choices:
        _require(value.upper() in choices if where == "logging.level" else value in choices,
                 f"{where}: must be one of {', '.join(choices)}")


def _check_database(s: Settings) -> None:
    scheme = urlsplit(s.database.url).scheme
    _require(
        scheme in ("sqlite", "postgres", "postgresql", "asyncpg"),
        f"database.url: unsupported scheme {scheme!r} (use sqlite://PATH or postgres://...)",
    )


def _check_segment(s: Settings) -> None:
    parts = urlsplit(s.segment.endpoint)
    _require(
        parts.scheme in ("http", "https") and bool(parts.netloc),
        "segment.endpoint: must be an http(s) URL such as https://api.segment.io",
    )


def _check_publisher(s: Settings) -> None:
    p = s.publisher
    _require(p.retry_max_s >= p.retry_base_s, "publisher.retry_max_s: must be >= retry_base_s")
    _require(p.lease_s > s.segment.timeout_s, "publisher.lease_s: must exceed segment.timeout_s")


def _check_sources(s: Settings) -> None:
    names: set[str] = set()
    tokens: set[str] = set()
    for i, source in enumerate(s.sources):
        where = f"sources[{i}]"
        _require(
            bool(_SOURCE_NAME.match(source.name)),
            f"{where}.name: must be 1-100 letters, digits, '_', '.' or '-'",
        )
        _require(source.name not in names, f"{where}.name: duplicate source name {source.name!r}")
        _require(source.token not in tokens, f"{where}.token: the same token is used twice")
        _require(len(source.token) >= 8, f"{where}.token: must be at least 8 characters")
        names.add(source.name)
        tokens.add(source.token)
        _check_source_format(s, source, where)


def _check_source_format(s: Settings, source: SourceSettings, where: str) -> None:
    if source.format not in s.formats:
        known = ", ".join(sorted(s.formats))
        raise ConfigError(f"{where}.format: unknown format {source.format!r} (known: {known})")
    scheme = s.format_of(source).auth
    wrong = "signing_secret" if scheme == "sendgrid" else "verification_key"
    _require(
        not getattr(source, wrong),
        f"{where}.{wrong}: not used by format {source.format!r} (its auth is {scheme}); "
        f"use {'verification_key' if wrong == 'signing_secret' else 'signing_secret'}",
    )
    try:
        source_verifier(s, source)
    except SecretError as exc:
        key = "verification_key" if scheme == "sendgrid" else "signing_secret"
        raise ConfigError(f"{where}.{key}: {exc}") from None
    _require(
        not source.basic_auth or ":" in source.basic_auth,
        f"{where}.basic_auth: must be \"user:password\"",
    )


def source_verifier(settings: Settings, source: SourceSettings) -> Verifier | None:
    """Return the signature check of a source's format with its secret (None: not configured)."""
    scheme = settings.format_of(source).auth
    secret = source.verification_key if scheme == "sendgrid" else source.signing_secret
    return verifier(scheme, secret)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


_RULES = (
    _check_bounds,
    _check_database,
    _check_segment,
    _check_publisher,
    _check_sources,
)


def placeholder_secrets(settings: Settings) -> list[str]:
    """Return the keys that still hold the shipped placeholder values."""
    found = []
    for i, source in enumerate(settings.sources):
        for key in ("token", "write_key"):
            if getattr(source, key).startswith(PLACEHOLDER_PREFIX):
                found.append(f"sources[{i}].{key}")
    return found
