"""Schemathesis against service/openapi.yaml, with the real app on a real loopback port.

Each documented operation gets generated requests (positive: conforming to the spec; negative:
violating it) and every answer is checked for: no 5xx, a documented status code, a body that
matches the documented schema, and the documented content type. The app runs in the test's
event loop (pytest-aiohttp's aiohttp_server, SQLite, an admin token); schemathesis's blocking
client runs in a worker thread so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import service
from service.app import create_app
from tests.conftest import TOKEN, make_settings

SPEC = Path(service.__file__).resolve().parent / "openapi.yaml"
ADMIN_TOKEN = "schemathesis-admin-token-0042"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
MAX_EXAMPLES = 50
SCHEMA = schemathesis.openapi.from_path(SPEC, config=schemathesis.Config())
OPERATIONS = {
    op.definition.raw["operationId"]: op
    for op in (result.ok() for result in SCHEMA.get_all_operations())
}
# Negative data needs a body to break.
WITH_INPUT = ["ingestEvents", "ingestNudgespotEvents", "replay"]
SPEC_MISMATCHES: dict[str, Any] = {}  # operationId -> xfail mark, for a known mismatch
ADMIN = ["status", "replay", "metrics"]


def run_operation(
    operation_id: str,
    mode: GenerationMode,
    base_url: str,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> Counter[int]:
    """Generate and send cases for one operation; raise on the first failing check.

    Returns how often each status code was answered.
    """
    operation = OPERATIONS[operation_id]
    fixed = {"token": token} if token is not None and "{token}" in operation.path else None
    seen: Counter[int] = Counter()
    session = requests.Session()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    finally:
        session.close()
    return seen


@pytest.fixture
async def base_url(aiohttp_server: Any, sqlite_url: str) -> str:
    settings_ = make_settings(sqlite_url, admin={"token": ADMIN_TOKEN})
    server = await aiohttp_server(create_app(settings_, retention=False), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


def test_every_documented_operation_is_exercised() -> None:
    assert set(OPERATIONS) == {
        "ingestEvents", "checkWebhook", "ingestNudgespotEvents", "checkNudgespotWebhook",
        "status", "replay", "metrics", "healthz", "readyz", "openapi",
    }


def operation_params(ids: list[str]) -> list[Any]:
    return [pytest.param(i, id=i, marks=[SPEC_MISMATCHES[i]] if i in SPEC_MISMATCHES else [])
            for i in ids]


@pytest.mark.parametrize("operation_id", operation_params(sorted(OPERATIONS)))
async def test_conforming_requests_get_documented_answers(
    base_url: str, operation_id: str
) -> None:
    seen = await asyncio.to_thread(
        run_operation, operation_id, GenerationMode.POSITIVE, base_url, headers=AUTH
    )

    assert seen, "no request was sent"
    assert 401 not in seen, seen  # the webhook token and the admin token were both right


@pytest.mark.parametrize("operation_id", WITH_INPUT)
async def test_nonconforming_requests_get_documented_answers(
    base_url: str, operation_id: str
) -> None:
    seen = await asyncio.to_thread(
        run_operation, operation_id, GenerationMode.NEGATIVE, base_url, headers=AUTH
    )

    assert seen, "no request was sent"
    assert max(seen) < 500, seen


@pytest.mark.parametrize(
    "operation_id",
    ["ingestEvents", "checkWebhook", "ingestNudgespotEvents", "checkNudgespotWebhook"],
)
async def test_generated_webhook_tokens_get_documented_answers(
    base_url: str, operation_id: str
) -> None:
    seen = await asyncio.to_thread(
        run_operation, operation_id, GenerationMode.POSITIVE, base_url, token=None
    )

    assert 401 in seen, seen


@pytest.mark.parametrize("operation_id", ADMIN)
async def test_admin_operations_without_credentials_get_documented_answers(
    base_url: str, operation_id: str
) -> None:
    seen = await asyncio.to_thread(
        run_operation, operation_id, GenerationMode.POSITIVE, base_url, headers=None
    )

    assert set(seen) == {401}, seen
