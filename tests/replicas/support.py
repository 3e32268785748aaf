"""Helpers for the replica tests: ``switchboard serve`` processes of THIS source tree, an nginx
in front of them, and counting call rows in Postgres.

Gateways run as ``python -c "from app.cli import main; main()" serve`` with the repository root
as working directory and ``PYTHONPATH``, so they run the code under test (the ``switchboard``
console script of a shared virtual environment may import another checkout).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-replicas-master-Vb7q2Lx9"
METRICS_KEY = "replicas-metrics-key-4Hn8Tz1c"


def tree_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a gateway of this tree: no inherited SWITCHBOARD_ setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@dataclass
class Replica:
    """One ``switchboard serve`` process."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import main; main()", "serve",
                 "--port", str(self.port)],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, f"{self.name} exited: {self.output()}"
            assert time.monotonic() < deadline, f"{self.name} not ready: {self.output()}"
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL
        self.proc = None

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def tool(name: str, package: str) -> str:
    """The path of a binary; fails (never skips) when it is not installed."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.fail(f"`{name}` is not installed: run `make test-tools` (Debian's {package})")
    return path


@contextmanager
def run_nginx(directory: Path, upstreams: Iterable[str]) -> Iterator[str]:
    """nginx on a free loopback port balancing round-robin over ``upstreams`` (``host:port``),
    run in the foreground as a child with every path inside ``directory``; its base URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
    (directory / "nginx.conf").write_text(f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log {directory}/access.log;
  client_body_temp_path {directory}/client_body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  upstream gateways {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 120s;
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
""")
    log = (directory / "nginx.out").open("wb")
    proc = subprocess.Popen([tool("nginx", "nginx"), "-p", str(directory), "-c",
                             str(directory / "nginx.conf"), "-g", "daemon off;"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (directory / "nginx.out").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def rows_by_request_id(database_url: str, request_ids: Iterable[str]) -> dict[str, int]:
    """How many ``calls`` rows each request id has (0 for none)."""
    ids = list(request_ids)

    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            found = await conn.fetch(
                "SELECT request_id, count(*) AS n FROM calls WHERE request_id = ANY($1) "
                "GROUP BY request_id", ids)
        finally:
            await conn.close()
        counts = dict.fromkeys(ids, 0)
        counts.update({r["request_id"]: r["n"] for r in found})
        return counts

    return asyncio.run(count())


def wait_for_rows(database_url: str, request_ids: Iterable[str], *,
                  timeout_s: float = 90) -> dict[str, int]:
    """Poll until every request id has a row (or the deadline passes); the last counts."""
    ids = list(request_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        counts = rows_by_request_id(database_url, ids)
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)
