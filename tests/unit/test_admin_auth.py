"""service.admin_auth: which secret an Authorization header presents, and who is on loopback."""

from __future__ import annotations

import base64

import pytest

from service.admin_auth import is_loopback, presented_secret


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


# --- presented_secret: Bearer ------------------------------------------------------------------


def test_bearer_presents_its_token():
    assert presented_secret("Bearer s3cret-token") == "s3cret-token"


def test_bearer_scheme_is_case_insensitive():
    assert presented_secret("bearer s3cret-token") == "s3cret-token"


def test_bearer_token_is_stripped_of_surrounding_blanks():
    assert presented_secret("  Bearer   s3cret-token  ") == "s3cret-token"


def test_bearer_without_a_token_presents_nothing():
    assert presented_secret("Bearer") is None
    assert presented_secret("Bearer   ") is None


# --- presented_secret: Basic -------------------------------------------------------------------


def test_basic_presents_the_password_part():
    assert presented_secret(basic("admin:s3cret-token")) == "s3cret-token"


@pytest.mark.parametrize("user", ["", "admin", "anyone at all", "ünïcode"])
def test_basic_user_part_is_ignored(user):
    assert presented_secret(basic(f"{user}:s3cret-token")) == "s3cret-token"


def test_basic_password_may_itself_contain_colons():
    assert presented_secret(basic("admin:a:b:c")) == "a:b:c"


def test_basic_scheme_is_case_insensitive():
    assert presented_secret("bAsIc " + basic("u:pw").split(" ", 1)[1]) == "pw"


def test_basic_without_a_colon_presents_nothing():
    assert presented_secret(basic("s3cret-token")) is None


def test_basic_with_an_empty_password_presents_the_empty_string():
    # An empty secret can never equal a configured (non-empty) admin token.
    assert presented_secret(basic("admin:")) == ""


@pytest.mark.parametrize(
    "value",
    ["not base64!!", "YWRtaW46c2VjcmV", "%%%", "YWJj\x00"],
    ids=["bad-chars", "missing-padding", "percent", "nul"],
)
def test_basic_with_malformed_base64_presents_nothing(value):
    assert presented_secret(f"Basic {value}") is None


def test_basic_that_is_not_utf8_presents_nothing():
    raw = base64.b64encode(b"admin:\xff\xfe").decode("ascii")
    assert presented_secret(f"Basic {raw}") is None


# --- presented_secret: anything else -----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["", "s3cret-token", "Token s3cret-token", "Digest username=admin", "Negotiate abc",
     "Bearers s3cret-token"],
)
def test_other_schemes_present_nothing(header):
    assert presented_secret(header) is None


# --- is_loopback -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_addresses_are_loopback(address):
    assert is_loopback(address) is True


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.10", "8.8.8.8", "2001:db8::1",
                                     "0.0.0.0", "fe80::1%eth0"])
def test_other_addresses_are_not_loopback(address):
    assert is_loopback(address) is False


@pytest.mark.parametrize("garbage", ["garbage", "localhost", "127.0.0.1:8080", "999.0.0.1", " "])
def test_garbage_is_not_loopback(garbage):
    assert is_loopback(garbage) is False


def test_no_address_is_not_loopback():
    assert is_loopback(None) is False
    assert is_loopback("") is False
