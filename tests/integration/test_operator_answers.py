"""Small things an operator meets: JSON for every error, no version in Server, replay filters
that name what they do not know, an SPDX licence."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from tests.conftest import make_settings
from tests.integration.test_cli_admin import Cli, make_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A migrated database and its config, for the command line."""
    command_line = make_cli(tmp_path)
    assert command_line.run("migrate").returncode == 0
    return command_line


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> TestClient:
    return await aiohttp_client(create_app(make_settings(sqlite_url), retention=False))


@pytest.mark.parametrize("path", ["/webhooks/", "/webhooks", "/webhooks/nudgespot/"])
async def test_a_webhook_url_without_a_token_is_a_json_404_that_says_so(
    client: TestClient, path: str
) -> None:
    async with client.post(path, json=[]) as response:
        assert (response.status, response.content_type) == (404, "application/json")
        assert await response.json() == {
            "error": "no webhook token in the URL: POST /webhooks/<token>"}


async def test_an_unknown_path_is_a_json_404(client: TestClient) -> None:
    async with client.get("/nothing-here") as response:
        assert (response.status, await response.json()) == (404, {"error": "not found"})


async def test_a_wrong_method_is_a_json_405_that_says_which_are_allowed(
    client: TestClient,
) -> None:
    async with client.delete("/healthz") as response:
        assert (response.status, await response.json()) == (405, {"error": "method not allowed"})
        assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("method, path", [("GET", "/healthz"), ("GET", "/nothing-here"),
                                          ("POST", "/webhooks/wrong-token-000")])
async def test_the_server_header_names_no_versions(
    client: TestClient, method: str, path: str
) -> None:
    async with client.request(method, path, json=[]) as response:
        assert response.headers["Server"] == "nudgespot-segment"


async def test_replay_of_an_unknown_source_is_a_400_naming_it(client: TestClient) -> None:
    async with client.post("/replay", json={"source": "nope"}) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": "bad replay request: unknown source 'nope' (configured: default, other)"}


async def test_replay_of_an_unknown_event_name_is_a_400_naming_it(client: TestClient) -> None:
    async with client.post("/replay", json={"event": ["email_teleported"]}) as response:
        assert response.status == 400
        assert "'email_teleported'" in (await response.json())["error"]


def test_replay_command_with_an_unknown_source_exits_2_naming_it(cli: Cli) -> None:
    result = cli.run("replay", "--source", "nope")

    assert result.returncode == 2
    assert "unknown source 'nope'" in result.stderr
    assert result.stdout == ""


def test_replay_command_with_an_unknown_event_exits_2_naming_it(cli: Cli) -> None:
    result = cli.run("replay", "--event", "email_teleported")

    assert result.returncode == 2
    assert "email_teleported" in result.stderr


def test_the_licence_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
