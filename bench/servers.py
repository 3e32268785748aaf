"""The servers of a benchmark run (simulators, gateway, reference) and the run's shared context.

Layout on a 2-core machine: the server under test (gateway or reference, never both under load
at once) alone on core 0; the simulators, the load drivers and the bench script on core 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import drivers
from bench.drivers import Request
from bench.options import Options
from bench.procs import ROOT, VENV_BIN, Service, Services, free_port
from bench.stats import LoadReport

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
CHAT_BODY = json.dumps({"model": "bench-chat", "messages": PROMPT, "max_tokens": 16})
STREAM_BODY = json.dumps({"model": "bench-stream", "messages": PROMPT, "max_tokens": 16,
                          "stream": True})
SIM_KEY_ENV = "BENCH_SIM_API_KEY"
CONFIG = """\
# Written by bench/run.py for one benchmark run.
providers:
  sim: {type: openai, base_url: "http://127.0.0.1:%(fast)d/v1", api_key: "${%(env)s}"}
  sim-ttft: {type: openai, base_url: "http://127.0.0.1:%(slow)d/v1", api_key: "${%(env)s}"}
models:
  bench-chat: {targets: [{provider: sim, model: gpt-4o-mini}]}
  bench-stream: {targets: [{provider: sim-ttft, model: gpt-4o-mini}]}
"""


class BenchError(RuntimeError):
    """The run cannot produce meaningful numbers (errors under load, a broken path...)."""


@dataclass
class Bench:
    """What every phase needs: options, the process owner, cores, the load tool, the key."""

    opts: Options
    services: Services
    run_dir: Path
    server_core: int | None
    load_core: int | None
    wrk: str | None
    key: str

    def request(self, port: int, body: str) -> Request:
        """A chat-completions request to a server on ``port``, with the master key."""
        return Request(url=f"http://127.0.0.1:{port}/v1/chat/completions", body=body,
                       headers={"Authorization": f"Bearer {self.key}"})

    def closed(self, request: Request, *, duration_s: float, limit: int = 0) -> LoadReport:
        """A closed-loop run with wrk for ``duration_s``, or with the Python generator when wrk
        is unavailable (which also stops after ``limit`` requests, when given)."""
        if self.wrk is not None:
            return drivers.wrk(self.wrk, request, connections=self.opts.connections,
                               duration_s=duration_s, core=self.load_core, scratch=self.run_dir)
        return drivers.loadgen(request, mode="closed", core=self.load_core,
                               duration_s=duration_s, connections=self.opts.connections,
                               requests=limit)


def checked(report: LoadReport, what: str) -> LoadReport:
    """``report`` when it has no errors; ``BenchError`` (the run stops) otherwise."""
    if report.errors or report.requests == 0:
        raise BenchError(f"{what}: {report.errors} errors ({report.errors_detail}) in "
                         f"{report.requests} requests; non-2xx answers must be 0")
    return report


def preflight(request: Request, *, stream: bool) -> None:
    """One request by hand: a 200 with a chat completion (or an SSE stream) or ``BenchError``."""
    http = urllib.request.Request(request.url, data=request.body.encode(), method="POST",
                                  headers={**request.headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(http, timeout=30) as resp:
            status, kind, raw = resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{request.url}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
    except OSError as exc:
        raise BenchError(f"{request.url}: {exc}") from None
    ok = raw.startswith(b"data:") if stream else b'"choices"' in raw
    if status != 200 or not ok:
        raise BenchError(f"{request.url}: unexpected answer {status} {kind}: {raw[:300]!r}")


# ---- servers ------------------------------------------------------------------------------------

def wait_for_simulator(timeout_s: float) -> None:
    """Wait until ``switchboard simulate`` exists (it may be landing while the bench runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = subprocess.run([str(VENV_BIN / "switchboard"), "simulate", "--help"],
                              capture_output=True, timeout=60, check=False)
        if done.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise BenchError("`switchboard simulate` is not available: "
                             + done.stderr.decode(errors="replace").strip()[-300:])
        time.sleep(5)


def start_simulator(b: Bench, name: str, *, ttft_ms: float) -> Service:
    """A simulator on the load core (zero latency unless ``ttft_ms``)."""
    port = free_port()
    argv = [str(VENV_BIN / "switchboard"), "simulate", "--port", str(port)]
    if ttft_ms:
        argv += ["--ttft-ms", str(ttft_ms)]
    return b.services.start(name, argv, port=port, core=b.load_core)


def start_gateway(b: Bench, fast: Service, slow: Service, *, name: str = "gateway") -> Service:
    """``switchboard serve`` on the server core, with auth on and a config for the simulators."""
    config = b.run_dir / "gateway.yaml"
    config.write_text(CONFIG % {"fast": fast.port, "slow": slow.port, "env": SIM_KEY_ENV})
    port = free_port()
    # A fresh call-log database and spool for every gateway: earlier runs' rows change nothing.
    database, spool = b.run_dir / f"calls-{name}.db", b.run_dir / f"spool-{name}"
    for old in b.run_dir.glob(f"calls-{name}.db*"):
        old.unlink()
    shutil.rmtree(spool, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update({"SWITCHBOARD_MASTER_KEY": b.key, SIM_KEY_ENV: "sk-bench",
                "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
                "SWITCHBOARD_SPOOL_DIR": str(spool), **dict(b.opts.gateway_env)})
    argv = [str(VENV_BIN / "switchboard"), "serve", "--config", str(config), "--port", str(port)]
    service = b.services.start(name, argv, port=port, core=b.server_core, env=env,
                               cwd=b.run_dir, ready_timeout_s=60)
    preflight(b.request(port, CHAT_BODY), stream=False)
    preflight(b.request(port, STREAM_BODY), stream=True)
    return service


def start_forwarder(b: Bench, upstream: Service, *, name: str = "reference") -> Service:
    """The reference forwarder on the server core, forwarding to ``upstream`` (a simulator)."""
    port = free_port()
    argv = [str(VENV_BIN / "python"), "-m", "bench.forwarder", "--port", str(port),
            "--upstream", f"http://127.0.0.1:{upstream.port}/v1"]
    service = b.services.start(name, argv, port=port, core=b.server_core, cwd=ROOT)
    preflight(b.request(port, CHAT_BODY), stream=False)
    preflight(b.request(port, STREAM_BODY), stream=True)
    return service
