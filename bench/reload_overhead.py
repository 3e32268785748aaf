"""What live config reloads cost under load: the gateway reloading its config every second
against the same gateway whose file never changes, and against one that does not watch it, in
one run. Target (issue 10): a reload every second costs < 2% of throughput.

    .venv/bin/python -m bench.reload_overhead [--duration 10] [--rounds 3]

The gateway (pinned to core 0) serves ``chat`` from the simulator (core 1) with the call log
off, so that what differs between the setups is the reloads alone; the load generator
(``bench.loadgen``, core 1) runs a closed loop of 32 connections. In the "reloading" setup a
thread rewrites the config file every second, alternating two versions that route ``chat`` to
two providers (the same simulator under two names), each rewrite an atomic rename as a
Kubernetes ConfigMap update is; the gateway checks the file every second
(``SWITCHBOARD_CONFIG_POLL_S=1``), so each check finds a change: a parse, a validation, a new
snapshot and a swap. Rounds alternate the order of the setups.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx
import yaml

from bench.calllog_overhead import BIN, KEY, wait_ok
from bench.drivers import Request, loadgen
from bench.metrics_overhead import cpu_seconds
from tests.servers import free_port

BODY = '{"model":"chat","messages":[{"role":"user","content":"hello bench"}],"max_tokens":40}'


def config(simulator: str, provider: str) -> str:
    return yaml.safe_dump({
        "providers": {name: {"type": "openai", "base_url": f"{simulator}/v1", "api_key": "sk-sim"}
                      for name in ("sim-a", "sim-b")},
        "models": {"chat": {"targets": [{"provider": provider, "model": "gpt-4o-mini"}]}},
        "drift": {"embedding": {"sample_rate": 0}}})


def rewrite(path: Path, text: str) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(text)
    os.replace(staged, path)


def measure(env: dict[str, str], path: Path, simulator: str, *, seconds: float,
            flip: bool) -> tuple[float, float, int]:
    """Requests/s, CPU us a request, and reloads done, for one setup."""
    port = free_port()
    log = path.with_name("server.log").open("ab")
    proc = subprocess.Popen(["taskset", "-c", "0", str(BIN), "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=log)
    stop = threading.Event()
    flipper = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ok(f"{url}/readyz")
        request = Request(url=f"{url}/v1/chat/completions", body=BODY,
                          headers={"Authorization": f"Bearer {KEY}"})
        loadgen(request, mode="closed", core=1, duration_s=3, connections=32)  # warm-up
        before_reloads = reloads(url)
        if flip:
            def flipping() -> None:
                turn = 0
                while not stop.wait(1.0):
                    turn += 1
                    rewrite(path, config(simulator, "sim-b" if turn % 2 else "sim-a"))
            flipper = threading.Thread(target=flipping, daemon=True)
            flipper.start()
        before = cpu_seconds(proc.pid)
        report = loadgen(request, mode="closed", core=1, duration_s=seconds, connections=32)
        if report.errors:
            raise RuntimeError(f"errors during the run: {report.errors_detail}")
        cpu_us = (cpu_seconds(proc.pid) - before) / report.requests * 1e6
        return report.rps, cpu_us, reloads(url) - before_reloads
    finally:
        stop.set()
        if flipper is not None:
            flipper.join()
        rewrite(path, config(simulator, "sim-a"))
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def reloads(url: str) -> int:
    status = httpx.get(f"{url}/admin/config", headers={"Authorization": f"Bearer {KEY}"})
    count: int = status.raise_for_status().json()["reloads"]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-reloadbench-"))
    sim_port = free_port()
    simulator = f"http://127.0.0.1:{sim_port}"
    sim = subprocess.Popen(["taskset", "-c", "1", str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = work / "gateway.yaml"
    rewrite(path, config(simulator, "sim-a"))
    base = {**os.environ, "SWITCHBOARD_CONFIG": str(path), "SWITCHBOARD_MASTER_KEY": KEY,
            "SWITCHBOARD_CALL_LOG": "false", "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}
    setups = {"not watching (poll 0)": ({**base, "SWITCHBOARD_CONFIG_POLL_S": "0"}, False),
              "watching, no change": ({**base, "SWITCHBOARD_CONFIG_POLL_S": "1"}, False),
              "reloading every 1 s": ({**base, "SWITCHBOARD_CONFIG_POLL_S": "1"}, True)}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in setups}
    try:
        wait_ok(f"{simulator}/health")
        for round_ in range(args.rounds):
            order = list(setups.items())
            for name, (env, flip) in order if round_ % 2 == 0 else reversed(order):
                results[name].append(measure(env, path, simulator, seconds=args.duration,
                                             flip=flip))
                rps, cpu, count = results[name][-1]
                print(f"  round {round_ + 1}, {name}: {rps:.0f} req/s, {cpu:.0f} us CPU/request,"
                      f" {count} reloads", flush=True)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    print(f"\n{'setup':<24} {'req/s':>8} {'CPU us/req':>11} {'reloads':>8}   "
          f"(medians of {args.rounds} rounds)")
    med = {}
    for name, runs in results.items():
        med[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                     statistics.median(r[2] for r in runs))
        print(f"{name:<24} {med[name][0]:>8.0f} {med[name][1]:>11.0f} {med[name][2]:>8.0f}")
    off, still, flipping = med.values()
    print(f"\nreloading every second: {flipping[0] / still[0] * 100:.1f}% of the throughput of the "
          f"same gateway with an unchanged file, {flipping[0] / off[0] * 100:.1f}% of one not "
          "watching it (target: >= 98%)")


if __name__ == "__main__":
    main()
