import json
from pathlib import Path

import pytest

from service.app import create_app
from service.wiring import build_publisher
from tests.conftest import TOKEN, make_settings
from tests.fake_segment import FakeSegment

EXAMPLE = (Path(__file__).parents[2] / ".." / "shared" / "docs" / "examples.md")


@pytest.fixture
async def fake(aiohttp_server):
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


async def test_example_reaches_segment(aiohttp_client, fake, db_url):
    settings = make_settings(db_url, segment={"endpoint": fake.url})
    client = await aiohttp_client(create_app(settings, publisher=build_publisher(settings)))
    body = [
        {"id": "e1", "event": "open", "timestamp": 1795167060, "subscriber": {"uid": "42"}},
        {"id": "e2", "event": "click", "timestamp": 1795167060, "user": {"email": "a@b.co"}},
    ]
    resp = await client.post(f"/webhooks/nudgespot/{TOKEN}", json=body)
    assert resp.status == 200, await resp.text()
    delivered = await fake.wait_for(2)
    assert {m["event"] for m in delivered} == {"Email Opened", "Email Link Clicked"}
    assert all(r.gzipped and r.write_key == "WK-default" for r in fake.received)
    print(json.dumps(delivered, indent=1)[:300])
