"""Client CPU per admission of ``RedisLimiter``: one admission per round trip against fifty
sharing one pipelined round trip, next to a bare redis-py EVALSHA and ``LocalLimiter``.

    .venv/bin/python -m bench.limiter [--calls 20000] [--redis redis://127.0.0.1:6379/0]

CPU is this process's (``time.process_time``), so Redis's own work is not counted; wall time
per admission is shown for scale. Every admission charges a key and a team bucket (RPM, TPM and
a budget each, limits far above what the run uses), as a virtual key in a team costs. Runs on
uvloop, as ``switchboard serve`` does. Keys are written under a throwaway prefix and deleted.
The last two runs space calls 3 ms apart in an otherwise idle process, as a gateway at 300
requests/s is: there every call wakes the process, and turns of the event loop cost more than
the limiter's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import uvloop

from app.limits import Bucket, LocalLimiter, RedisLimiter, scripts
from app.limits.resp import RespClient

GAP_S = 0.003
"""The spacing of the spaced runs: 300 calls a second."""


def _buckets(i: int) -> tuple[Bucket, ...]:
    team = f"t{i % 100}"
    return (Bucket("key", f"k{i % 1000}", 1_000_000, 1_000_000_000, 1e6, team=team),
            Bucket("team", team, 1_000_000, 1_000_000_000, 1e6))


_CALLERS = [_buckets(i) for i in range(1000)]


def buckets_for(i: int) -> tuple[Bucket, ...]:
    """The buckets of key ``i % 1000``, one tuple per key as a cached caller has them."""
    return _CALLERS[i % 1000]


async def measure(label: str, calls: int, run: Callable[[int], Awaitable[None]],
                  batch: int) -> None:
    await run(min(calls, 500))  # warm: connections, script cache
    cpu, wall = time.process_time(), time.perf_counter()
    await run(calls)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{label:<44} {batch:>5} {cpu / calls * 1e6:>10.1f} {wall / calls * 1e6:>10.1f}")


async def main(calls: int, url: str) -> None:
    redis = aioredis.from_url(url)
    resp = RespClient.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    limiter = RedisLimiter(resp, timeout_s=1.0, fail_open=False, budget_fail_open=False,
                           prefix=prefix)
    await limiter.start()
    local = LocalLimiter()

    async def sequential(n: int) -> None:
        for i in range(n):
            decision = await limiter.admit(buckets_for(i), 100)
            assert decision.reason == "ok", decision

    async def batched(n: int) -> None:
        for first in range(0, n, 50):
            decisions = await asyncio.gather(*(limiter.admit(buckets_for(i), 100)
                                               for i in range(first, first + 50)))
            assert all(d.reason == "ok" for d in decisions)

    async def settles(n: int) -> None:
        for first in range(0, n, 50):
            for i in range(first, first + 50):
                limiter.settle(buckets_for(i), 100, 60, 0.0001)
            await limiter.flush()

    sha = scripts.sha1(scripts.ADMIT)

    async def bare_evalsha(n: int) -> None:
        for i in range(n):
            await redis.evalsha(sha, 3, f"{prefix}:x:{i % 1000}:req", f"{prefix}:x:tok",
                                f"{prefix}:x:spend", "0,100,1000000,-1,-1")

    async def bare_resp(n: int) -> None:
        for i in range(n):
            await resp.execute([("EVALSHA", sha, 3, f"{prefix}:x:{i % 1000}:req",
                                 f"{prefix}:x:tok", f"{prefix}:x:spend", "0,100,1000000,-1,-1")])

    async def idle(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(GAP_S)

    async def spaced(n: int) -> None:
        for i in range(n):
            await asyncio.sleep(GAP_S)
            buckets = buckets_for(i)
            decision = await limiter.admit(buckets, 100)
            decision.headers()
            limiter.settle(buckets, 100, 60, 0.0001, elapsed_s=0.002)

    async def in_process(n: int) -> None:
        for i in range(n):
            await local.admit(buckets_for(i), 100)

    print(f"{'':<44} {'batch':>5} {'CPU us':>10} {'wall us':>10}   (per call, {calls} calls)")
    try:
        await measure("redis-py EVALSHA, bare (no limiter)", calls, bare_evalsha, 1)
        await measure("RespClient EVALSHA, bare (the limiter's client)", calls, bare_resp, 1)
        await measure("RedisLimiter.admit, one per round trip", calls, sequential, 1)
        await measure("RedisLimiter.admit, 50 per round trip", calls, batched, 50)
        await measure("RedisLimiter.settle, 50 per round trip", calls, settles, 50)
        await measure("LocalLimiter.admit", calls, in_process, 1)
        spaced_calls = min(calls, 3000)
        await measure(f"idle event loop, woken every {GAP_S * 1000:g} ms", spaced_calls, idle, 1)
        await measure("  + admit, headers, settle each time", spaced_calls, spaced, 1)
        print("(the last two: a call at a time in an otherwise idle process, as in a gateway at "
              "300 req/s; their difference is what one call costs there)")
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        for first in range(0, len(keys), 1000):
            await redis.delete(*keys[first:first + 1000])
        await redis.aclose()
        await resp.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()
    uvloop.run(main(options.calls, options.redis))
