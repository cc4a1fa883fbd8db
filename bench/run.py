"""`make bench`: measure the service against its baselines, in one run, on this machine.

Starts a counting fake Segment and the service (`nudgespot-segment serve`) as processes on
loopback, drives the webhook figures with wrk (bench/wrk.py; the Python generator
bench/loadgen.py only when wrk is missing, and labelled so) and prints a table:

  a. single-event webhooks/s at 32 connections (and 128), stored durably, as a ratio to a bare
     aiohttp app that parses the same JSON and answers 200 without storing;
  b. events/s with 100-event webhook bodies;
  c. drain rate of a 100,000-event backlog into the fake Segment, as a ratio to raw
     segment.analytics.request.post of the same batches from one process, with as many
     threads as the publisher posts from (publisher.concurrency);
  d. ingest -> Segment latency p50 and p99 at a steady 500 events/s;
  e. peak RSS of the service while draining a 1,000,000-event backlog (and along the way);
  f. GET /status, /metrics and `status --json` on 1,000,000 and 10,000,000 stored events;
  g. webhook latency at 500/s while retention purges 1,000,000 old events (bench/scale.py).

It prints; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import wrk

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SERVE = [PYTHON, "-m", "service.cli"]
TOKEN = "bench-token-0001"
WRITE_KEY = "bench-write-key"
POSTGRES_ADMIN_URL = os.environ.get(
    "NUDGESPOT_TEST_POSTGRES_URL", "postgres://root@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def process(args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None):
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def loadgen(*args: str) -> dict[str, Any]:
    output = subprocess.run(
        [PYTHON, "-m", "bench.loadgen", *args], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return json.loads(output)


def write_config(
    directory: Path, db_url: str, port: int, segment_port: int, publisher: str = ""
) -> Path:
    path = directory / "config.yaml"
    path.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}}}
database: {{url: "{db_url}"}}
segment: {{endpoint: "http://127.0.0.1:{segment_port}", timeout_s: 15}}
publisher: {{interval_s: 1.0{", " + publisher if publisher else ""}}}
logging: {{level: WARNING}}
sources:
  - {{name: default, token: {TOKEN}, write_key: {WRITE_KEY}}}
"""
    )
    return path


class Bench:
    def __init__(self, db: str, quick: bool, workdir: Path, steps: str = "abcdefg") -> None:
        self.db = db
        self.quick = quick
        self.steps = steps
        self.workdir = workdir
        self.segment_port = free_port()
        self.results: dict[str, Any] = {}
        self.db_url = ""
        self.url_suffix = ""
        self.publisher = ""
        self.wrk: str | None = None  # the path of wrk; None: the Python generator

    def publisher_concurrency(self) -> int:
        from outbound.settings import PublisherSettings

        for part in self.publisher.split(","):
            key, _, value = part.partition(":")
            if key.strip() == "concurrency":
                return int(value)
        return PublisherSettings.concurrency

    def scale(self, n: int) -> int:
        return max(1, n // 10) if self.quick else n

    # --- set-up -------------------------------------------------------------------------

    def prepare_database(self) -> None:
        if self.db == "sqlite":
            self.db_url = f"sqlite://{self.workdir}/bench.sqlite3{self.url_suffix}"
        else:
            name = f"nudgespot_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_pg_exec(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"'))
            self.db_url = POSTGRES_ADMIN_URL.rpartition("/")[0] + f"/{name}?maxsize=20"
            self._pg_name = name
        self.config = write_config(self.workdir, self.db_url, free_port(), self.segment_port,
                                   self.publisher)
        subprocess.run([*SERVE, "migrate", "--config", str(self.config)], cwd=ROOT, check=True,
                       capture_output=True)

    def drop_database(self) -> None:
        if self.db == "postgres":
            asyncio.run(_pg_exec(POSTGRES_ADMIN_URL,
                                 f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))

    def service_port(self) -> int:
        text = self.config.read_text()
        return int(text.split("port: ")[1].split("}")[0])

    @contextmanager
    def service(self):
        with process([*SERVE, "serve", "--config", str(self.config)],
                     log=self.workdir / "serve.log") as proc:
            wait_http(f"http://127.0.0.1:{self.service_port()}/readyz")
            yield proc

    def wait_drained(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        status_url = f"http://127.0.0.1:{self.service_port()}/status"
        while any(s["pending"] for s in http_json(status_url)["sources"].values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not drain its backlog")
            time.sleep(0.5)

    def fake(self, path: str, method: str = "GET") -> Any:
        return http_json(f"http://127.0.0.1:{self.segment_port}{path}", method)

    # --- the figures --------------------------------------------------------------------

    def load(self, url: str, run: str, *, per_body: int = 1, connections: int = 32,
             seconds: float = 10) -> dict[str, Any]:
        """Drive `url` with wrk for `seconds` (or, without wrk, the Python generator)."""
        if self.wrk:
            return wrk.run(self.wrk, url, run_id=f"{run}-{uuid.uuid4().hex[:6]}",
                           per_body=per_body, connections=connections, seconds=seconds)
        requests = max(50, int(seconds * (2000 if per_body == 1 else 60)))
        result = loadgen("burst", "--url", url, "--run", f"{run}-{uuid.uuid4().hex[:6]}",
                         "--requests", str(requests), "--per-body", str(per_body),
                         "--connections", str(connections))
        result["generator"] = "python (fallback)"
        result["non_2xx"] = sum(n for status, n in result["statuses"].items()
                                if not str(status).startswith("2"))
        return result

    def ingest_runs(self, url: str) -> dict[str, dict[str, Any]]:
        seconds = 3 if self.quick else 10
        self.load(url, "warm", seconds=2)
        return {
            "single": self.load(url, "single", seconds=seconds),
            "single128": self.load(url, "single128", connections=128, seconds=seconds),
            "hundred": self.load(url, "hundred", per_body=100, seconds=seconds),
        }

    def ingest(self) -> None:
        bare_port = free_port()
        with process([PYTHON, "-m", "bench.bare", "--port", str(bare_port)]):
            wait_http_post_ready(bare_port)
            bare = self.ingest_runs(f"http://127.0.0.1:{bare_port}/webhooks/nudgespot/{TOKEN}")
        with self.service():
            service = self.ingest_runs(
                f"http://127.0.0.1:{self.service_port()}/webhooks/nudgespot/{TOKEN}")
        rate = {name: {side: runs[name]["requests"] / runs[name]["seconds"]
                       for side, runs in (("bare", bare), ("service", service))}
                for name in service}
        self.results["a"] = {
            "bare_rps": rate["single"]["bare"], "service_rps": rate["single"]["service"],
            "bare_rps_128": rate["single128"]["bare"],
            "service_rps_128": rate["single128"]["service"],
            "non_2xx": service["single"]["non_2xx"] + service["single128"]["non_2xx"],
            "generator": service["single"]["generator"],
        }
        self.results["b"] = {
            "bare_events_s": 100 * rate["hundred"]["bare"],
            "service_events_s": 100 * rate["hundred"]["service"],
            "non_2xx": service["hundred"]["non_2xx"],
            "generator": service["hundred"]["generator"],
        }

    def drain(self, count: int, key: str, sample_rss: bool = False) -> None:
        self.prepare_backlog(count, run=key)
        self.fake("/reset", "POST")
        samples: list[tuple[int, int]] = []
        with self.service() as proc:
            started = time.perf_counter()
            while True:
                delivered = self.fake("/stats")["distinct"]
                if sample_rss:
                    samples.append((delivered, rss_kb(proc.pid)))
                if delivered >= count:
                    break
                if time.perf_counter() - started > 1800:
                    raise RuntimeError(f"drain of {count} did not finish")
                time.sleep(0.25)
            peak = peak_rss_kb(proc.pid)
        stats = self.fake("/stats")
        # From the first batch to the last new event at the fake: service start-up excluded.
        elapsed = stats["last_at"] - stats["first_at"]
        self.results[key] = {"events": count, "seconds": elapsed, "events_s": count / elapsed,
                             "peak_rss_mb": peak / 1024,
                             "rss_along_mb": rss_quartiles(samples, count)}

    def prepare_backlog(self, count: int, run: str) -> None:
        subprocess.run([PYTHON, "-m", "bench.backlog", "--config", str(self.config),
                        "--count", str(count), "--run", run], cwd=ROOT, check=True)

    def raw_post(self, count: int) -> None:
        from segment.analytics.request import post

        from bench.backlog import messages_for
        from outbound.packing import Unit, pack

        self.fake("/reset", "POST")
        units = [Unit(i, [m]) for i, m in enumerate(messages_for(count, run="raw"))]
        batches = pack(units, write_key=WRITE_KEY)
        host = f"http://127.0.0.1:{self.segment_port}"
        # As many threads as the service's publisher posts from (publisher.concurrency).
        with ThreadPoolExecutor(max_workers=self.publisher_concurrency()) as pool:
            list(pool.map(lambda b: post(WRITE_KEY, host, gzip=True, timeout=15,
                                         batch=b.messages), batches))
        stats = self.fake("/stats")
        assert stats["distinct"] == count
        elapsed = stats["last_at"] - stats["first_at"]  # measured as the service's drain is
        self.results["c_raw"] = {"events": count, "seconds": elapsed,
                                 "events_s": count / elapsed, "batches": len(batches),
                                 "threads": self.publisher_concurrency()}

    def latency(self) -> None:
        from outbound.mapping import message_id

        duration = 4 if self.quick else 20
        with self.service():
            self.wait_drained()  # what earlier steps left is not this figure's latency
            self.fake("/reset?watch=1", "POST")
            url = f"http://127.0.0.1:{self.service_port()}/webhooks/nudgespot/{TOKEN}"
            sent = loadgen("paced", "--url", url, "--run", "lat", "--rate", "500",
                           "--duration-s", str(duration))
            deadline = time.monotonic() + 60
            while self.fake("/stats")["distinct"] < len(sent["sent"]):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            arrivals = self.fake("/arrivals")
        latencies = sorted(
            arrivals[message_id("default", event_id)] - at
            for event_id, at in sent["sent"].items()
            if message_id("default", event_id) in arrivals
        )
        self.results["d"] = {
            "events": len(sent["sent"]),
            "arrived": len(latencies),
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "statuses": sent["statuses"],
        }

    def run(self) -> dict[str, Any]:
        from bench import scale

        self.prepare_database()
        fake_log = self.workdir / "fake.log"
        try:
            with process([PYTHON, "-m", "bench.fake_segment", "--port", str(self.segment_port)],
                         log=fake_log):
                wait_http(f"http://127.0.0.1:{self.segment_port}/stats")
                steps = [
                    ("ab", "a+b ingest", self.ingest),
                    ("d", "d latency", self.latency),
                    ("c", "c drain", lambda: self.drain(self.scale(100_000), "c")),
                    ("c", "c raw post", lambda: self.raw_post(self.scale(100_000))),
                    ("e", "e 1M drain", lambda: self.drain(self.scale(1_000_000), "e", True)),
                    ("f", "f status at scale", lambda: scale.status_at_scale(self)),
                    ("g", "g retention under load", lambda: scale.retention_under_load(self)),
                ]
                for keys, name, step in steps:
                    if not set(keys) & set(self.steps):
                        continue
                    print(f"[{self.db}] {name}…", file=sys.stderr, flush=True)
                    step()
        finally:
            self.drop_database()
        return self.results


def wait_http_post_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kb(pid: int) -> int:
    return rss_kb(pid, "VmHWM")


def rss_quartiles(samples: list[tuple[int, int]], total: int) -> list[float]:
    marks = []
    for fraction in (0.25, 0.5, 0.75, 1.0):
        reached = [rss for done, rss in samples if done >= fraction * total]
        marks.append(round(reached[0] / 1024, 1) if reached else 0.0)
    return marks


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, int(p) - 1)]


async def _pg_exec(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_reachable() -> bool:
    try:
        asyncio.run(_pg_exec(POSTGRES_ADMIN_URL, "SELECT 1"))
        return True
    except Exception:  # noqa: BLE001
        return False


def table(all_results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| figure | " + " | ".join(all_results) + " | target (SQLite) |",
        "|---|" + "---|" * len(all_results) + "---|",
    ]

    def row(label: str, target: str, fmt) -> None:  # noqa: ANN001
        cells = []
        for results in all_results.values():
            try:
                cells.append(fmt(results))
            except (KeyError, ZeroDivisionError, TypeError):
                cells.append("n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row("a. single-event webhooks/s, 32 connections (bare aiohttp)", "≥ 50 % of bare",
        lambda r: f"{r['a']['service_rps']:,.0f} ({r['a']['bare_rps']:,.0f}) = "
                  f"{100 * r['a']['service_rps'] / r['a']['bare_rps']:.0f} %")
    row("a. the same, 128 connections (bare aiohttp)", "reported",
        lambda r: f"{r['a']['service_rps_128']:,.0f} ({r['a']['bare_rps_128']:,.0f}) = "
                  f"{100 * r['a']['service_rps_128'] / r['a']['bare_rps_128']:.0f} %")
    row("b. events/s, 100-event bodies, 32 connections (bare aiohttp)", "≥ 30,000/s",
        lambda r: f"{r['b']['service_events_s']:,.0f} ({r['b']['bare_events_s']:,.0f})")
    row("c. drain of a 100,000 backlog, events/s (raw request.post)", "≥ 70 % of raw",
        lambda r: f"{r['c']['events_s']:,.0f} ({r['c_raw']['events_s']:,.0f}) = "
                  f"{100 * r['c']['events_s'] / r['c_raw']['events_s']:.0f} %")
    row("d. ingest→Segment latency at 500/s, p50 / p99", "≤ 200 ms / ≤ 1 s",
        lambda r: f"{r['d']['p50_ms']:.0f} ms / {r['d']['p99_ms']:.0f} ms")
    row("e. peak RSS draining 1,000,000 (RSS at 25/50/75/100 %)", "≤ 250 MB, flat",
        lambda r: f"{r['e']['peak_rss_mb']:.0f} MB ({' / '.join(f'{m:.0f}' for m in r['e']['rss_along_mb'])})")  # noqa: E501
    from bench import scale

    for label, target, fmt in scale.ROWS:
        row(label, target, fmt)
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--steps", default="abcdefg",
                        help="which figures to measure (abcdefg)")
    parser.add_argument("--publisher", default="",
                        help="extra publisher settings, e.g. 'concurrency: 2'")
    parser.add_argument("--db-url-suffix", default="",
                        help="appended to the database URL (e.g. '?synchronous=NORMAL')")
    args = parser.parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in dbs and not postgres_reachable():
        print(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: SQLite only",
              file=sys.stderr)
        dbs.remove("postgres")
    wrk_path = wrk.ensure_wrk() if set("ab") & set(args.steps) else None
    all_results: dict[str, dict[str, Any]] = {}
    for db in dbs:
        with tempfile.TemporaryDirectory(prefix=f"nudgespot-bench-{db}-") as tmp:
            bench = Bench(db, args.quick, Path(tmp), args.steps)
            bench.url_suffix = args.db_url_suffix
            bench.publisher = args.publisher
            bench.wrk = wrk_path
            all_results[db] = bench.run()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nnudgespot-segment benchmark, {when}; {machine()}"
          f"{' (--quick: a tenth of the sizes)' if args.quick else ''}")
    generators = {r[k]["generator"] for r in all_results.values() for k in "ab" if k in r}
    if generators:
        print("Webhook load of a and b: " + ", ".join(sorted(
            "wrk (1 thread)" if g == "wrk" else "the Python generator bench/loadgen.py "
            "(FALLBACK: wrk is not installed; it shares the cores with the server)"
            for g in generators)) + "; d and g send at a fixed rate from bench/loadgen.py.")
    print()
    print(table(all_results))
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2, default=str))


if __name__ == "__main__":
    main()
