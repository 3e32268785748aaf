"""Memory and CPU of long streams held open at once: a gateway's resident memory with N
concurrent slow streams against its memory idle, and its CPU per second while they run.

    .venv/bin/python -m bench.stream_memory [--streams 500] [--seconds 10]

The simulator answers each stream with a token every 100 ms (``--tpot-ms 100``), so the streams
stay open for the whole run; the client (aiohttp, in this process) reads them all. The gateway
runs with the call log off and the master key, on core 0.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.calllog_overhead import KEY, gateway_env, switchboard
from bench.metrics_overhead import cpu_seconds
from tests.servers import free_port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def hold(url: str, streams: int, seconds: float, pid: int) -> tuple[float, float, int]:
    """(peak RSS MiB, gateway CPU seconds per wall second, chunks read) with ``streams`` open."""
    body = {"model": "chat", "stream": True, "max_tokens": 4000,
            "messages": [{"role": "user", "content": "a long answer please"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    chunks = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal chunks
            async with session.post(f"{url}/v1/chat/completions", json=body,
                                    headers=headers) as response:
                response.raise_for_status()
                async for _ in response.content:
                    chunks += 1

        tasks = [asyncio.ensure_future(one()) for _ in range(streams)]
        await asyncio.sleep(2)  # all open and streaming
        peak = rss_mib(pid)
        before, started = cpu_seconds(pid), time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mib(pid))
        cpu = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return peak, cpu, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-streambench-"))
    with switchboard("simulate", "--tpot-ms", "100", port=free_port(), core=1) as sim:
        raw = {"providers": {"sim": {"type": "openai", "base_url": f"{sim}/v1",
                                     "api_key": "sk-sim",
                                     # answers long enough to outlast the run
                                     "headers": {"X-Sim-Completion-Tokens": "4000"}}},
               "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}},
               "drift": {"embedding": {"sample_rate": 0}}}
        with switchboard("serve", port=free_port(), env=gateway_env(raw, work), core=0) as url:
            idle = rss_mib(url.pid)
            peak, cpu, chunks = asyncio.run(hold(str(url), args.streams, args.seconds, url.pid))
    per = (peak - idle) * 1024 / args.streams
    print(f"{args.streams} streams open for {args.seconds:.0f} s: gateway RSS {idle:.1f} -> "
          f"{peak:.1f} MiB ({per:.0f} KiB per stream), CPU {cpu:.2f} cores "
          f"({cpu / args.streams * 1e6:.0f} us per stream-second; {chunks} chunks read)")


if __name__ == "__main__":
    main()
