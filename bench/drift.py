"""How fast planted drift is flagged, and how quiet a stable stream stays (issue 4's targets:
flagged within 500 requests; a stable stream below threshold over 5,000).

    .venv/bin/python -m bench.drift [--stable 5000] [--seeds 5]

End to end, with the default drift settings (baseline 1,000 answers, window 500, evaluated
every 50): a gateway on loopback in front of the simulator, whose answers vary in length
(40 tokens +/- 50%). Per seed (the simulator's draws): 1,000 requests for the baseline, then
``--stable`` more while the largest length PSI and refusal rate are tracked at every evaluation,
then the drift is planted in the simulator (answers half as long, or 20% refusals) and requests
are counted until ``/metrics`` flags it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.calllog_overhead import BIN, wait_ok
from tests.metrics.scrape import parse, value
from tests.servers import free_port

KEY = "sk-bench-drift-master-key-0123"
TARGET = {"model": "chat", "provider": "sim"}


class Gateway:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {KEY}"})
        self.sent = 0

    def send(self, n: int) -> None:
        for _ in range(n):
            self.sent += 1
            response = self.http.post("/v1/chat/completions", json={
                "model": "chat", "max_tokens": 500,
                "messages": [{"role": "user", "content": f"Question {self.sent}?"}]})
            response.raise_for_status()

    def gauges(self) -> dict[str, float]:
        samples = parse(self.http.get("/metrics").text)
        return {"psi": value(samples, "switchboard_drift_length_psi", **TARGET),
                "refusal_rate": value(samples, "switchboard_drift_refusal_rate", **TARGET),
                **{signal: value(samples, "switchboard_drift_flagged", signal=signal, **TARGET)
                   for signal in ("length", "refusals")}}


def run_seed(seed: int, *, stable: int, work: Path) -> dict[str, Any]:
    sim_port, port = free_port(), free_port()
    config = work / f"gateway-{seed}.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: "
                      f"'http://127.0.0.1:{sim_port}/v1', api_key: sk-sim}}\nmodels:\n"
                      "  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
                      "drift: {embedding: {sample_rate: 0}}\n")
    env = {"PATH": str(BIN.parent), "SWITCHBOARD_CONFIG": str(config),
           "SWITCHBOARD_MASTER_KEY": KEY, "SWITCHBOARD_CALL_LOG": "false"}
    sim = subprocess.Popen([str(BIN), "simulate", "--port", str(sim_port), "--seed", str(seed)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sim_url = f"http://127.0.0.1:{sim_port}"
    result: dict[str, Any] = {"seed": seed}
    try:
        wait_ok(sim_url + "/health")
        wait_ok(f"http://127.0.0.1:{port}/readyz")
        state = httpx.Client(base_url=sim_url)
        state.post("/_sim/state", json={"completion_tokens": 40, "length_spread": 0.5})
        gw = Gateway(f"http://127.0.0.1:{port}")
        gw.send(1000)
        worst = {"psi": 0.0, "refusal_rate": 0.0, "length": 0.0, "refusals": 0.0}
        for _ in range(stable // 50):
            gw.send(50)
            for name, got in gw.gauges().items():
                worst[name] = max(worst[name], got)
        result["stable"] = worst
        for signal, planted in (("length", {"completion_tokens": 20}),
                                ("refusals", {"completion_tokens": 40, "refusal_rate": 0.2})):
            gw.send(500)  # back to a full window of stable answers first
            state.post("/_sim/state", json={"completion_tokens": 40, "refusal_rate": 0.0})
            gw.send(500)
            assert gw.gauges()[signal] == 0, f"{signal} flagged before the drift"
            state.post("/_sim/state", json=planted)
            taken = None
            for step in range(1, 21):
                gw.send(50)
                if gw.gauges()[signal] == 1:
                    taken = step * 50
                    break
            result[signal] = taken
            state.post("/_sim/state", json={"completion_tokens": 40, "refusal_rate": 0.0})
    finally:
        gateway.terminate()
        sim.terminate()
        gateway.wait(timeout=30)
        sim.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stable", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-driftbench-"))
    for seed in range(args.seeds):
        r = run_seed(seed, stable=args.stable, work=work)
        s = r["stable"]
        print(f"seed {seed}: stable over {args.stable}: max PSI {s['psi']:.3f}, max refusal rate "
              f"{s['refusal_rate']:.3f}, flagged length {s['length']:.0f} refusals "
              f"{s['refusals']:.0f} | flagged after: halved length {r['length']} requests, "
              f"20% refusals {r['refusals']} requests (50-request steps)")


if __name__ == "__main__":
    main()
