"""The container image and compose.yaml, for real, with podman (`make test-container`).

1. The image on SQLite: a named volume for /app/data, the webhook token and write key from the
   environment, segment.endpoint at a fake Segment on this host's loopback (reached through
   slirp4netns' host-loopback address 10.0.2.2, so the service keeps its port 8080 inside and
   nothing listens beyond loopback). /healthz, the image's HEALTHCHECK, one event through to the
   fake, `podman stop -t 30` answered by a clean exit 0, and the data kept in the volume.
2. compose.yaml with podman-compose: PostgreSQL 15, `migrate`, two `serve` replicas; an event
   posted to each replica reaches the fake (listening on the compose network's gateway).

No image registry is reachable here, so the base images are Debian bookworm minbases made
with mmdebstrap from this machine's apt mirror (kept between runs), and PostgreSQL 15 is
Debian's package in tests/container/postgres, a stand-in that reads the official image's
variables: compose.yaml runs unchanged with POSTGRES_IMAGE pointing at it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from outbound.mapping import message_id
from tests.container.podman import (
    APP_IMAGE,
    MINBASE_IMAGE,
    PGBASE_IMAGE,
    POSTGRES_IMAGE,
    REPO,
    Podman,
    ThreadedFakeSegment,
    build_app_image,
    build_postgres_image,
    ensure_debian_image,
    free_port,
    http,
    missing_tools,
    wait_until,
    write_containers_conf,
)

REQUIRE = bool(os.environ.get("CI")) or os.environ.get("NUDGESPOT_TEST_REQUIRE_CONTAINER") == "1"
# The first run also makes the two base images (about a minute each).
pytestmark = pytest.mark.timeout(1500)

TIMING: dict[str, float] = {}


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    missing = missing_tools()
    if missing:
        message = (f"{', '.join(missing)} not installed; `make test-container` installs them "
                   "(tests/container/ensure-podman.sh)")
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    return Podman(write_containers_conf(tmp_path_factory.mktemp("podman")))


@pytest.fixture(scope="module")
def app_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    started = time.monotonic()
    ensure_debian_image(podman, MINBASE_IMAGE, ["python3", "python3-venv"],
                        tmp_path_factory.mktemp("minbase"))
    TIMING["base image (mmdebstrap, cached)"] = time.monotonic() - started
    started = time.monotonic()
    build_app_image(podman, MINBASE_IMAGE)
    TIMING["app image (wheels + build)"] = time.monotonic() - started
    return APP_IMAGE


@pytest.fixture(scope="module")
def postgres_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    started = time.monotonic()
    ensure_debian_image(podman, PGBASE_IMAGE, ["postgresql-15"],
                        tmp_path_factory.mktemp("pgbase"))
    build_postgres_image(podman)
    TIMING["postgres image"] = time.monotonic() - started
    return POSTGRES_IMAGE


@pytest.fixture(scope="module", autouse=True)
def report_timing() -> Iterator[None]:
    yield
    print("\ncontainer test timing: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMING.items()))


def nudgespot_event(event_id: str) -> dict[str, object]:
    return {"id": event_id, "event": "email_opened", "timestamp": "2026-11-20T09:30:00Z",
            "subscriber": {"uid": "42", "email": "ada@example.com"}}


def assert_exited_0_promptly(podman: Podman, name: str, timeout_s: int = 30,
                             clean_log: bool = True) -> None:
    """`podman stop -t 30` (SIGTERM, then SIGKILL after 30 s): a clean, prompt exit 0."""
    started = time.monotonic()
    podman.podman("stop", "-t", str(timeout_s), name, timeout_s=timeout_s + 30)
    took = time.monotonic() - started
    code = podman.inspect(name, "{{.State.ExitCode}}")
    logs = podman.logs(name)
    assert code == "0", f"{name} exited {code} on SIGTERM:\n{logs}"
    assert took < timeout_s - 5, f"{name} took {took:.0f} s to stop: SIGTERM not handled?\n{logs}"
    if clean_log:
        assert "Traceback" not in logs, logs


def test_image_on_sqlite_with_a_volume_delivers_an_event_and_exits_0_on_sigterm(
    podman: Podman, app_image: str
) -> None:
    started = time.monotonic()
    run = uuid.uuid4().hex[:10]
    volume, names = f"nudgespot-ct-{run}", [f"nudgespot-ct-{run}", f"nudgespot-ct-{run}-again"]
    token, write_key = f"ct-token-{run}", f"WK-ct-{run}"
    fake_port = free_port()
    event_id = f"ct-sqlite-{run}"

    user = podman.out("image", "inspect", app_image, "--format", "{{.Config.User}}")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"image runs as {user!r}"
    assert podman.out("image", "inspect", app_image, "--format", "{{.Config.Healthcheck}}"), \
        "the image has no HEALTHCHECK (built without --format docker?)"

    def start(name: str) -> int:
        port = free_port()
        # Secrets as `-e NAME`: their values come from podman's environment, not its arguments.
        podman.podman(
            "run", "-d", "--name", name,
            "--network=slirp4netns:allow_host_loopback=true", "-p", f"127.0.0.1:{port}:8080",
            "-v", f"{volume}:/app/data",
            "-e", "NUDGESPOT_WEBHOOK_TOKEN", "-e", "SEGMENT_WRITE_KEY", "-e", "SEGMENT_ENDPOINT",
            app_image,
            env={"NUDGESPOT_WEBHOOK_TOKEN": token, "SEGMENT_WRITE_KEY": write_key,
                 "SEGMENT_ENDPOINT": f"http://10.0.2.2:{fake_port}"})
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200, 90,
                   f"{name}'s /healthz", lambda: podman.logs(name, 20))
        return port

    try:
        with ThreadedFakeSegment("127.0.0.1", fake_port) as segment:
            port = start(names[0])
            assert podman.podman("exec", names[0], "id", "-u").stdout.strip() != "0"
            health = podman.podman("healthcheck", "run", names[0], check=False)
            assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}"

            url = f"http://127.0.0.1:{port}/webhooks/{token}"
            assert http("POST", url, nudgespot_event(event_id)) == (
                200, {"accepted": 1, "duplicates": 0, "rejected": []})
            expected = message_id("default", event_id)
            arrived = wait_until(
                lambda: [(k, m) for k, m in segment.delivered() if m["messageId"] == expected],
                30, "the event at the fake Segment", lambda: f"{segment.delivered()}")
            assert [(k, m["event"], m["userId"]) for k, m in arrived] == [
                (write_key, "Email Opened", "42")]
            assert_exited_0_promptly(podman, names[0])

            # The database lives in the volume: a new container on it knows the event.
            port = start(names[1])
            url = f"http://127.0.0.1:{port}/webhooks/{token}"
            assert http("POST", url, nudgespot_event(event_id)) == (
                200, {"accepted": 0, "duplicates": 1, "rejected": []})
            assert_exited_0_promptly(podman, names[1])
    finally:
        for name in names:
            print(f"----- {name} -----\n{podman.logs(name, 40)}")
            podman.podman("rm", "-f", name, check=False)
        podman.podman("volume", "rm", "-f", volume, check=False)
    TIMING["sqlite test"] = time.monotonic() - started


def test_compose_runs_migrate_and_two_replicas_on_postgres_15(
    podman: Podman, app_image: str, postgres_image: str
) -> None:
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    project = f"nsct{run}"
    ports = [free_port(), free_port()]
    fake_port = free_port("0.0.0.0")
    token, write_key = f"ct-token-{run}", f"WK-ct-{run}"
    env = {
        "POSTGRES_PASSWORD": uuid.uuid4().hex,
        "NUDGESPOT_WEBHOOK_TOKEN": token,
        "SEGMENT_WRITE_KEY": write_key,
        "ADMIN_TOKEN": f"ct-admin-{run}",
        "SEGMENT_ENDPOINT": f"http://host.containers.internal:{fake_port}",
        "POSTGRES_IMAGE": postgres_image,
        "NUDGESPOT_IMAGE": app_image,
        "SERVE_1_PORT": str(ports[0]),
        "SERVE_2_PORT": str(ports[1]),
        "NUDGESPOT_SIGNING_SECRET": "",  # passed through when set: none from this shell
    }
    compose = ["podman-compose", "-p", project, "-f", str(REPO / "compose.yaml")]
    containers = {s: f"{project}_{s}_1" for s in ("postgres", "migrate", "serve-1", "serve-2")}
    volumes: set[str] = set()
    down_done = False

    def mounts() -> None:
        for name in containers.values():
            volumes.update(podman.inspect(
                name, "{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}").split())

    def dump_logs() -> None:  # pytest shows them when the test fails
        for name in containers.values():
            print(f"----- {name} -----\n{podman.logs(name, 40)}")

    try:
        podman.run(*compose, "up", "-d", env=env, timeout_s=300)
        mounts()
        gateway = podman.out("network", "inspect", f"{project}_default",
                             "--format", "{{range .Subnets}}{{.Gateway}}{{end}}")
        assert gateway, f"no gateway for {project}_default"
        with ThreadedFakeSegment(gateway, fake_port) as segment:
            wait_until(lambda: podman.inspect(containers["migrate"], "{{.State.Status}}")
                       == "exited", 300, "migrate to finish",
                       lambda: podman.logs(containers["migrate"], 10))
            assert podman.inspect(containers["migrate"], "{{.State.ExitCode}}") == "0", \
                podman.logs(containers["migrate"])
            for port in ports:
                wait_until(lambda p=port: http("GET", f"http://127.0.0.1:{p}/healthz")[0] == 200,
                           120, f"/healthz on {port}")
            for replica in ("serve-1", "serve-2"):
                health = podman.podman("healthcheck", "run", containers[replica], check=False)
                assert health.returncode == 0, f"{replica} HEALTHCHECK: {health.stdout}"

            ids = [f"ct-pg-{run}-1", f"ct-pg-{run}-2"]
            for port, event_id in zip(ports, ids, strict=True):
                assert http("POST", f"http://127.0.0.1:{port}/webhooks/{token}",
                            nudgespot_event(event_id)) == (
                    200, {"accepted": 1, "duplicates": 0, "rejected": []})
            # One database: the second replica knows the first one's event.
            assert http("POST", f"http://127.0.0.1:{ports[1]}/webhooks/{token}",
                        nudgespot_event(ids[0])) == (
                200, {"accepted": 0, "duplicates": 1, "rejected": []})
            expected = {message_id("default", event_id) for event_id in ids}
            wait_until(lambda: expected <= {m["messageId"] for _, m in segment.delivered()},
                       60, "both replicas' events at the fake Segment",
                       lambda: f"{segment.delivered()}")
            delivered = [(k, m["messageId"]) for k, m in segment.delivered()]
            assert sorted(delivered) == sorted((write_key, mid) for mid in expected), delivered
            status, body = http("GET", f"http://127.0.0.1:{ports[0]}/status",
                                headers={"Authorization": f"Bearer ct-admin-{run}",
                                         "Accept": "application/json"})
            assert status == 200, body

            dump_logs()
            # A replica may have logged errors while the schema was missing: no clean_log.
            for replica in ("serve-1", "serve-2"):
                assert_exited_0_promptly(podman, containers[replica], 40, clean_log=False)
            podman.run(*compose, "down", "-v", "-t", "40", env=env, timeout_s=180)
            down_done = True
            left = podman.out("ps", "-a", "--quiet", "--filter",
                              f"label=io.podman.compose.project={project}")
            assert not left, f"containers left after down: {left}"
    finally:
        if not down_done:
            dump_logs()
            podman.run(*compose, "down", "-v", "-t", "10", env=env, timeout_s=180, check=False)
        for name in containers.values():
            podman.podman("rm", "-f", name, check=False)
        for volume in volumes | {f"{project}_pgdata"}:
            podman.podman("volume", "rm", "-f", volume, check=False)
        podman.podman("network", "rm", "-f", f"{project}_default", check=False)
    TIMING["compose test"] = time.monotonic() - started
