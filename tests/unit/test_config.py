"""Unit tests of service.config: loading, ${VAR} expansion, validation and secret hiding."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import (
    ConfigError,
    Settings,
    SourceSettings,
    load_settings,
    parse_settings,
    placeholder_secrets,
)

SHIPPED = Path(__file__).resolve().parents[2] / "config.yaml"
TOKEN = "webhook-token-0001"
WRITE_KEY = "segment-write-key-0001"
SIGNING = "signing-secret-0001"


def minimal(**sections: Any) -> dict[str, Any]:
    """A valid document with one source; keyword arguments replace whole sections."""
    document: dict[str, Any] = {
        "sources": [{"name": "default", "token": TOKEN, "write_key": WRITE_KEY}],
    }
    document.update(sections)
    return document


def source(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "default", "token": TOKEN, "write_key": WRITE_KEY}
    for key, value in overrides.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


def error_of(document: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(document, env or {})
    return str(info.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped config ---------------------------------------------------------------------


def test_shipped_config_loads_with_an_empty_environment():
    settings = load_settings(SHIPPED, env={})
    assert [s.name for s in settings.sources] == ["default"]


def test_shipped_config_uses_the_documented_defaults():
    settings = load_settings(SHIPPED, env={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.max_body_bytes == 1_048_576
    assert settings.database.url == "sqlite://data/nudgespot-segment.sqlite3"
    assert settings.admin.token == ""
    assert settings.segment.endpoint == "https://api.segment.io"
    assert settings.segment.timeout_s == 15.0
    assert settings.publisher.max_attempts == 12
    assert settings.publisher.retry_max_s == 600.0
    assert settings.retention.delivered_days == 30
    assert settings.sources[0].signing_secret == ""
    assert settings.sources[0].identify is False


def test_shipped_config_reports_its_placeholders():
    settings = load_settings(SHIPPED, env={})
    assert placeholder_secrets(settings) == ["sources[0].token", "sources[0].write_key"]


def test_shipped_config_reads_secrets_from_the_environment():
    env = {
        "NUDGESPOT_WEBHOOK_TOKEN": TOKEN,
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "NUDGESPOT_SIGNING_SECRET": SIGNING,
        "ADMIN_TOKEN": "admin-secret",
    }
    settings = load_settings(SHIPPED, env=env)
    src = settings.sources[0]
    assert (src.token, src.write_key, src.signing_secret) == (TOKEN, WRITE_KEY, SIGNING)
    assert settings.admin.token == "admin-secret"


def test_shipped_config_with_real_secrets_has_no_placeholders():
    env = {"NUDGESPOT_WEBHOOK_TOKEN": TOKEN, "SEGMENT_WRITE_KEY": WRITE_KEY}
    assert placeholder_secrets(load_settings(SHIPPED, env=env)) == []


def test_shipped_config_reads_the_database_url_and_endpoint_from_the_environment():
    env = {
        "DATABASE_URL": "postgres://u:p@db:5432/ns",
        "SEGMENT_ENDPOINT": "https://events.eu1.segmentapis.com",
    }
    settings = load_settings(SHIPPED, env=env)
    assert settings.database.url == "postgres://u:p@db:5432/ns"
    assert settings.segment.endpoint == "https://events.eu1.segmentapis.com"


def test_placeholder_secrets_reports_only_the_placeholder_key():
    settings = parse_settings(minimal(sources=[source(write_key="change-me-too")]), {})
    assert placeholder_secrets(settings) == ["sources[0].write_key"]


def test_load_settings_reads_os_environ_when_env_is_not_given(monkeypatch):
    monkeypatch.setenv("NUDGESPOT_WEBHOOK_TOKEN", "from-os-environ-token")
    settings = load_settings(SHIPPED)
    assert settings.sources[0].token == "from-os-environ-token"


# --- ${VAR} and ${VAR:-default} -------------------------------------------------------------


def test_var_is_read_from_the_environment():
    document = minimal(sources=[source(token="${TOKEN_VAR}")])
    settings = parse_settings(document, {"TOKEN_VAR": "token-from-env"})
    assert settings.sources[0].token == "token-from-env"


def test_var_inside_a_longer_value_is_replaced():
    document = minimal(database={"url": "sqlite://${DIR}/events-${NAME}.sqlite3"})
    settings = parse_settings(document, {"DIR": "/var/lib", "NAME": "prod"})
    assert settings.database.url == "sqlite:///var/lib/events-prod.sqlite3"


def test_default_is_used_when_the_variable_is_unset():
    document = minimal(admin={"token": "${ADMIN_TOKEN:-fallback-admin}"})
    assert parse_settings(document, {}).admin.token == "fallback-admin"


def test_default_is_used_when_the_variable_is_empty():
    document = minimal(admin={"token": "${ADMIN_TOKEN:-fallback-admin}"})
    assert parse_settings(document, {"ADMIN_TOKEN": ""}).admin.token == "fallback-admin"


def test_variable_wins_over_the_default_when_set():
    document = minimal(admin={"token": "${ADMIN_TOKEN:-fallback-admin}"})
    assert parse_settings(document, {"ADMIN_TOKEN": "real"}).admin.token == "real"


def test_empty_default_gives_an_empty_value():
    document = minimal(admin={"token": "${ADMIN_TOKEN:-}"})
    assert parse_settings(document, {}).admin.token == ""


def test_a_value_from_the_environment_is_not_expanded_again():
    document = minimal(sources=[source(token="${TOKEN_VAR}")])
    settings = parse_settings(document, {"TOKEN_VAR": "abc-${OTHER}-def"})
    assert settings.sources[0].token == "abc-${OTHER}-def"


def test_unset_variable_without_default_names_the_key_path_and_the_variable():
    document = minimal(sources=[source(token="${NUDGESPOT_WEBHOOK_TOKEN}")])
    message = error_of(document, {})
    assert "sources[0].token" in message
    assert "NUDGESPOT_WEBHOOK_TOKEN" in message


def test_unset_variable_in_a_later_source_names_its_index():
    document = minimal(
        sources=[source(), source(name="second", token="token-two-0002", write_key="${WK_TWO}")]
    )
    message = error_of(document, {})
    assert "sources[1].write_key" in message
    assert "WK_TWO" in message


def test_unset_variable_in_a_section_names_the_section_key():
    message = error_of(minimal(server={"port": "${PORT}"}), {})
    assert "server.port" in message
    assert "PORT" in message


def test_variable_set_to_empty_without_default_is_empty_and_a_required_key_refuses_it():
    document = minimal(sources=[source(token="${TOKEN_VAR}")])
    message = error_of(document, {"TOKEN_VAR": ""})
    assert "sources[0].token" in message


def test_unset_variable_from_a_yaml_file_names_the_key(tmp_path):
    path = write(
        tmp_path,
        "sources:\n  - name: default\n    token: ${MISSING_TOKEN}\n    write_key: wk-12345678\n",
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.token.*MISSING_TOKEN"):
        load_settings(path, env={})


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key_is_named():
    message = error_of(minimal(servr={"port": 8080}))
    assert "servr" in message
    assert "unknown key" in message


def test_unknown_section_key_is_named_with_its_section():
    message = error_of(minimal(server={"prot": 8080}))
    assert "server.prot" in message
    assert "unknown key" in message


def test_unknown_source_key_is_named_with_its_index():
    message = error_of(minimal(sources=[source(tokn="x")]))
    assert "sources[0].tokn" in message
    assert "unknown key" in message


@pytest.mark.parametrize("section", ["server", "database", "admin", "segment", "publisher"])
def test_every_section_refuses_unknown_keys(section):
    assert f"{section}.nope" in error_of(minimal(**{section: {"nope": 1}}))


# --- types ----------------------------------------------------------------------------------


def test_port_that_is_not_a_number_names_the_key():
    message = error_of(minimal(server={"port": "abc"}))
    assert "server.port" in message
    assert "integer" in message


@pytest.mark.parametrize("value", [8080.5, True, [8080], "80.0"])
def test_port_of_a_wrong_type_is_refused(value):
    assert "server.port" in error_of(minimal(server={"port": value}))


def test_identify_that_is_not_a_boolean_names_the_key():
    message = error_of(minimal(sources=[source(identify="maybe")]))
    assert "sources[0].identify" in message
    assert "true or false" in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("segment", "timeout_s", "soon"),
        ("publisher", "max_attempts", "twelve"),
        ("publisher", "interval_s", [1]),
        ("retention", "delivered_days", 1.5),
        ("server", "host", ["127.0.0.1"]),
        ("database", "url", {"path": "x"}),
    ],
)
def test_wrong_type_in_a_section_names_the_key(section, key, value):
    assert f"{section}.{key}" in error_of(minimal(**{section: {key: value}}))


def test_section_that_is_not_a_mapping_is_named():
    assert "server" in error_of(minimal(server=8080))


@pytest.mark.parametrize("document", [None, [], "text", 5])
def test_document_that_is_not_a_mapping_is_refused(document):
    with pytest.raises(ConfigError):
        parse_settings(document, {})


def test_empty_yaml_file_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, ""), env={})


def test_invalid_yaml_is_refused_naming_the_file(tmp_path):
    path = write(tmp_path, "server: {port: 8080\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path, env={})


def test_missing_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_settings(path, env={})


# --- numeric and boolean strings from the environment ---------------------------------------


def test_numeric_strings_from_the_environment_are_coerced():
    document = minimal(
        server={"port": "${PORT}", "max_body_bytes": "${MAX_BODY}"},
        segment={"timeout_s": "${TIMEOUT}"},
        publisher={"max_attempts": "${ATTEMPTS}", "interval_s": "${INTERVAL}"},
    )
    env = {"PORT": "9090", "MAX_BODY": "2048", "TIMEOUT": "2.5", "ATTEMPTS": "5", "INTERVAL": "0.5"}
    settings = parse_settings(document, env)
    assert settings.server.port == 9090
    assert settings.server.max_body_bytes == 2048
    assert settings.segment.timeout_s == 2.5
    assert settings.publisher.max_attempts == 5
    assert settings.publisher.interval_s == 0.5


def test_numeric_default_is_coerced():
    settings = parse_settings(minimal(server={"port": "${PORT:-8181}"}), {})
    assert settings.server.port == 8181


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("TRUE", True),
        ("False", False),
    ],
)
def test_boolean_strings_from_the_environment_are_coerced(text, expected):
    settings = parse_settings(minimal(sources=[source(identify="${IDENTIFY}")]), {"IDENTIFY": text})
    assert settings.sources[0].identify is expected


def test_non_numeric_environment_value_names_the_key():
    message = error_of(minimal(server={"port": "${PORT}"}), {"PORT": "eighty"})
    assert "server.port" in message


def test_integer_token_in_yaml_becomes_a_string():
    settings = parse_settings(minimal(sources=[source(token=123456789)]), {})
    assert settings.sources[0].token == "123456789"


# --- sources --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["name", "token", "write_key"])
def test_missing_required_source_field_is_named(key):
    message = error_of(minimal(sources=[source(**{key: None})]))
    assert f"sources[0].{key}" in message
    assert "required" in message


@pytest.mark.parametrize("key", ["name", "token", "write_key"])
def test_empty_required_source_field_is_named(key):
    assert f"sources[0].{key}" in error_of(minimal(sources=[source(**{key: ""})]))


def test_signing_secret_and_identify_are_optional():
    src = parse_settings(minimal(), {}).sources[0]
    assert src.signing_secret == ""
    assert src.identify is False


@pytest.mark.parametrize("sources", [None, [], {"name": "default"}, "default"])
def test_sources_must_be_a_non_empty_list(sources):
    document = minimal()
    if sources is None:
        del document["sources"]
    else:
        document["sources"] = sources
    assert "sources" in error_of(document)


def test_source_that_is_not_a_mapping_is_named():
    assert "sources[0]" in error_of(minimal(sources=["default"]))


def test_duplicate_source_names_are_refused():
    second = source(token="token-two-0002", write_key="wk-two")
    message = error_of(minimal(sources=[source(), second]))
    assert "sources[1].name" in message
    assert "duplicate" in message


def test_duplicate_source_tokens_are_refused():
    second = source(name="other", write_key="wk-two")
    message = error_of(minimal(sources=[source(), second]))
    assert "sources[1].token" in message
    assert TOKEN not in message


def test_two_distinct_sources_are_accepted():
    second = source(name="other", token="token-two-0002", write_key="wk-two")
    settings = parse_settings(minimal(sources=[source(), second]), {})
    assert [s.name for s in settings.sources] == ["default", "other"]


def test_short_token_is_refused():
    assert "sources[0].token" in error_of(minimal(sources=[source(token="short")]))


@pytest.mark.parametrize("name", ["has space", "-leading-dash", "x" * 101, "sl/ash"])
def test_bad_source_name_is_refused(name):
    assert "sources[0].name" in error_of(minimal(sources=[source(name=name)]))


# --- semantic checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://data/x.sqlite3",
        "postgres://u:p@db:5432/ns",
        "postgresql://u:p@db:5432/ns",
        "asyncpg://u:p@db:5432/ns",
    ],
)
def test_supported_database_schemes_are_accepted(url):
    assert parse_settings(minimal(database={"url": url}), {}).database.url == url


@pytest.mark.parametrize("url", ["mysql://u@db/ns", "data/x.sqlite3", "http://db/ns", ""])
def test_bad_database_scheme_is_refused(url):
    message = error_of(minimal(database={"url": url}))
    assert "database.url" in message


@pytest.mark.parametrize(
    "endpoint",
    ["https://api.segment.io", "https://events.eu1.segmentapis.com", "http://127.0.0.1:9"],
)
def test_http_segment_endpoints_are_accepted(endpoint):
    settings = parse_settings(minimal(segment={"endpoint": endpoint}), {})
    assert settings.segment.endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["api.segment.io", "ftp://api.segment.io", "https://", ""])
def test_bad_segment_endpoint_is_refused(endpoint):
    assert "segment.endpoint" in error_of(minimal(segment={"endpoint": endpoint}))


@pytest.mark.parametrize(("port", "ok"), [(0, False), (1, True), (65535, True), (65536, False)])
def test_port_range(port, ok):
    document = minimal(server={"port": port})
    if ok:
        assert parse_settings(document, {}).server.port == port
    else:
        assert "server.port" in error_of(document)


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("segment", {"timeout_s": 0}, "segment.timeout_s"),
        ("publisher", {"interval_s": 0}, "publisher.interval_s"),
        ("publisher", {"max_attempts": 0}, "publisher.max_attempts"),
        ("publisher", {"retry_base_s": 10, "retry_max_s": 5}, "publisher.retry_max_s"),
        ("publisher", {"batch_max_events": 2501}, "publisher.batch_max_events"),
        ("retention", {"delivered_days": 0}, "retention.delivered_days"),
        ("server", {"max_body_bytes": 10}, "server.max_body_bytes"),
        ("logging", {"level": "LOUD"}, "logging.level"),
    ],
)
def test_out_of_range_values_name_the_key(section, values, key):
    assert key in error_of(minimal(**{section: values}))


@pytest.mark.parametrize("value", ["inf", "1e309", float("inf")])
def test_infinite_publisher_interval_is_refused_naming_the_key(value):
    assert "publisher.interval_s" in error_of(minimal(publisher={"interval_s": value}))


# --- secrets never in reprs -----------------------------------------------------------------


@pytest.fixture
def secret_settings() -> Settings:
    document = minimal(
        admin={"token": "admin-secret-9999"},
        database={"url": "postgres://user:db-password-9999@db:5432/ns"},
        sources=[source(signing_secret=SIGNING, identify=True)],
    )
    return parse_settings(document, {})


SECRETS = [TOKEN, WRITE_KEY, SIGNING]


@pytest.mark.parametrize("secret", SECRETS)
def test_source_repr_hides_secrets(secret_settings, secret):
    src = secret_settings.sources[0]
    assert secret not in repr(src)
    assert secret not in str(src)
    assert "default" in repr(src)


@pytest.mark.parametrize("secret", [*SECRETS, "admin-secret-9999", "db-password-9999"])
def test_settings_repr_hides_secrets(secret_settings, secret):
    assert secret not in repr(secret_settings)
    assert secret not in str(secret_settings)


def test_settings_repr_still_names_the_sources(secret_settings):
    assert "default" in repr(secret_settings)


def test_source_repr_of_a_directly_built_source_hides_secrets():
    src = SourceSettings(
        name="n", token="tok-secret-1", write_key="wk-secret-1", signing_secret="sig-secret-1"
    )
    assert all(s not in repr(src) for s in ("tok-secret-1", "wk-secret-1", "sig-secret-1"))


def test_settings_are_frozen(secret_settings):
    with pytest.raises(AttributeError):
        secret_settings.sources[0].token = "x"  # type: ignore[misc]


# --- parse_settings does not change its input -----------------------------------------------


def test_parse_settings_does_not_modify_the_document():
    document = minimal(sources=[source(token="${T:-default-token-1}")])
    before = copy.deepcopy(document)
    parse_settings(document, {})
    assert document == before


def test_yaml_round_trip_of_a_minimal_document_loads(tmp_path):
    path = write(tmp_path, yaml.safe_dump(minimal()))
    assert load_settings(path, env={}).sources[0].token == TOKEN
