"""Fixtures of the resilience tests: a fake Segment on loopback and real `serve` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_POSTGRES
from tests.resilience.harness import (
    Inspector,
    ServiceProcess,
    TimedFakeSegment,
    free_port,
    inspector_for,
    service_config,
    write_config,
)
from tests.resilience.pgcluster import PrivateCluster, unavailable_reason


@pytest.fixture
async def fake(aiohttp_server: Any) -> TimedFakeSegment:
    """The fake Segment, served on 127.0.0.1 from this test's event loop."""
    fake = TimedFakeSegment()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


ServiceFactory = Callable[..., ServiceProcess]


@pytest.fixture
def service_factory(tmp_path: Path, fake: TimedFakeSegment) -> Iterator[ServiceFactory]:
    """make(db_url, name=..., **config sections) -> a ServiceProcess (not yet started).

    Each gets its own free port and config file in tmp_path; all are killed at teardown,
    and their log tails are printed (pytest shows them when the test failed).
    """
    made: list[ServiceProcess] = []

    def make(db_url: str, name: str = "serve", **sections: Any) -> ServiceProcess:
        port = free_port()
        document = service_config(port=port, db_url=db_url, segment_url=fake.url, **sections)
        config = write_config(tmp_path / f"{name}.yaml", document)
        service = ServiceProcess(name, config, port, tmp_path)
        made.append(service)
        return service

    yield make
    for service in made:
        service.cleanup()
    for service in made:
        print(f"----- {service.name} ({service.log_path}) -----\n{service.log_tail(40)}")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Inspector:
    """An empty database for a test that runs on SQLite and on PostgreSQL; its inspector.

    PostgreSQL is tests/conftest.py's throw-away database on the shared server (skipped, or
    failed under REQUIRE_POSTGRES, when that server is unreachable).
    """
    if request.param == "sqlite":
        return inspector_for(request.getfixturevalue("sqlite_url"))
    return inspector_for(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Inspector:
    return inspector_for(sqlite_url)


@pytest.fixture
def postgres_database_inspector(postgres_url: str) -> Inspector:
    return inspector_for(postgres_url)


@pytest.fixture
async def private_cluster() -> AsyncIterator[PrivateCluster]:
    """A running private PostgreSQL cluster; stopped and deleted afterwards."""
    reason = unavailable_reason()
    if reason is not None:
        message = f"cannot start a private PostgreSQL cluster: {reason}"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; NUDGESPOT_TEST_REQUIRE_POSTGRES/CI demands this test runs")
        pytest.skip(message)
    cluster = PrivateCluster()
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        cluster.destroy()
