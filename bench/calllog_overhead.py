"""Gateway throughput with the call log writing to Postgres and Redis, against the same gateway
with the call log off, in one run (target: at least 85%).

    .venv/bin/python -m bench.calllog_overhead [--duration 10] [--rounds 2] [--reference DIR]

``--reference DIR`` adds a third setup: the build checked out in DIR (for example
``git worktree add /tmp/ref <commit>``), run from that checkout with this venv, logging to Postgres
and Redis instances of its own, so that a change's cost is measured against the build before it
in the same run (``new / reference``).

The gateway is pinned to core 0, the simulator and wrk to core 1 (as in ``bench/run.py``);
Postgres and Redis are private instances started by this script. Rounds alternate the two
configurations so that drift in the machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.db.migrate import upgrade
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

KEY = "sk-bench-calllog-master-key"
BIN = Path(sys.executable).with_name("switchboard")
LUA = """wrk.method = "POST"
wrk.body = '{"model":"chat","messages":[{"role":"user","content":"hello bench"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
""".replace("KEY", KEY)


def wait_ok(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def gateway_env(config: Mapping[str, Any], work: Path) -> dict[str, str]:
    """The environment of a gateway serving ``config`` (written into ``work``) with the bench's
    master key and the call log off."""
    path = work / f"gateway-{os.urandom(4).hex()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return {**os.environ, "SWITCHBOARD_CONFIG": str(path), "SWITCHBOARD_MASTER_KEY": KEY,
            "SWITCHBOARD_CALL_LOG": "false", "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}


class Served(str):
    """A running server's base URL, with its process id (for CPU time from /proc)."""

    pid: int


@contextmanager
def switchboard(command: str, *args: str, port: int, env: Mapping[str, str] | None = None,
                core: int | None = None) -> Iterator[Served]:
    """Run ``switchboard COMMAND --port PORT ARGS`` (``serve`` or ``simulate``), pinned to
    ``core`` when given, until exit; yields its base URL (and pid) once it is ready
    (``/readyz`` for a gateway, ``/health`` for a simulator)."""
    argv = [str(BIN), command, "--port", str(port), *args]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    proc = subprocess.Popen(argv, env=None if env is None else dict(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = Served(f"http://127.0.0.1:{port}")
    url.pid = proc.pid  # taskset execs the program: the same process
    try:
        wait_ok(url + ("/readyz" if command == "serve" else "/health"))
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def wrk(url: str, *, seconds: float, script: Path) -> float:
    """Requests/s from wrk (32 connections) on core 1; fails on any non-2xx answer."""
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds:.0f}s",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors during the run:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match.group(1))


def run_gateway(env: dict[str, str], port: int, *, seconds: float, script: Path,
                tree: Path | None = None) -> float:
    """Requests/s of one gateway process; ``tree`` runs the build checked out there instead."""
    command = [str(BIN)] if tree is None else \
        [sys.executable, "-c", "from app.cli import main; main()"]
    proc = subprocess.Popen(["taskset", "-c", "0", *command, "serve", "--port", str(port)],
                            env=env, cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ok(base + "/readyz")
        url = base + "/v1/chat/completions"
        wrk(url, seconds=3, script=script)  # warm-up
        return wrk(url, seconds=seconds, script=script)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of the build to compare against")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-logbench-"))
    script = work / "post.lua"
    script.write_text(LUA)
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    asyncio.run(upgrade(pg.url))
    ref_pg, ref_redis = (PrivatePostgres(), PrivateRedis()) if args.reference else (None, None)
    if args.reference and ref_pg and ref_redis:
        ref_pg.start()
        ref_redis.start()
        subprocess.run([sys.executable, "-c", "import asyncio, sys; from app.db.migrate import "
                        "upgrade; asyncio.run(upgrade(sys.argv[1]))", ref_pg.url],
                       cwd=args.reference, env={**os.environ, "PYTHONPATH": str(args.reference)},
                       check=True)
    sim_port = free_port()
    config = work / "gateway.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: "
                      f"'http://127.0.0.1:{sim_port}/v1', api_key: sk-sim}}\nmodels:\n"
                      "  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n")
    base_env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_MASTER_KEY": KEY,
                "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}
    setups: dict[str, tuple[dict[str, str], Path | None]] = {
        "call log off": ({**base_env, "SWITCHBOARD_CALL_LOG": "false"}, None),
        "Postgres + Redis": ({**base_env, "SWITCHBOARD_DATABASE_URL": pg.url,
                              "SWITCHBOARD_REDIS_URL": redis.url}, None),
    }
    if args.reference and ref_pg and ref_redis:
        setups["reference, P + R"] = (
            {**base_env, "SWITCHBOARD_DATABASE_URL": ref_pg.url,
             "SWITCHBOARD_REDIS_URL": ref_redis.url, "PYTHONPATH": str(args.reference),
             "SWITCHBOARD_SPOOL_DIR": str(work / "ref-spool")}, args.reference)
    sim = subprocess.Popen(["taskset", "-c", "1", str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[float]] = {name: [] for name in setups}
    try:
        wait_ok(f"http://127.0.0.1:{sim_port}/health")
        for _ in range(args.rounds):
            for name, (env, tree) in setups.items():
                results[name].append(run_gateway(env, free_port(), seconds=args.duration,
                                                 script=script, tree=tree))
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        pg.destroy()
        redis.stop()
        if ref_pg and ref_redis:
            ref_pg.destroy()
            ref_redis.stop()
    means = {name: sum(v) / len(v) for name, v in results.items()}
    off, on = means["call log off"], means["Postgres + Redis"]
    for name, values in results.items():
        print(f"{name:>18}: {' '.join(f'{v:8.1f}' for v in values)} req/s "
              f"(mean {sum(values) / len(values):.1f})")
    print(f"logging on / off: {100 * on / off:.1f}% (target >= 85%)")
    if "reference, P + R" in means:
        print(f"logging on, this build / reference: {100 * on / means['reference, P + R']:.1f}% "
              "(target >= 95%)")


if __name__ == "__main__":
    main()
