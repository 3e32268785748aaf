"""Postgres outage under steady load: requests keep succeeding, memory stays bounded, and every
served request ends up as exactly one row.

    .venv/bin/python -m bench.outage [--rate 200] [--duration 60] [--outage-start 15] [--outage 30]

Runs a private Postgres and Redis (stopped and started by this script, never the shared ones),
the simulator and one gateway, drives open-loop load on loopback, stops Postgres for
``--outage`` seconds in the middle, then waits for the call log to catch up and counts rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import text

from app.db.engine import make_engine
from app.db.migrate import upgrade
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

KEY = "sk-bench-outage-master-key"
BIN = Path(sys.executable).with_name("switchboard")
BODY = b'{"model":"chat","messages":[{"role":"user","content":"outage bench"}]}'


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def load(url: str, *, rate: float, duration: float, outage: tuple[float, float],
               pg: PrivatePostgres, pid: int) -> dict[str, Any]:
    """Open-loop POSTs at ``rate``; stops and restarts Postgres at the outage's edges."""
    ok = failed = 0
    rss: list[tuple[float, int]] = []
    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    stopped = restarted = False

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        try:
            async with session.post(url, data=BODY, headers={
                    "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}) as r:
                await r.read()
                ok, failed = (ok + 1, failed) if r.status == 200 else (ok, failed + 1)
        except aiohttp.ClientError:
            failed += 1

    async with aiohttp.ClientSession() as session:
        n = 0
        while (elapsed := time.monotonic() - start) < duration:
            if not stopped and elapsed >= outage[0]:
                await asyncio.to_thread(pg.stop)
                stopped = True
            if stopped and not restarted and elapsed >= outage[1]:
                await asyncio.to_thread(pg.start)
                restarted = True
            if n % int(rate) == 0:
                rss.append((round(elapsed, 1), rss_kib(pid)))
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    if not restarted:
        pg.start()
    return {"sent": n, "ok": ok, "failed": failed, "rss_kib": rss}


async def count_rows(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT count(*), count(DISTINCT id) FROM calls"))).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--outage-start", type=float, default=15.0)
    parser.add_argument("--outage", type=float, default=30.0)
    args = parser.parse_args()
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    asyncio.run(upgrade(pg.url))
    work = Path(tempfile.mkdtemp(prefix="sb-outage-"))
    sim_port, gw_port = free_port(), free_port()
    config = work / "gateway.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: "
                      f"'http://127.0.0.1:{sim_port}/v1'}}\nmodels:\n  chat: {{targets: "
                      "[{provider: sim, model: gpt-4o-mini}]}\n")
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_MASTER_KEY": KEY,
           "SWITCHBOARD_DATABASE_URL": pg.url, "SWITCHBOARD_REDIS_URL": redis.url,
           "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}
    sim = subprocess.Popen([str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([str(BIN), "serve", "--port", str(gw_port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{gw_port}"
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", sim)
        wait_ready(base + "/readyz", gw)
        outage = (args.outage_start, args.outage_start + args.outage)
        result = asyncio.run(load(base + "/v1/chat/completions", rate=args.rate,
                                  duration=args.duration, outage=outage, pg=pg, pid=gw.pid))
        deadline = time.monotonic() + 180
        rows = distinct = 0
        while time.monotonic() < deadline:
            rows, distinct = asyncio.run(count_rows(pg.url))
            if rows >= result["ok"] + result["failed"]:
                break
            time.sleep(1)
        stats = httpx.get(base + "/admin/calllog",
                          headers={"Authorization": f"Bearer {KEY}"}).json()
    finally:
        for proc in (gw, sim):
            proc.terminate()
            proc.wait(timeout=30)
        pg.destroy()
        redis.stop()
    rss = [kib for _, kib in result["rss_kib"]]
    print(f"requests sent {result['sent']}, 200 OK {result['ok']}, failed {result['failed']}")
    print(f"Postgres down from t={outage[0]:.0f}s to t={outage[1]:.0f}s")
    print(f"rows {rows}, distinct ids {distinct} (duplicates {rows - distinct}); "
          f"rows == requests served: {rows == result['ok'] + result['failed']}")
    print(f"gateway RSS KiB min {min(rss)}, max {max(rss)}, growth "
          f"{100 * (max(rss) - rss[0]) / rss[0]:.1f}% over the run")
    print(f"writer: {stats}")


if __name__ == "__main__":
    main()
