"""A hung Postgres (accepting connections, never answering) under steady load, then the same with
the gateway killed (SIGKILL) during the freeze: rows answered against rows stored.

    .venv/bin/python -m bench.hung_db [--rate 200] [--duration 20] [--freeze-start 5]
                                      [--freeze 10] [--kill-after 4] [--redis]

Runs a private Postgres behind a TCP proxy this script freezes (``tests/calllog/freeze_proxy``),
the simulator and one gateway (``switchboard serve``), and drives open-loop load on loopback,
each request with its own ``x-request-id``. Two runs, each on a fresh database:

- *hung*: the proxy stops forwarding from ``--freeze-start`` for ``--freeze`` seconds, then
  forwards again; the call log catches up; every request answered 200 must be one row.
- *crash*: the same freeze, and the gateway is killed with SIGKILL ``--kill-after`` seconds into
  it (the load keeps going: those requests fail); the proxy forwards again, a new gateway starts
  on the same spool directory, and every request answered 200 before the kill must be one row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import text

from app.db.engine import make_engine
from app.db.migrate import upgrade
from bench.outage import wait_ready
from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

KEY = "sk-bench-hung-db-master-key"
BIN = Path(sys.executable).with_name("switchboard")
BODY = b'{"model":"chat","messages":[{"role":"user","content":"hung database bench"}]}'


@dataclass
class Load:
    sent: int = 0
    answered: set[str] = field(default_factory=set)
    failed: int = 0


async def drive(url: str, *, run: str, rate: float, duration: float,
                events: dict[float, Any]) -> Load:
    """Open-loop POSTs at ``rate`` for ``duration`` s; ``events`` maps a time (s from the
    start) to a callable run then (in a thread)."""
    load = Load()
    pending = sorted(events.items())
    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, request_id: str) -> None:
        try:
            async with session.post(url, data=BODY, headers={
                    "Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                    "x-request-id": request_id}) as response:
                await response.read()
                if response.status == 200:
                    load.answered.add(request_id)
                else:
                    load.failed += 1
        except aiohttp.ClientError:
            load.failed += 1

    async with aiohttp.ClientSession() as session:
        while (elapsed := time.monotonic() - start) < duration:
            while pending and elapsed >= pending[0][0]:
                await asyncio.to_thread(pending.pop(0)[1])
            task = asyncio.create_task(one(session, f"{run}-{load.sent}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            load.sent += 1
            await asyncio.sleep(max(0.0, start + load.sent / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    for _, event in pending:
        await asyncio.to_thread(event)
    return load


async def stored_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return [str(r[0]) for r in await conn.execute(text("SELECT request_id FROM calls"))]
    finally:
        await engine.dispose()


def wait_rows(url: str, answered: set[str], timeout_s: float = 180) -> tuple[list[str], float]:
    """Stored request ids once every answered one is there (or on timeout), and the wait."""
    start = time.monotonic()
    while True:
        ids = asyncio.run(stored_ids(url))
        if answered <= set(ids) or time.monotonic() - start > timeout_s:
            return ids, time.monotonic() - start
        time.sleep(0.5)


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


def report(name: str, load: Load, ids: list[str], waited: float, note: str) -> None:
    stored = [i for i in ids if i.startswith(f"{name}-")]
    lost = load.answered - set(stored)
    print(f"[{name}] sent {load.sent}, answered 200: {len(load.answered)}, failed: "
          f"{load.failed}; rows {len(stored)}, distinct {len(set(stored))}, duplicates "
          f"{len(stored) - len(set(stored))}, answered but not stored (lost): {len(lost)}; "
          f"all rows in {waited:.1f}s after the load. {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--freeze-start", type=float, default=5.0)
    parser.add_argument("--freeze", type=float, default=10.0)
    parser.add_argument("--kill-after", type=float, default=4.0)
    parser.add_argument("--redis", action="store_true", help="also a Redis spool")
    args = parser.parse_args()
    pg = PrivatePostgres()
    pg.start()
    redis = PrivateRedis() if args.redis else None
    if redis is not None:
        redis.start()
    work = Path(tempfile.mkdtemp(prefix="sb-hung-db-"))
    sim_port = free_port()
    config = work / "gateway.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: "
                      f"'http://127.0.0.1:{sim_port}/v1'}}\nmodels:\n  chat: {{targets: "
                      "[{provider: sim, model: gpt-4o-mini}]}\n")
    sim = subprocess.Popen([str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", sim)
        freeze = (args.freeze_start, args.freeze_start + args.freeze)
        for run in ("hung", "crash"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                            "-c", f"CREATE DATABASE {run}"], check=True, capture_output=True)
            direct = pg.url.rsplit("/", 1)[0] + f"/{run}"
            asyncio.run(upgrade(direct))
            proxy = FreezeProxy(pg.port)
            env = {**os.environ, "SWITCHBOARD_CONFIG": str(config),
                   "SWITCHBOARD_MASTER_KEY": KEY, "SWITCHBOARD_DATABASE_URL": proxy.url(direct),
                   "SWITCHBOARD_SPOOL_DIR": str(work / f"spool-{run}")}
            env.pop("SWITCHBOARD_REDIS_URL", None)
            if redis is not None:
                env["SWITCHBOARD_REDIS_URL"] = redis.url
            port = free_port()
            gateway = serve(env, port, work / f"{run}.log")
            procs.append(gateway)

            def kill(gateway: subprocess.Popen[bytes] = gateway) -> None:
                gateway.send_signal(signal.SIGKILL)
                gateway.wait()

            def thaw(proxy: FreezeProxy = proxy) -> None:
                proxy.drop()
                proxy.thaw()

            events: dict[float, Any] = {freeze[0]: proxy.freeze, freeze[1]: thaw}
            if run == "crash":
                events[freeze[0] + args.kill_after] = kill
            load = asyncio.run(drive(f"http://127.0.0.1:{port}/v1/chat/completions", run=run,
                                     rate=args.rate, duration=args.duration, events=events))
            note = f"Postgres frozen t={freeze[0]:.0f}-{freeze[1]:.0f}s."
            if run == "crash":
                note += (f" Gateway killed (SIGKILL) at t={freeze[0] + args.kill_after:.1f}s; "
                         "a new one started after the load.")
                procs.append(serve(env, port, work / f"{run}.log"))
            ids, waited = wait_rows(direct, load.answered)
            stats = httpx.get(f"http://127.0.0.1:{port}/admin/calllog",
                              headers={"Authorization": f"Bearer {KEY}"}).json()
            report(run, load, ids, waited, note)
            print(f"[{run}] writer of the gateway now running: {stats}")
            proxy.close()
    finally:
        for proc in (*procs, sim):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        pg.destroy()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    main()
