"""What a gateway costs when nobody calls it: the CPU an idle ``switchboard serve`` uses a second
(Postgres and Redis configured, as in production), against the reference forwarder idle beside
it, in one run.

    .venv/bin/python -m bench.idle_cpu [--seconds 30] [--rounds 2]

Each round starts the gateway and the forwarder (``bench/forwarder.py``) on private Postgres and
Redis instances (``tests.calllog.servers``), waits ``SETTLE_S`` for start-up work to end, then
reads both processes' CPU time from /proc over ``--seconds``. Every replica pays this whether or
not it serves: timers, the call-log writer's cycles, the key directory's refresh, the budget
reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.db.migrate import upgrade
from bench.calllog_overhead import BIN
from bench.keys_overhead import gateway_env, start
from bench.metrics_overhead import cpu_seconds
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

SETTLE_S = 10.0
"""Seconds after start-up before measuring (the first replay pass, partitions, warm-up)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-idlebench-"))
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    try:
        asyncio.run(upgrade(pg.url))
        env = gateway_env(work, "http://127.0.0.1:9/v1", pg.url, redis.url)
        gateway_ms: list[float] = []
        reference_ms: list[float] = []
        for round_ in range(args.rounds):
            port, other = free_port(), free_port()
            gateway = start([str(BIN), "serve", "--port", str(port)], env, port)
            reference = start([sys.executable, "-m", "bench.forwarder", "--port", str(other),
                               "--upstream", "http://127.0.0.1:9/v1"], env, other)
            try:
                time.sleep(SETTLE_S)
                before = cpu_seconds(gateway.pid), cpu_seconds(reference.pid)
                time.sleep(args.seconds)
                after = cpu_seconds(gateway.pid), cpu_seconds(reference.pid)
            finally:
                for proc in (gateway, reference):
                    proc.terminate()
                    proc.wait(timeout=30)
            gateway_ms.append((after[0] - before[0]) / args.seconds * 1000)
            reference_ms.append((after[1] - before[1]) / args.seconds * 1000)
            print(f"  round {round_ + 1}: gateway {gateway_ms[-1]:.1f} ms of CPU a second, "
                  f"reference forwarder {reference_ms[-1]:.1f}", flush=True)
        gw, ref = statistics.median(gateway_ms), statistics.median(reference_ms)
        print(f"idle, median of {args.rounds} rounds of {args.seconds:.0f} s: gateway {gw:.1f} ms "
              f"of CPU a second ({gw / 10:.2f}% of a core), reference forwarder {ref:.1f} ms")
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
