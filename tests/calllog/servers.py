"""Private Postgres and Redis servers for outage tests: real servers the test may stop and start
without disturbing the shared ones on 5432 and 6379."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from app.api.admission import Admission
from app.calllog.writer import CallLogWriter
from app.resources import resources_of
from tests.servers import free_port

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    """Postgres refuses to run as root: run it as the 'postgres' user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A throwaway Postgres cluster on a free loopback port (trust auth, user postgres)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sb-pg-"))
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                                     "-A", "trust", "--no-sync"]),
                       check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options,
                                     "-l", str(self.dir / "log"), "-w", "start"]),
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast",
                                     "-w", "stop"]), check=False, capture_output=True)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks pin it to a core)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                             capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_process(env: dict[str, str], port: int, *, log: Path,
                  wrapper: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``switchboard serve`` on ``port``, once it answers /readyz (output to ``log``);
    ``wrapper``: a command that runs it (its arguments follow), e.g. one that sets limits
    and execs it, keeping its pid. Ready means this process says it listens on ``port`` (in
    what it wrote to ``log``) and the port answers /readyz: a server another test started on
    the port must not pass for it."""
    start = log.stat().st_size if log.exists() else 0
    listening = f"Uvicorn running on http://127.0.0.1:{port} ".encode()
    if env.get("SWITCHBOARD_LOG_LEVEL", "info") not in ("debug", "info"):  # uvicorn's line is info
        env = {**env, "SWITCHBOARD_LOG_LEVEL": "info"}
    with log.open("ab") as out:
        proc = subprocess.Popen([*wrapper, SWITCHBOARD, "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if listening in log.read_bytes()[start:] \
                    and httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"gateway exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"gateway did not start: {log.read_text()}"
        time.sleep(0.1)


def writer_of(lane: Admission) -> CallLogWriter:
    """The call-log writer of a gateway app built by ``create_app`` (its lifespan running)."""
    calllog = resources_of(lane.app).calllog
    assert calllog is not None, "the call log is off on this gateway"
    return calllog.writer
