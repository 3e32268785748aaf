"""Gateway throughput with metrics and drift signals on (the default), against the same gateway
with them off (``SWITCHBOARD_METRICS=false``), in one run (target: metrics cost at most 5%).

    .venv/bin/python -m bench.metrics_overhead [--duration 10] [--rounds 3] [--workers 1]

The gateway is pinned to core 0, the simulator and wrk to core 1 (as in ``bench/run.py``). The
call log is off in both, so that the difference is the metrics' alone. The simulator answers
with varied lengths so the drift windows see a realistic stream. Rounds alternate the two
configurations, and which goes first, so that drift in the machine's speed hits both alike; a
Prometheus-style scrape of ``/metrics`` runs every 5 seconds during the "on" runs, as a real
deployment would. Besides requests/s, it reports the gateway's CPU time per request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx

from bench.calllog_overhead import BIN, KEY, LUA, wait_ok
from tests.servers import free_port

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def wrk(url: str, *, seconds: float, script: Path) -> tuple[float, int]:
    """(requests/s, requests) from wrk (32 connections) on core 1; fails on any non-2xx."""
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds:.0f}s",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if "Non-2xx" in out or rate is None or total is None:
        raise RuntimeError(f"errors during the run, or unexpected wrk output:\n{out}")
    return float(rate.group(1)), int(total.group(1))


SCRAPE_INTERVAL_S = 5.0
"""Prometheus' default is 15 s and docker/prometheus scrapes every 10 s: 5 s is on the safe side."""


def scrape_periodically(url: str, stop: threading.Event) -> None:
    while not stop.wait(SCRAPE_INTERVAL_S):
        httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def run_gateway(env: dict[str, str], *, workers: int, seconds: float, warmup: float,
                script: Path, scrape: bool) -> tuple[float, float]:
    """(requests/s, gateway CPU microseconds per request) of one measured run."""
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", str(BIN), "serve", "--port", str(port),
                             "--workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ok(base + "/readyz")
        url = base + "/v1/chat/completions"
        # Warm-up, long enough for the embedding model's one-off load (~5 s of CPU) at the
        # first drift sample: the steady state is what is measured.
        wrk(url, seconds=warmup, script=script)
        if scrape:
            threading.Thread(target=scrape_periodically, args=(base, stop), daemon=True).start()
        before = cpu_seconds(proc.pid)
        rate, total = wrk(url, seconds=seconds, script=script)
        return rate, (cpu_seconds(proc.pid) - before) / total * 1e6
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--embedding-rate", type=float, default=None,
                        help="drift.embedding.sample_rate (default: the config's default)")
    parser.add_argument("--embedding-max-per-second", type=float, default=None,
                        help="drift.embedding.max_per_second (default: the config's default)")
    args = parser.parse_args()
    embedding = {k: v for k, v in (("sample_rate", args.embedding_rate),
                                   ("max_per_second", args.embedding_max_per_second))
                 if v is not None}
    work = Path(tempfile.mkdtemp(prefix="sb-metricsbench-"))
    script = work / "post.lua"
    script.write_text(LUA)
    sim_port = free_port()
    config = work / "gateway.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: "
                      f"'http://127.0.0.1:{sim_port}/v1', api_key: sk-sim}}\nmodels:\n"
                      "  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
                      + (f"drift: {{embedding: {json.dumps(embedding)}}}\n" if embedding else ""))
    base_env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_MASTER_KEY": KEY,
                "SWITCHBOARD_CALL_LOG": "false", "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}
    setups = {"metrics off": {**base_env, "SWITCHBOARD_METRICS": "false"},
              "metrics on": base_env}
    sim = subprocess.Popen(["taskset", "-c", "1", str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[float]] = {name: [] for name in setups}
    cpu: dict[str, list[float]] = {name: [] for name in setups}
    try:
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ok(sim_url + "/health")
        httpx.post(sim_url + "/_sim/state",
                   json={"completion_tokens": 40, "length_spread": 0.5}).raise_for_status()
        for round_ in range(args.rounds):
            # Alternate which runs first: the second run of a round measured slower whichever
            # it was (the simulator's and the machine's state), which would bias a fixed order.
            order = list(setups.items())
            for name, env in order if round_ % 2 == 0 else reversed(order):
                rate, micros = run_gateway(
                    env, workers=args.workers, seconds=args.duration, warmup=args.warmup,
                    script=script, scrape=name == "metrics on")
                results[name].append(rate)
                cpu[name].append(micros)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    off, on = (sum(v) / len(v) for v in results.values())
    for name, values in results.items():
        print(f"{name:>12}: {' '.join(f'{v:8.1f}' for v in values)} req/s "
              f"(mean {sum(values) / len(values):.1f}); gateway CPU per request: "
              f"{' '.join(f'{v:6.1f}' for v in cpu[name])} us "
              f"(median {statistics.median(cpu[name]):.1f})")
    cpu_off, cpu_on = (statistics.median(v) for v in cpu.values())
    print(f"throughput, metrics on / off: {100 * on / off:.1f}% (target >= 95%)")
    print(f"CPU per request, off / on:    {100 * cpu_off / cpu_on:.1f}% "
          "(the same ratio, steadier on a noisy machine)")


if __name__ == "__main__":
    main()
