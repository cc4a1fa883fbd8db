"""podman for tests/container: a private containers.conf, base images built locally (no image
registry is needed), the project's image built by `make container-image`, and a fake Segment
served from a thread, for tests that drive podman with blocking subprocess calls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fake_segment import FakeSegment

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

SUITE = "bookworm"
# Base images, made with mmdebstrap from this machine's apt mirror and kept between runs.
MINBASE_IMAGE = f"localhost/nudgespot-test-minbase:{SUITE}"
PGBASE_IMAGE = f"localhost/nudgespot-test-pgbase:{SUITE}"
# Rebuilt each run (podman's layer cache makes that quick when nothing changed).
POSTGRES_IMAGE = "localhost/nudgespot-test-postgres:15"
APP_IMAGE = "localhost/nudgespot-segment:test"

TOOLS = ("podman", "runc", "mmdebstrap", "podman-compose", "slirp4netns")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def write_containers_conf(directory: Path) -> Path:
    """A containers.conf for this host: runc (crun refuses a hybrid cgroup v1/v2 layout) and
    ulimits within the hard limits (podman's defaults ask for more than this host allows)."""
    _, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nofile_hard = 1048576 if nofile_hard == resource.RLIM_INFINITY else nofile_hard
    nproc = 4096 if nproc_hard == resource.RLIM_INFINITY else min(4096, nproc_hard)
    path = directory / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={min(1024, nofile_hard)}:{nofile_hard}", '
        f'"nproc={nproc}:{nproc}"]\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        "\n[network]\n"
        'network_backend = "netavark"\n',
        encoding="utf-8",
    )
    return path


class Podman:
    """Runs podman (and make, podman-compose) with this test's containers.conf."""

    def __init__(self, conf: Path) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(
        self, *args: str, timeout_s: float = 120.0, check: bool = True,
        env: Mapping[str, str] | None = None, cwd: Path = REPO,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion; with check, fail showing its output when it fails."""
        started = time.monotonic()
        proc = subprocess.run(
            list(args), cwd=str(cwd), env={**self.env, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:4])}... exited {proc.returncode} after "
                f"{time.monotonic() - started:.0f} s:\n{proc.stdout[-6000:]}")
        return proc

    def podman(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("podman", *args, **kwargs)

    def out(self, *args: str, **kwargs: Any) -> str:
        """podman ARGS's output without its log lines (podman logs systemd-less health timers
        to the same stream)."""
        text = self.podman(*args, **kwargs).stdout
        return "\n".join(line for line in text.splitlines()
                         if not line.startswith(("time=", "failed to connect to syslog"))).strip()

    def image_exists(self, image: str) -> bool:
        return self.podman("image", "exists", image, check=False).returncode == 0

    def inspect(self, name: str, template: str) -> str:
        return self.out("inspect", name, "--format", template)

    def logs(self, name: str, tail: int = 60) -> str:
        return self.podman("logs", "--tail", str(tail), name, check=False).stdout


# --- base images -------------------------------------------------------------------------


def apt_sources(suite: str = SUITE) -> list[str]:
    """One-line apt entries ("deb [signed-by=...] URI SUITE COMPONENTS") for `suite` and its
    -updates/-security suites, as configured on this machine (/etc/apt/sources.list*)."""
    entries: list[tuple[str, str, str, str]] = []  # (uri, suite, components, signed_by)
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".list" or path.name == "sources.list":
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                match = re.match(r"deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<rest>.+)", line)
                if not match:
                    continue
                uri, dist, *components = match["rest"].split()
                opts = dict(o.split("=", 1) for o in (match["opts"] or "").split() if "=" in o)
                entries.append((uri, dist, " ".join(components), opts.get("signed-by", "")))
        elif path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = ""
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                    elif ":" in line:
                        key, _, value = line.partition(":")
                        key = key.strip().lower()
                        fields[key] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                signed_by = fields.get("signed-by", "")
                signed_by = signed_by if signed_by.startswith("/") and " " not in signed_by else ""
                for uri in fields.get("uris", "").split():
                    for dist in fields.get("suites", "").split():
                        entries.append((uri, dist, fields.get("components", "main"), signed_by))
    wanted = [e for e in entries if e[1] == suite or e[1].startswith(f"{suite}-")]
    wanted.sort(key=lambda e: e[1] != suite)  # the suite itself first
    return [f"deb {f'[signed-by={sb}] ' if sb else ''}{uri} {dist} {comps}"
            for uri, dist, comps, sb in wanted]


def ensure_debian_image(podman: Podman, image: str, include: Sequence[str], workdir: Path) -> None:
    """Import a Debian minbase with `include` as `image`, unless it exists (kept between runs)."""
    if podman.image_exists(image):
        return
    sources = apt_sources()
    assert sources, f"no apt source for {SUITE} in /etc/apt/sources.list* to build {image} from"
    tarball = workdir / (image.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
    try:
        podman.run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(include)}",
                   SUITE, str(tarball), *sources, timeout_s=900)
        podman.podman("import", str(tarball), image, timeout_s=300)
    finally:
        tarball.unlink(missing_ok=True)


def build_app_image(podman: Podman, base: str) -> None:
    """`make container-image` on `base`, tagged APP_IMAGE; the tag's previous image removed."""
    previous = podman.out("images", "--quiet", "--no-trunc", APP_IMAGE, check=False)
    podman.run("make", "--no-print-directory", "container-image", f"IMAGE={APP_IMAGE}",
               f"CONTAINER_BASE={base}", timeout_s=900)
    _drop_replaced(podman, previous, APP_IMAGE)


def build_postgres_image(podman: Podman) -> None:
    """tests/container/postgres on the PostgreSQL minbase, tagged POSTGRES_IMAGE."""
    previous = podman.out("images", "--quiet", "--no-trunc", POSTGRES_IMAGE, check=False)
    podman.podman("build", "--network=none", "--layers=false",
                  "--build-arg", f"BASE={PGBASE_IMAGE}", "-t", POSTGRES_IMAGE,
                  str(HERE / "postgres"), timeout_s=600)
    _drop_replaced(podman, previous, POSTGRES_IMAGE)


def _drop_replaced(podman: Podman, previous: str, tag: str) -> None:
    current = podman.out("images", "--quiet", "--no-trunc", tag, check=False)
    for image_id in set(previous.split()) - set(current.split()):
        podman.podman("rmi", image_id, check=False)


# --- HTTP and the fake Segment -----------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
         timeout_s: float = 10.0) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request; (0, error) when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, urllib.error.URLError) as exc:
        return 0, repr(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               describe: Callable[[], str] | None = None, interval_s: float = 0.5) -> Any:
    """Poll until `condition()` is truthy; return it; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f": {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(interval_s)


class ThreadedFakeSegment:
    """tests/fake_segment.py's FakeSegment, served from its own thread and event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fake-segment")
        self._runner: web.AppRunner | None = None
        self.fake: FakeSegment | None = None

    def __enter__(self) -> ThreadedFakeSegment:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self.fake = FakeSegment()
        self._runner = web.AppRunner(self.fake.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def delivered(self) -> list[tuple[str, dict[str, Any]]]:
        """(write key, message) of every message the fake answered 2xx."""
        async def snapshot() -> list[tuple[str, dict[str, Any]]]:
            assert self.fake is not None
            return [(r.write_key, m) for r in self.fake.received if 200 <= r.status < 300
                    for m in r.messages]

        return self._call(snapshot())
