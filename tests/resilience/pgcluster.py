"""A private, throw-away PostgreSQL cluster that a test may stop and start at will.

The shared server on 5432 is used by other test runs and must never be restarted; this one
lives in its own directory (owned by the `postgres` OS user when we are root, since initdb and
postgres refuse to run as root), listens on a free loopback port and its own socket directory.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.resilience.harness import free_port

BIN_ENV = "NUDGESPOT_PG_BIN"


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: $NUDGESPOT_PG_BIN, Debian's layout, or the PATH."""
    candidates = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    if find_bin_dir() is None:
        return f"initdb/pg_ctl not found (set {BIN_ENV} to PostgreSQL's bin directory)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no `postgres` OS user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root, but `runuser` is missing (needed to run initdb as postgres)"
    return None


class PrivateCluster:
    """initdb + pg_ctl start/stop on a free port; `destroy()` stops it and removes the files."""

    def __init__(self) -> None:
        bin_dir = find_bin_dir()
        assert bin_dir is not None
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="nudgespot-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:  # the postgres user must own the directory (and reach the socket)
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            os.chmod(self.dir, 0o755)
        self.superuser = "root" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self.as_root else command

    async def _run(self, tool: str, *args: str, timeout_s: float = 120.0) -> str:
        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(self._command(tool, *args), capture_output=True, text=True,
                                  timeout=timeout_s, cwd=str(self.dir),
                                  stdin=subprocess.DEVNULL)

        result = await asyncio.to_thread(run)  # never block the loop the fake Segment runs in
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout}\n{result.stderr}\n{self.log_tail()}")
        return result.stdout

    async def init(self) -> None:
        await self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser,
                        "-E", "UTF8", "--no-sync")

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                        "-w", "-t", "60", "start")

    async def stop(self) -> None:
        await self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str) -> str:
        return f"postgres://{self.superuser}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(
            f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres", timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server (immediate mode if need be) and delete its directory."""
        if self.running():
            for mode in ("fast", "immediate"):
                result = subprocess.run(
                    self._command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                                  "stop"),
                    capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
                if result.returncode == 0:
                    break
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no postgres log)"
