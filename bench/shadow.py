"""Whether shadow traffic is invisible to clients: the client's latency with an experiment whose
shadow variant gets a copy of every call, against the same experiment without the shadow, at
the same load, in one run. Target (issue 10): the same latency distribution within noise.

    .venv/bin/python -m bench.shadow [--duration 10] [--rounds 2] [--rate 150]

The gateway (core 0, call log off) serves ``chat`` through an experiment whose one serving
variant is the simulator; its shadow variant (the simulator under another name) gets a
background copy of every answered call (``sample: 1``) in the "shadow" setup, and of none
(``sample: 1e-12``) in the other. The load
generator (core 1, with the simulator) sends an open loop at ``--rate`` requests/s; the copies
double the gateway's upstream work, so the rate is kept well below saturation, where a
production gateway runs. Rounds alternate the order of the setups.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.calllog_overhead import KEY, gateway_env, switchboard
from bench.drivers import Request, loadgen
from tests.servers import free_port

BODY = '{"model":"chat","messages":[{"role":"user","content":"hello bench"}],"max_tokens":40}'


def config(simulator: str, *, shadow: bool) -> dict[str, Any]:
    provider = {"type": "openai", "base_url": f"{simulator}/v1", "api_key": "sk-sim"}
    variants: dict[str, Any] = {
        "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        # An experiment has two variants at least: without copies, the shadow samples nothing.
        "shadow": {"shadow": True, "sample": 1.0 if shadow else 1e-12,
                   "targets": [{"provider": "sim2", "model": "gpt-4o-mini"}]}}
    return {"providers": {"sim": provider, "sim2": provider},
            "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}},
            "experiments": {"ab": {"model": "chat", "variants": variants}},
            "drift": {"embedding": {"sample_rate": 0}}}


def measure(raw: dict[str, Any], work: Path, *, seconds: float, rate: float
            ) -> tuple[float, float, float]:
    """p50, p99 and mean latency in ms of one open-loop run."""
    with switchboard("serve", port=free_port(), env=gateway_env(raw, work), core=0) as url:
        request = Request(url=f"{url}/v1/chat/completions", body=BODY,
                          headers={"Authorization": f"Bearer {KEY}"})
        loadgen(request, mode="open", core=1, duration_s=3, rate=rate)  # warm-up
        report = loadgen(request, mode="open", core=1, duration_s=seconds, rate=rate)
    if report.errors:
        raise RuntimeError(f"errors during the run: {report.errors_detail}")
    return report.latency_ms["p50"], report.latency_ms["p99"], report.latency_ms["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-shadowbench-"))
    setups = {"no shadow": False, "shadow copy of every call": True}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in setups}
    with switchboard("simulate", port=free_port(), core=1) as simulator:
        for round_ in range(args.rounds):
            order = list(setups.items())
            for name, shadow in order if round_ % 2 == 0 else reversed(order):
                results[name].append(measure(config(simulator, shadow=shadow), work,
                                             seconds=args.duration, rate=args.rate))
                p50, p99, mean = results[name][-1]
                print(f"  round {round_ + 1}, {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                      f"mean {mean:.2f} ms", flush=True)
    print(f"\n{'setup':<28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}   "
          f"(medians of {args.rounds} rounds at {args.rate:.0f} req/s)")
    for name, runs in results.items():
        print(f"{name:<28} {statistics.median(r[0] for r in runs):>8.2f} "
              f"{statistics.median(r[1] for r in runs):>8.2f} "
              f"{statistics.median(r[2] for r in runs):>8.2f}")


if __name__ == "__main__":
    main()
