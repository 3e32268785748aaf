"""What a black-holed first target costs once its circuit breaker has opened: 200 calls through
a gateway whose ``chat`` tries a target that accepts connections and never answers before the
simulator, against the same gateway with the simulator alone. Target (issue 10): after the
first few calls, the p99 is within 2x of the healthy gateway's.

    .venv/bin/python -m bench.black_hole [--calls 200] [--timeout 2]

The black hole is a listening socket nobody accepts from (the kernel completes every
handshake, nothing ever answers). Its provider has ``timeout_s: --timeout``; the breaker opens
after its default 5 consecutive failures. Calls are sequential (one client), so each latency
is the gateway's alone; the first ``breaker.failures`` calls are reported apart.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import yaml

from bench.calllog_overhead import BIN, KEY, wait_ok
from tests.servers import free_port

FAILURES = 5
"""``breaker.failures``' default: the calls that wait for the black hole."""


def run(config: Mapping[str, object], work: Path, calls: int) -> list[float]:
    path = work / f"gateway-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(path), "SWITCHBOARD_MASTER_KEY": KEY,
           "SWITCHBOARD_CALL_LOG": "false", "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ok(f"http://127.0.0.1:{port}/readyz")
        latencies = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as http:
            for _ in range(calls):
                started = time.perf_counter()
                answer = http.post("/v1/chat/completions", json={
                    "model": "chat", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 20})
                latencies.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"a call failed: {answer.status_code} {answer.text}")
        return latencies
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="the black-holed provider's timeout_s")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-blackhole-"))
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1024)
    sim_port = free_port()
    sim = subprocess.Popen([str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ok(f"http://127.0.0.1:{sim_port}/health")
        sim_provider = {"type": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1",
                        "api_key": "sk-sim"}
        healthy = {"providers": {"sim": sim_provider},
                   "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}},
                   "drift": {"embedding": {"sample_rate": 0}}}
        holed = {"providers": {"sim": sim_provider, "hole": {
                     "type": "openai", "api_key": "sk-hole", "timeout_s": args.timeout,
                     "base_url": f"http://127.0.0.1:{hole.getsockname()[1]}/v1"}},
                 "models": {"chat": {"targets": [{"provider": "hole", "model": "gpt-4o-mini"},
                                                 {"provider": "sim", "model": "gpt-4o-mini"}]}},
                 "drift": {"embedding": {"sample_rate": 0}}}
        base = run(healthy, work, args.calls)
        with_hole = run(holed, work, args.calls)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        hole.close()
    first, rest = with_hole[:FAILURES], with_hole[FAILURES:]
    print(f"healthy gateway:          p50 {statistics.median(base):7.2f} ms   "
          f"p99 {p99(base):7.2f} ms   ({args.calls} calls)")
    print(f"black-holed first target: first {FAILURES} calls {min(first):.0f}-{max(first):.0f} ms"
          f" (each waits timeout_s {args.timeout:g} s, then falls back)")
    print(f"                  then:   p50 {statistics.median(rest):7.2f} ms   "
          f"p99 {p99(rest):7.2f} ms   ({len(rest)} calls)")
    print(f"\np99 after the breaker opened: {p99(rest) / p99(base):.2f}x the healthy gateway's "
          "(target <= 2x)")


if __name__ == "__main__":
    main()
