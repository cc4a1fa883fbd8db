"""The native load generator: wrk (Debian's package `wrk`), driven by bench/webhook.lua.

A Python load generator competes with the server for the machine's cores (two, here), which
makes every server look closer to the others than it is; wrk's event loop in C costs a small
fraction of a core. When wrk is missing, `ensure_wrk` installs it where it can (root with
apt-get) and otherwise says how; the bench then falls back to bench/loadgen.py and labels
its figures as such.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("webhook.lua")
INSTALL_HINT = "install it with `sudo apt-get install wrk` (Debian, Ubuntu) or `brew install wrk`"


def ensure_wrk() -> str | None:
    """Return the path of wrk, installing Debian's package when we are root; None if absent."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing Debian's package (apt-get install wrk)…",
              file=sys.stderr, flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, **quiet).returncode:
            subprocess.run(["apt-get", "update"], env=env, **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, **quiet)
        found = shutil.which("wrk")
    if not found:
        print(f"wrk is not installed: {INSTALL_HINT}. Falling back to the Python load "
              "generator (bench/loadgen.py), whose figures are labelled as such.",
              file=sys.stderr, flush=True)
    return found


def run(
    wrk: str, url: str, *, run_id: str, per_body: int = 1, connections: int = 32,
    seconds: float = 10, threads: int = 1,
) -> dict[str, Any]:
    """Post unique bodies to `url` for `seconds`; return requests, events and seconds."""
    env = {**os.environ, "BENCH_RUN": run_id, "BENCH_PER_BODY": str(per_body)}
    completed = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "30s", "-s", str(SCRIPT), url],
        env=env, check=True, capture_output=True, text=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["events"] = result["requests"] * per_body
    result["generator"] = "wrk"
    return result
