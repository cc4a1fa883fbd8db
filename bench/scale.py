"""Figures f and g of `make bench` (bench/run.py calls them): the service on a big database.

  f. status at scale: a database holding 1,000,000 and then 10,000,000 stored events (almost all
     delivered, a few thousand pending and dead, over two sources, plus rejects), filled with
     set-based SQL, counters rebuilt from the rows; then the time to answer GET /status (JSON
     and HTML) and GET /metrics, and the wall time of `nudgespot-segment status --json` (its
     baseline: the same command on the empty database, since Python start-up dominates);
  g. retention under load: 1,000,000 delivered events delivered 60 to 40 days ago, the
     service started on them with retention.delivered_days 30 and taking single-event webhooks
     at 500/s; its own retention job (in-process, on its own connection, first run 60 s after
     start) purges them: webhook latency p50/p99 during that run, p99 before it, and how long
     the run took. The bench sees the run begin by polling the lowest event id (read-only) and
     end by the service's "retention deleted N delivered event(s)" log line. With
     SEPARATE_PROCESS, also the worst case, not what the service does: AdminQueries.purge run
     from a separate process on a fresh copy (on SQLite it takes turns at the file lock).

The driver starts the helpers below as processes: `python -m bench.scale paced|purge|recount`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.run import (
    POSTGRES_ADMIN_URL,
    PYTHON,
    ROOT,
    SERVE,
    TOKEN,
    WRITE_KEY,
    _pg_exec,
    free_port,
    percentile,
    process,
    wait_http,
)
from models.schema import BACKLOG_SAMPLES, DELIVERIES

STATUS_SIZES = (1_000_000, 10_000_000)  # f, a tenth of each with --quick
RETENTION_SIZE = 1_000_000  # g
RETENTION_FIRST_RUN_S = 60  # service/app.py _retention_ctx: the job's first run after start
RETENTION_WATCH_S = 1800  # g gives up on the service's retention run this long after start
POLL_S = 0.1  # g: how often the bench reads the lowest event id while it waits and watches
SEPARATE_PROCESS = True  # g: also the purge from a separate process (worst case)
PENDING_ROWS, DEAD_ROWS, REJECT_ROWS = 4_000, 1_000, 2_000  # the same at every size
SOURCES = ("default", "marketing")
SECOND_TOKEN = "bench-token-0002"
HISTORY_S = 25 * 86400  # f: delivered over the last 25 days, inside the retention window
RETENTION_DAYS = 30  # g: the purge's window; its events were delivered 60 to 40 days ago
OLD_FROM_S, OLD_SPAN_S = 60 * 86400, 20 * 86400
TIMED_REQUESTS = 15  # per HTTP figure, after one untimed request
CLI_RUNS = 5
RECOUNT_BUDGET_S = 10.0  # AdminQueries.recount() gets this long before the bench gives up
RATE = 500
FILL_CHUNK = 250_000

# --- set-based SQL, written once with PostgreSQL markers ($1::type) --------------------------

PAYLOAD = ('{"id":"scale-<n>","event":"email_delivered","timestamp":<ts>,"subscriber":'
           '{"uid":"user-<u>","email":"user<u>@example.com"},"message":{"id":"msg-<m>",'
           '"subject":"Your weekly digest","campaign_id":"c-1","campaign_name":"Weekly"}}')
FIELDS = ('{"user_id":"user-<u>","email":"user<u>@example.com","message_id":"msg-<m>",'
          '"subject":"Your weekly digest","campaign_id":"c-1","campaign_name":"Weekly"}')
EVENT_COLUMNS = ("source, dedup_key, event_type, event_time, status, attempts, "
                 "next_attempt_at, last_error, received_at, updated_at, delivered_at")
SOURCE_OF_N = f"CASE n % 2 WHEN 0 THEN '{SOURCES[0]}' ELSE '{SOURCES[1]}' END"
# Event ids in arrival order (counters, ULIDs, ObjectIds): a purge chunk's keys sit together in
# the unique (source, dedup_key) index. RANDOM_KEYS: ids in no order (random ids), each key of a
# chunk on a page of its own: on SQLite a 1,000-row chunk then writes ~1,000 pages, not ~200.
RANDOM_KEYS = False
EVENT_TYPE_OF_N = ("CASE n % 4 WHEN 0 THEN 'email_sent' WHEN 1 THEN 'email_delivered' "
                   "WHEN 2 THEN 'email_opened' ELSE 'email_clicked' END")


def _concat(template: str) -> str:
    """Return a SQL text expression: the template with <n>, <u>, <m>, <ts> filled from n."""
    parts = {"n": "n", "u": "(n % 50000)", "m": "(n % 100)", "ts": "(1795167060 + n % 86400)"}
    pieces = re.split(r"<(\w+)>", template)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(parts[piece])
        elif piece:
            out.append("'" + piece.replace("'", "''") + "'")
    return " || ".join(out)


class Sql:
    """The two dialects' spellings of a numbers table and of a stored timestamp."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def series(self, body: str) -> str:
        """`body` reads rows n = $1 .. $2 - 1 from the relation `g`."""
        if self.sqlite:
            return ("WITH RECURSIVE g(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM g "
                    f"WHERE n + 1 < ?2) {body}")
        return body.replace(" FROM g", " FROM generate_series($1::bigint, $2::bigint - 1) "
                                       "AS g(n)")

    def ts(self, epoch_expr: str) -> str:
        """A timestamp column's value for seconds since the epoch, as the service writes it
        (SQLite: the text tortoise writes, in time order as text; PostgreSQL: timestamptz)."""
        if self.sqlite:
            return f"strftime('%Y-%m-%d %H:%M:%S', {epoch_expr}, 'unixepoch') || '+00:00'"
        return f"to_timestamp({epoch_expr})"

    def params(self, sql: str) -> str:
        return re.sub(r"\$(\d+)(::\w+)?", r"?\1", sql) if self.sqlite else sql

    def key(self, prefix: str) -> str:
        if RANDOM_KEYS:
            mixed = "((n * 2654435761) % 4294967296)"  # a bijection on 32 bits
            hex8 = (f"printf('%08x', {mixed})" if self.sqlite
                    else f"lpad(to_hex({mixed}), 8, '0')")
            return f"'{prefix}' || {hex8} || '-' || n"
        return f"'{prefix}' || " + (
            "printf('%010d', n)" if self.sqlite else "lpad(n::text, 10, '0')")

    def delivered(self) -> str:
        """Delivered events n in [$1, $2): t = $3 + n * $4 seconds."""
        t = "t"
        return self.series(
            f"INSERT INTO nudgespot_event ({EVENT_COLUMNS}) "
            f"SELECT {SOURCE_OF_N}, {self.key('ev-')}, {EVENT_TYPE_OF_N}, {t}, "
            f"'delivered', 1, {t}, NULL, {t}, {t}, {t} "
            f"FROM (SELECT n, {self.ts('$3::float8 + n * $4::float8')} AS t FROM g) AS s"
        )

    def backlog(self) -> str:
        """Pending (not due: retrying, or released until later) and dead events n in [$1, $2),
        received over the last hour ($3 = now); the first $4 are dead."""
        received = self.ts(f"$3::float8 - 3600 + n * {3600 / (PENDING_ROWS + DEAD_ROWS)}")
        updated = self.ts(f"$3::float8 - 3000 + n * {3000 / (PENDING_ROWS + DEAD_ROWS)}")
        due = self.ts("$3::float8 + 86400 + n")
        return self.series(
            f"INSERT INTO nudgespot_event ({EVENT_COLUMNS}) "
            f"SELECT {SOURCE_OF_N}, {self.key('backlog-')}, {EVENT_TYPE_OF_N}, {received}, "
            "CASE WHEN n < $4::bigint THEN 'dead' ELSE 'pending' END, "
            "CASE WHEN n < $4::bigint THEN 12 ELSE n % 4 END, "
            f"{due}, CASE WHEN n < $4::bigint THEN 'Segment answered 400: bad request (' || n "
            "|| ')' WHEN n % 4 > 0 THEN 'Segment answered 503: unavailable' ELSE NULL END, "
            f"{received}, {updated}, NULL FROM g"
        )

    @staticmethod
    def bodies() -> str:
        """The bodies of the events that have none yet (n: the event's id)."""
        return (
            "INSERT INTO nudgespot_event_body (id, fields_json, payload) "
            f"SELECT n, {_concat(FIELDS)}, {_concat(PAYLOAD)} FROM (SELECT id AS n FROM "
            "nudgespot_event WHERE id > (SELECT COALESCE(MAX(id), 0) "
            "FROM nudgespot_event_body)) AS s"
        )

    def rejects(self) -> str:
        """Rejects n in [$1, $2) received at $3 + n * $4."""
        return self.series(
            "INSERT INTO nudgespot_rejected (source, body_index, payload, reason, received_at) "
            f"SELECT {SOURCE_OF_N}, n % 10, '{{\"id\":\"bad-' || n || '\"}}', "
            f"'missing field: event', {self.ts('$3::float8 + n * $4::float8')} FROM g"
        )

    def minutes(self, table: str, column: str) -> str:
        """Two days of per-minute figures (the status chart's), both sources, to minute $3."""
        return self.series(
            f"INSERT INTO {table} (source, minute, {column}) "
            f"SELECT {SOURCE_OF_N}, {self.ts('$3::float8 - (n / 2) * 60')}, 100 + n % 50 "
            "FROM g"
        )


# The counters as AdminQueries.recount() leaves them, when it cannot finish in its budget: its
# own first two statements, and the last error found through the backlog index (only pending
# and dead rows keep a last_error: a delivery clears it).
RESET_COUNTERS = ("UPDATE nudgespot_source_counter SET delivered = 0, rejected = 0, "
                  "last_delivery_at = NULL, last_error = NULL, last_error_at = NULL")
LAST_ERROR_FROM_BACKLOG = (
    "INSERT INTO nudgespot_source_counter (source, duplicates, last_error, last_error_at) "
    "SELECT source, 0, last_error, updated_at FROM (SELECT source, last_error, updated_at, "
    "ROW_NUMBER() OVER (PARTITION BY source ORDER BY updated_at DESC, id DESC) AS rn "
    "FROM nudgespot_event WHERE status IN ('pending', 'dead') AND last_error IS NOT NULL) AS x "
    "WHERE rn = 1 ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error, "
    "last_error_at = excluded.last_error_at"
)


# --- one database of the figures ------------------------------------------------------------


class ScaleDatabase:
    """A database of its own (a file, or a PostgreSQL database), its config and its rows."""

    def __init__(self, bench: Any, name: str, retention_days: int,
                 logging: str = "{level: WARNING}") -> None:
        self.bench = bench
        self.sql = Sql(bench.db)
        self.delivered = 0  # delivered events stored so far
        self.backlog = 0
        self.fill_s = 0.0
        if bench.db == "sqlite":
            self.path = bench.workdir / f"scale-{name}.sqlite3"
            self.url = f"sqlite://{self.path}{bench.url_suffix}"
        else:
            self.pg_name = f"nudgespot_bench_{name}_{uuid.uuid4().hex[:8]}"
            self.dsn = POSTGRES_ADMIN_URL.rpartition("/")[0] + f"/{self.pg_name}"
            self.url = self.dsn + "?maxsize=20"
        self.port = free_port()
        self.config = bench.workdir / f"scale-{name}.yaml"
        publisher = f", {bench.publisher}" if bench.publisher else ""
        self.config.write_text(f"""
server: {{host: 127.0.0.1, port: {self.port}}}
database: {{url: "{self.url}"}}
segment: {{endpoint: "http://127.0.0.1:{bench.segment_port}", timeout_s: 15}}
publisher: {{interval_s: 1.0{publisher}}}
retention: {{delivered_days: {retention_days}}}
logging: {logging}
sources:
  - {{name: {SOURCES[0]}, token: {TOKEN}, write_key: {WRITE_KEY}}}
  - {{name: {SOURCES[1]}, token: {SECOND_TOKEN}, write_key: {WRITE_KEY}-2}}
""")

    @property
    def sqlite(self) -> bool:
        return self.sql.sqlite

    def create(self) -> None:
        if not self.sqlite:
            asyncio.run(_pg_exec(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{self.pg_name}"'))
        subprocess.run([*SERVE, "migrate", "--config", str(self.config)], cwd=ROOT, check=True,
                       capture_output=True)

    def drop(self) -> None:
        if self.sqlite:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        else:
            asyncio.run(_pg_exec(POSTGRES_ADMIN_URL,
                                 f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))

    # --- filling --------------------------------------------------------------------------

    def run_sql(self, statements: Sequence[tuple[str, Sequence[Any]]],
                progress: Callable[[int], None] | None = None) -> None:
        """Run statements, each its own transaction, without waiting for the disk (the fill
        only: the service later opens the database with its own settings)."""
        if self.sqlite:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("PRAGMA cache_size=-524288")  # 512 MB
                for i, (sql, params) in enumerate(statements):
                    conn.execute("BEGIN")
                    conn.execute(self.sql.params(sql), list(params))
                    conn.execute("COMMIT")
                    if progress:
                        progress(i)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            with open(self.path, "rb+") as handle:  # on disk before anything is measured
                os.fsync(handle.fileno())
        else:
            asyncio.run(self._pg_run(statements, progress))

    async def _pg_run(self, statements: Sequence[tuple[str, Sequence[Any]]],
                      progress: Callable[[int], None] | None) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute("SET synchronous_commit = off")
            for i, (sql, params) in enumerate(statements):
                await conn.execute(sql, *params)
                if progress:
                    progress(i)
            # Autovacuum is how production keeps statistics and the visibility map current
            # (it may be off on a test server): do its work now, not during the measurement.
            await conn.execute("VACUUM (ANALYZE)")
            await conn.execute("CHECKPOINT")  # the fill's dirty pages on disk
        finally:
            await conn.close()

    def fill(self, total: int, *, first_at: float, step_s: float, backlog: bool = False,
             extras: bool = False, label: str = "") -> None:
        """Add delivered events up to `total` stored events, the n-th delivered at first_at +
        n * step_s (so a later, larger fill continues the same history)."""
        now = time.time()
        statements: list[tuple[str, Sequence[Any]]] = []
        if backlog and not self.backlog:
            self.backlog = PENDING_ROWS + DEAD_ROWS
            statements.append((self.sql.backlog(), [0, self.backlog, now, DEAD_ROWS]))
            statements.append((self.sql.bodies(), []))
        if extras:
            statements.append((self.sql.rejects(), [0, REJECT_ROWS, now - 86400,
                                                    86400 / REJECT_ROWS]))
            for table, column in ((DELIVERIES, "delivered"), (BACKLOG_SAMPLES, "pending")):
                statements.append((self.sql.minutes(table, column),
                                   [0, 2 * 2880, now // 60 * 60]))
        start, stop = self.delivered, total - self.backlog
        extra = len(statements)
        for low in range(start, stop, FILL_CHUNK):
            statements.append((self.sql.delivered(),
                               [low, min(stop, low + FILL_CHUNK), first_at, step_s]))
            statements.append((self.sql.bodies(), []))
        started = time.perf_counter()
        db = self.bench.db
        chunks = len(statements)

        def progress(i: int) -> None:
            if i >= extra and (i + 1 == chunks or (i + 1 - extra) % 16 == 0):
                # two statements a chunk: its events, then their bodies
                done = min(stop, start + (i + 1 - extra) // 2 * FILL_CHUNK)
                rate = (done - start) / max(1e-9, time.perf_counter() - started)
                print(f"[{db}] {label} filling: {done:,} of {stop:,} delivered events "
                      f"({rate:,.0f}/s)", file=sys.stderr, flush=True)

        self.run_sql(statements, progress)
        self.fill_s = time.perf_counter() - started
        self.delivered = stop

    # --- counters -------------------------------------------------------------------------

    def recount(self, label: str) -> dict[str, Any]:
        """Run AdminQueries.recount() (through models.Store, in a process of its own) for at
        most RECOUNT_BUDGET_S; if it does not finish, rebuild the same counters with
        equivalent set-based statements so that the figures still match the rows."""
        rows = self.delivered + self.backlog
        gave_up_at = _recount_gave_up.get(self.bench.db)
        result: dict[str, Any] = {"rows": rows, "budget_s": RECOUNT_BUDGET_S}
        if gave_up_at is not None and rows >= gave_up_at:
            result["recount_s"] = None
            result["skipped"] = f"did not finish in {RECOUNT_BUDGET_S:g} s at {gave_up_at:,}"
        else:
            print(f"[{self.bench.db}] {label} AdminQueries.recount() on {rows:,} events…",
                  file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                subprocess.run([PYTHON, "-m", "bench.scale", "recount", "--url", self.url],
                               cwd=ROOT, check=True, capture_output=True,
                               timeout=RECOUNT_BUDGET_S)
                result["recount_s"] = time.perf_counter() - started
                return result
            except subprocess.TimeoutExpired:
                result["recount_s"] = None
                _recount_gave_up[self.bench.db] = rows
                if not self.sqlite:  # the server goes on with a query its client left
                    asyncio.run(_pg_exec(POSTGRES_ADMIN_URL, (
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{self.pg_name}' AND pid <> pg_backend_pid()")))
                print(f"[{self.bench.db}] {label} AdminQueries.recount() did not finish in "
                      f"{RECOUNT_BUDGET_S:g} s: equivalent statements instead",
                      file=sys.stderr, flush=True)
        started = time.perf_counter()
        asyncio.run(_equivalent_recount(self.url))
        result["equivalent_s"] = time.perf_counter() - started
        return result


_recount_gave_up: dict[str, int] = {}  # per database kind: the size recount() gave up at


async def _equivalent_recount(url: str) -> None:
    from models import Store
    from models.admin import RECOUNT

    async with Store(url) as store, store.db.transaction() as tx:
        tx.execute(RESET_COUNTERS)
        tx.execute(RECOUNT[0])  # delivered, last_delivery_at
        tx.execute(RECOUNT[1])  # rejected
        tx.execute(LAST_ERROR_FROM_BACKLOG)


# --- f. status at scale ---------------------------------------------------------------------


def status_at_scale(bench: Any) -> None:
    sizes = [bench.scale(n) for n in STATUS_SIZES]
    db = ScaleDatabase(bench, "f", retention_days=RETENTION_DAYS)
    result: dict[str, Any] = {"sizes": sizes}
    try:
        db.create()
        print(f"[{bench.db}] f empty database…", file=sys.stderr, flush=True)
        result["empty"] = measure_status(db, expect=False)
        first_at, step_s = time.time() - HISTORY_S - 3600, HISTORY_S / sizes[-1]
        for size in sizes:
            db.fill(size, first_at=first_at, step_s=step_s, backlog=True,
                    extras=size == sizes[0], label=f"f {size:,}")
            counters = db.recount(f"f {size:,}")
            print(f"[{bench.db}] f {size:,} events: measuring…", file=sys.stderr, flush=True)
            figures = measure_status(db, expect=True)
            figures.update(fill_s=db.fill_s, **counters)
            result[str(size)] = figures
            small, big = result[str(sizes[0])], figures
            if size != sizes[0]:
                for key in ("status_json", "status_html", "metrics", "cli"):
                    print(f"[{bench.db}] f {key}: {small[key]['median_ms']:.1f} ms at "
                          f"{sizes[0]:,} → {big[key]['median_ms']:.1f} ms at {size:,} "
                          f"(×{big[key]['median_ms'] / small[key]['median_ms']:.2f})",
                          file=sys.stderr, flush=True)
    finally:
        db.drop()
    bench.results["f"] = result


def measure_status(db: ScaleDatabase, *, expect: bool) -> dict[str, Any]:
    """Time the status answers of the service on this database, and the status command."""
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    with process([*SERVE, "serve", "--config", str(db.config)],
                 log=db.bench.workdir / "scale-serve.log"):
        base = f"http://127.0.0.1:{db.port}"
        wait_http(f"{base}/readyz", timeout_s=120)
        figures["ready_s"] = time.perf_counter() - started
        figures.update(timed_gets({
            "status_json": (f"{base}/status", {}),
            "status_html": (f"{base}/status", {"Accept": "text/html"}),
            "metrics": (f"{base}/metrics", {}),
        }))
        document = http_get(f"{base}/status")[1]
    figures["cli"] = timed_cli(db)
    figures["figures_match"] = figures_match(json.loads(document), db) if expect else None
    if figures["figures_match"] is False:
        print(f"[{db.bench.db}] f: /status figures do not match the rows filled",
              file=sys.stderr, flush=True)
    return figures


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[float, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - started, body


def timed_gets(targets: dict[str, tuple[str, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Time each target TIMED_REQUESTS times, in rounds (one request to each target per
    round, so that what else the machine does weighs on all alike), after one untimed round."""
    first = {key: http_get(url, headers) for key, (url, headers) in targets.items()}
    times: dict[str, list[float]] = {key: [] for key in targets}
    for _ in range(TIMED_REQUESTS):
        for key, (url, headers) in targets.items():
            times[key].append(http_get(url, headers)[0] * 1000)
    return {key: {"median_ms": statistics.median(t), "max_ms": max(t),
                  "first_ms": first[key][0] * 1000, "bytes": len(first[key][1])}
            for key, t in times.items()}


def status_command() -> list[str]:
    script = Path(PYTHON).with_name("nudgespot-segment")
    return [str(script)] if script.exists() else [*SERVE]


def timed_cli(db: ScaleDatabase) -> dict[str, Any]:
    args = [*status_command(), "status", "--json", "--config", str(db.config)]
    times = []
    for i in range(CLI_RUNS + 1):
        started = time.perf_counter()
        subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
        if i:  # the first run warms the file cache
            times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "max_ms": max(times)}


def figures_match(document: dict[str, Any], db: ScaleDatabase) -> bool:
    sources = document["sources"]
    delivered = sum(s["delivered"] for s in sources.values())
    pending = sum(s["pending"] for s in sources.values())
    dead = sum(s["dead"] for s in sources.values())
    rejected = sum(s["rejected"] for s in sources.values())
    return (delivered, pending, dead, rejected) == (
        db.delivered, PENDING_ROWS, DEAD_ROWS, REJECT_ROWS)


# --- g. retention under load ----------------------------------------------------------------


def retention_under_load(bench: Any) -> None:
    """g as the service does it: its own retention job (in-process, on its own connection,
    first run RETENTION_FIRST_RUN_S after start) purges the old events while webhooks come in.
    With SEPARATE_PROCESS, also the worst case the figure measured first: the same purge run
    from a separate process (on SQLite it takes turns at the file lock with the service)."""
    size = bench.scale(RETENTION_SIZE)
    bench.results["g"] = _retention_in_service(bench, size)
    if SEPARATE_PROCESS:
        bench.results["g_separate"] = _retention_separate_process(bench, size)


def _retention_in_service(bench: Any, size: int) -> dict[str, Any]:
    # INFO, as JSON: the service's "retention deleted N delivered event(s)" line, time-stamped.
    db = ScaleDatabase(bench, "g", retention_days=RETENTION_DAYS,
                       logging="{level: INFO, format: json}")
    stop_file = bench.workdir / "scale-g.stop"
    stop_file.unlink(missing_ok=True)
    log = bench.workdir / "scale-g-serve.log"
    try:
        db.create()
        db.fill(size, first_at=time.time() - OLD_FROM_S, step_s=OLD_SPAN_S / size, label="g")
        counters = db.recount("g")
        first_id, last_id = asyncio.run(_id_range(db))
        print(f"[{bench.db}] g {size:,} old delivered events (ids {first_id:,}..{last_id:,}): "
              f"service started, load at {RATE}/s, waiting for its retention run "
              f"(~{RETENTION_FIRST_RUN_S} s after start)…", file=sys.stderr, flush=True)
        started = time.time()
        with process([*SERVE, "serve", "--config", str(db.config)], log=log):
            wait_http(f"http://127.0.0.1:{db.port}/readyz", timeout_s=120)
            ready = time.time()
            if ready - started > RETENTION_FIRST_RUN_S - 10:
                raise RuntimeError(f"g: the service took {ready - started:.0f} s to be ready: "
                                   "its retention run may start before the load")
            url = f"http://127.0.0.1:{db.port}/webhooks/nudgespot/{TOKEN}"
            loader = subprocess.Popen(
                [PYTHON, "-m", "bench.scale", "paced", "--url", url, "--rate", str(RATE),
                 "--stop-file", str(stop_file)],
                cwd=ROOT, stdout=subprocess.PIPE)
            try:
                watch = asyncio.run(_watch_retention(db, first_id, last_id, log,
                                                     deadline=started + RETENTION_WATCH_S))
                time.sleep(2)
            finally:
                stop_file.touch()
                out, _ = loader.communicate(timeout=600)
        logged = _retention_logged(log)
        if logged is None:
            raise RuntimeError(f"g: no 'retention deleted' line in {log}")
        left_over = asyncio.run(_query(
            db, f"SELECT count(*) FROM nudgespot_event WHERE id <= {last_id}"))[0]
    finally:
        db.drop()
    load = json.loads(out)
    # The run: from the last poll that saw no row gone to the service's own log line (its end;
    # the polls only bound it within POLL_S, the line is written once the purge returns).
    purge = {"events": logged["events"], "rejects": logged["rejects"],
             "started": watch["started"], "ended": logged["at"],
             "first_seen": watch["first_seen"], "old_gone_seen": watch["old_gone_seen"],
             "after_start_s": watch["started"] - started, "ready_s": ready - started,
             "left_over_old_rows": left_over,
             "polls": watch["polls"]}
    result = _latency_figures(load, purge, size, db, counters)
    g = result
    print(f"[{bench.db}] g the service's own retention run, {purge['after_start_s']:.0f} s "
          f"after start, deleted {purge['events']:,} in {g['purge_s']:.1f} s; webhook p50/p99 "
          f"{g['during']['p50_ms']:.0f}/{g['during']['p99_ms']:.0f} ms during, p99 "
          f"{g['before']['p99_ms']:.0f} ms before", file=sys.stderr, flush=True)
    return result


async def _connect(db: ScaleDatabase) -> Any:
    """A read-only connection of the bench's own (the service keeps its own)."""
    if db.sqlite:
        return sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, isolation_level=None)
    import asyncpg

    conn = await asyncpg.connect(db.dsn, timeout=10)
    await conn.execute("SET default_transaction_read_only = on")
    return conn


async def _fetch_row(db: ScaleDatabase, conn: Any, sql: str) -> tuple[Any, ...]:
    if db.sqlite:
        return tuple(conn.execute(sql).fetchone())
    return tuple(await conn.fetchrow(sql))


async def _close(db: ScaleDatabase, conn: Any) -> None:
    if db.sqlite:
        conn.close()
    else:
        await conn.close()


async def _query(db: ScaleDatabase, sql: str) -> tuple[Any, ...]:
    conn = await _connect(db)
    try:
        return await _fetch_row(db, conn, sql)
    finally:
        await _close(db, conn)


async def _id_range(db: ScaleDatabase) -> tuple[int, int]:
    """The lowest and highest event id (the filled rows': the service has not started)."""
    low, high = await _query(db, "SELECT min(id), max(id) FROM nudgespot_event")
    return int(low), int(high)


async def _watch_retention(db: ScaleDatabase, first_id: int, last_id: int, log: Path, *,
                           deadline: float) -> dict[str, Any]:
    """Poll the lowest event id (the primary key's first entry: one cheap read-only query,
    every POLL_S) until the service's retention run has begun (the first old row is gone:
    its chunks delete in id order here, the ids following delivered_at) and then until it
    is over (every old row gone and its log line written)."""
    conn = await _connect(db)
    polls = 0
    try:
        last_unchanged = time.time()
        first_seen: float | None = None
        gone_seen: float | None = None
        while time.time() < deadline:
            at = time.time()
            (low,) = await _fetch_row(db, conn, "SELECT min(id) FROM nudgespot_event")
            polls += 1
            low = int(low) if low is not None else last_id + 1
            if first_seen is None:
                if low == first_id:
                    last_unchanged = at
                else:
                    first_seen = at
                    print(f"[{db.bench.db}] g retention run started", file=sys.stderr,
                          flush=True)
            if first_seen is not None and gone_seen is None and low > last_id:
                gone_seen = at
            if gone_seen is not None and _retention_logged(log) is not None:
                return {"started": last_unchanged, "first_seen": first_seen,
                        "old_gone_seen": gone_seen, "polls": polls}
            await asyncio.sleep(max(0.0, at + POLL_S - time.time()))
    finally:
        await _close(db, conn)
    raise RuntimeError(f"g: the service's retention run was not over in time (polls: {polls}, "
                       f"started: {first_seen is not None}, "
                       f"old rows gone: {gone_seen is not None})")


RETENTION_LINE = re.compile(r"retention deleted (\d+) delivered event\(s\), (\d+) reject\(s\)")


def _retention_logged(log: Path) -> dict[str, Any] | None:
    """The service's "retention deleted …" line (JSON logging): its counts and time."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = RETENTION_LINE.search(line)
        if match:
            try:
                at = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
            except (ValueError, KeyError):
                continue
            return {"events": int(match[1]), "rejects": int(match[2]), "at": at}
    return None


def _latency_figures(load: dict[str, Any], purge: dict[str, Any], size: int,
                     db: ScaleDatabase, counters: dict[str, Any]) -> dict[str, Any]:
    records = load["records"]
    before = [r for r in records if load["started"] + 1 <= r[0] < purge["started"]]
    during = [r for r in records if purge["started"] <= r[0] <= purge["ended"]]
    after = [r for r in records if purge["ended"] < r[0] <= purge["ended"] + 2]
    return {
        "events": size, "fill_s": db.fill_s, **{f"counters_{k}": v for k, v in counters.items()},
        "purge": purge, "purge_s": purge["ended"] - purge["started"],
        "before": latency_summary(before), "during": latency_summary(during),
        "after_2s": latency_summary(after),
        "per_second_during": per_second(during, purge["started"]),
    }


def _retention_separate_process(bench: Any, size: int) -> dict[str, Any]:
    """The worst case, not what the service does: AdminQueries.purge from another process."""
    base_s = 5 if bench.quick else 10
    # The service's own retention (first run a minute after start) finds nothing this old:
    # only the separate process deletes.
    db = ScaleDatabase(bench, "g2", retention_days=3650)
    stop_file = bench.workdir / "scale-g2.stop"
    stop_file.unlink(missing_ok=True)
    try:
        db.create()
        db.fill(size, first_at=time.time() - OLD_FROM_S, step_s=OLD_SPAN_S / size,
                label="g separate process")
        counters = db.recount("g separate process")
        print(f"[{bench.db}] g separate process (worst case): load, then purge…",
              file=sys.stderr, flush=True)
        with process([*SERVE, "serve", "--config", str(db.config)],
                     log=bench.workdir / "scale-serve.log"):
            wait_http(f"http://127.0.0.1:{db.port}/readyz", timeout_s=120)
            url = f"http://127.0.0.1:{db.port}/webhooks/nudgespot/{TOKEN}"
            loader = subprocess.Popen(
                [PYTHON, "-m", "bench.scale", "paced", "--url", url, "--rate", str(RATE),
                 "--stop-file", str(stop_file)],
                cwd=ROOT, stdout=subprocess.PIPE)
            try:
                time.sleep(1 + base_s)
                purge = json.loads(subprocess.run(
                    [PYTHON, "-m", "bench.scale", "purge", "--config", str(db.config),
                     "--days", str(RETENTION_DAYS)],
                    cwd=ROOT, check=True, capture_output=True).stdout)
                time.sleep(2)
            finally:
                stop_file.touch()
                out, _ = loader.communicate(timeout=600)
        load = json.loads(out)
    finally:
        db.drop()
    g = _latency_figures(load, purge, size, db, counters)
    print(f"[{bench.db}] g separate process (worst case, not what the service does): purge of "
          f"{purge['events']:,}: {g['purge_s']:.1f} s; webhook p50/p99 "
          f"{g['during']['p50_ms']:.0f}/{g['during']['p99_ms']:.0f} ms during, p99 "
          f"{g['before']['p99_ms']:.0f} ms before", file=sys.stderr, flush=True)
    return g


def latency_summary(records: list[list[float]]) -> dict[str, Any]:
    latencies = sorted(r[1] for r in records)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(int(r[2]))] = statuses.get(str(int(r[2])), 0) + 1
    return {"requests": len(records), "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
            "statuses": statuses}


def per_second(records: list[list[float]], start: float) -> list[float]:
    """The slowest answer (ms) to webhooks sent in each second of the window."""
    slowest: dict[int, float] = {}
    for sent, latency, _ in records:
        second = int(sent - start)
        slowest[second] = max(slowest.get(second, 0.0), 1000 * latency)
    return [round(slowest.get(s, 0.0)) for s in range(max(slowest, default=-1) + 1)]


# --- the table's rows -----------------------------------------------------------------------


def _growth(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(r: dict[str, Any]) -> str:
        small, big = (r["f"][str(n)][key]["median_ms"] for n in r["f"]["sizes"])
        return f"{small:.1f} → {big:.1f} ms (×{big / small:.2f})"

    return cell


def _cli(r: dict[str, Any]) -> str:
    small, big = (r["f"][str(n)]["cli"]["median_ms"] for n in r["f"]["sizes"])
    return f"{small:.0f} → {big:.0f} ms (empty: {r['f']['empty']['cli']['median_ms']:.0f} ms)"


def _fill(r: dict[str, Any]) -> str:
    sizes = r["f"]["sizes"]
    fill = sum(r["f"][str(n)]["fill_s"] for n in sizes)
    for n in sizes:
        if r["f"][str(n)].get("recount_s") is not None:
            recount = f"{r['f'][str(n)]['recount_s']:.1f} s at {n:,}"
        else:
            budget = r["f"][str(n)]["budget_s"]
            recount = f"did not finish in {budget:g} s at {n:,}"
            break
    return f"fill {fill:.0f} s; recount() {recount}"


def _during(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(r: dict[str, Any]) -> str:
        g = r[key]
        failed = sum(n for status, n in g["during"]["statuses"].items() if status != "200")
        return (f"{g['during']['p50_ms']:.0f} ms / {g['during']['p99_ms']:,.0f} ms "
                f"({g['before']['p99_ms']:.0f} ms)" + (f"; {failed} not 200" if failed else ""))

    return cell


def _purge(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(r: dict[str, Any]) -> str:
        g = r[key]
        return f"{g['purge_s']:.1f} s ({g['purge']['events'] / g['purge_s']:,.0f} rows/s)"

    return cell


ROWS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("f. GET /status (JSON), median, 1M → 10M stored events", "< 100 ms at 10M",
     _growth("status_json")),
    ("f. GET /status (HTML), median, 1M → 10M", "< 100 ms at 10M", _growth("status_html")),
    ("f. GET /metrics, median, 1M → 10M", "< 100 ms at 10M", _growth("metrics")),
    ("f. `nudgespot-segment status --json` wall time, 1M → 10M", "start-up bound", _cli),
    ("f. set-based fill of 10M / AdminQueries.recount()", "–", _fill),
    ("g. webhook latency at 500/s while the service's own retention job purges 1,000,000 "
     "old delivered events, p50 / p99 (p99 before)", "p99 < 1 s", _during("g")),
    ("g. the service's own retention run (in-process, ~60 s after start): 1,000,000 old "
     "delivered events deleted under that load", "–", _purge("g")),
]
if SEPARATE_PROCESS:
    ROWS += [
        ("g. separate process (worst case, not what the service does): webhook latency at "
         "500/s during its purge, p50 / p99 (p99 before)", "–", _during("g_separate")),
        ("g. separate process (worst case, not what the service does): purge of 1,000,000",
         "–", _purge("g_separate")),
    ]


# --- the helper processes -------------------------------------------------------------------


async def paced(url: str, rate: float, stop_file: Path, max_s: float) -> dict[str, Any]:
    """Single-event webhooks at `rate`/s until the stop file appears; per request: when it
    was due (wall clock), its latency from then (so a stall counts in full), its status."""
    import aiohttp

    from bench.loadgen import event

    records: list[tuple[float, float, int]] = []
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512),
                                     timeout=timeout) as session:
        wall0, perf0 = time.time(), time.perf_counter()

        async def one(n: int, due: float) -> None:
            status = -1
            try:
                async with session.post(url, data=json.dumps(event("g", n)).encode(),
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                pass
            records.append((wall0 + due - perf0, time.perf_counter() - due, status))

        n = 0
        while n < rate * max_s and not (n % int(rate) == 0 and stop_file.exists()):
            due = perf0 + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(n, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
    return {"started": wall0, "records": records}


async def purge(config: str, days: int) -> dict[str, Any]:
    """What the service's hourly retention job does (AdminQueries.purge), from here."""
    from models import Store
    from models.time import utcnow
    from service.config import load_settings

    settings = load_settings(config)
    async with Store(settings.database.url) as store:
        await store.ping()  # connected before the clock starts
        started = time.time()
        events, rejects = await store.admin.purge(older_than=utcnow() - timedelta(days=days))
        ended = time.time()
    return {"events": events, "rejects": rejects, "started": started, "ended": ended}


async def recount(url: str) -> None:
    from models import Store

    async with Store(url) as store:
        await store.admin.recount()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("paced")
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=RATE)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--max-s", type=float, default=1800)
    p = sub.add_parser("purge")
    p.add_argument("--config", required=True)
    p.add_argument("--days", type=int, default=RETENTION_DAYS)
    p = sub.add_parser("recount")
    p.add_argument("--url", required=True)
    args = parser.parse_args()
    if args.mode == "paced":
        result: Any = asyncio.run(paced(args.url, args.rate, args.stop_file, args.max_s))
    elif args.mode == "purge":
        result = asyncio.run(purge(args.config, args.days))
    else:
        asyncio.run(recount(args.url))
        result = {"ok": True}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
