"""``vllm_load`` against ``weighted`` over a pool of 3 vLLM servers, at the same load: mean and
p99 latency, and the pool's prefix-cache hit rate (issue 10).

    .venv/bin/python -m bench.vllm_routing [--rates 20,40] [--duration 20]

The 3 servers are simulators playing vLLM's queueing (``switchboard simulate --vllm-max-seqs``:
decode slots, a waiting queue, a KV cache and a prefix cache; ``app.simulator.engine``). The
workload is chat from many users of a few dozen applications: each call starts with one of
``--prefixes`` long system prompts (about 600 tokens, drawn uniformly) and ends with a short
message of its own, so that a server whose prefix cache holds an application's prompt skips
most of the prefill. Each server's KV cache holds about half of the prompts: spread at random,
every server sees every prompt and its cache churns; kept to a home server, each holds its
share. Calls arrive open-loop (Poisson) at each rate, the same seeded sequence for both
strategies; the gateway scrapes each server's ``/metrics`` every 0.25 s. Call log off.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.calllog_overhead import KEY, gateway_env, switchboard
from tests.servers import free_port

SERVERS = 3
SYSTEM_WORDS = 300
"""Words per system prompt (about two tokens each in the simulator's count)."""
SIM_ARGS = ["--vllm-max-seqs", "4", "--vllm-kv-tokens", "4096", "--vllm-prefill-ms", "0.5",
            "--tpot-ms", "10", "--default-completion-tokens", "20"]


def prompts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["alpha", "bravo", "delta", "gamma", "kilo", "lima", "oscar", "sierra", "tango",
             "zulu", "policy", "refund", "order", "account", "shipping", "invoice"]
    return [f"You are assistant {n}. " + " ".join(rng.choice(words) for _ in range(SYSTEM_WORDS))
            for n in range(count)]


def schedule(rate: float, duration_s: float, systems: list[str], seed: int
             ) -> list[tuple[float, dict[str, Any]]]:
    """(send time, body) of every call: Poisson arrivals, a system prompt each, a unique ask."""
    rng = random.Random(seed)
    calls: list[tuple[float, dict[str, Any]]] = []
    t, n = 0.0, 0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return calls
        n += 1
        calls.append((t, {"model": "chat", "max_tokens": 20, "messages": [
            {"role": "system", "content": rng.choice(systems)},
            {"role": "user", "content": f"question {n}: where is my order {rng.random()}?"}]}))


async def drive(url: str, calls: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """Send every call at its time; each call's latency in ms."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {KEY}"}) as session:
        start = time.perf_counter()

        async def one(at: float, body: dict[str, Any]) -> None:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            sent = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=body) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"a call failed: {answer.status}")
            latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(one(at, body) for at, body in calls))
    return latencies


def prefix_counts(urls: Sequence[str]) -> tuple[float, float]:
    queries = hits = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("vllm:prefix_cache_queries_total{"):
                queries += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_hits_total{"):
                hits += float(line.rsplit(" ", 1)[1])
    return queries, hits


def run(strategy: str, calls: list[tuple[float, dict[str, Any]]], work: Path
        ) -> dict[str, float]:
    """One strategy on fresh servers (empty caches): latency and prefix-cache hit rate."""
    with ExitStack() as stack:
        urls = [stack.enter_context(switchboard("simulate", *SIM_ARGS, port=free_port()))
                for _ in range(SERVERS)]
        config = {
            "providers": {f"gpu-{i}": {"type": "vllm", "base_url": f"{url}/v1",
                                       "metrics_interval_s": 0.25}
                          for i, url in enumerate(urls)},
            "models": {"chat": {"strategy": strategy, "targets": [
                {"provider": f"gpu-{i}", "model": "llama"} for i in range(SERVERS)]}},
            "drift": {"embedding": {"sample_rate": 0}}}
        with switchboard("serve", port=free_port(), env=gateway_env(config, work)) as gateway:
            latencies = asyncio.run(drive(gateway, calls))
        queries, hits = prefix_counts(urls)
    return {"mean": statistics.fmean(latencies),
            "p50": statistics.median(latencies),
            "p99": statistics.quantiles(latencies, n=100)[98],
            "hit": hits / queries if queries else 0.0, "calls": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,40", help="calls per second, comma-separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--prefixes", type=int, default=24, help="distinct system prompts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-vllm-routing-"))
    systems = prompts(args.prefixes, args.seed)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        calls = schedule(rate, args.duration, systems, args.seed)
        results = {s: run(s, calls, work) for s in ("weighted", "vllm_load")}
        rows.append((rate, results))
    print(f"\n{SERVERS} vLLM servers (simulated: {' '.join(SIM_ARGS)}), {args.prefixes} system "
          f"prompts, {args.duration:g} s per run\n")
    print("| req/s | strategy | calls | mean ms | p50 ms | p99 ms | prefix-cache hits |")
    print("|---|---|---|---|---|---|---|")
    for rate, results in rows:
        for strategy, r in results.items():
            print(f"| {rate:g} | {strategy} | {r['calls']:.0f} | {r['mean']:.0f} | "
                  f"{r['p50']:.0f} | {r['p99']:.0f} | {r['hit']:.0%} |")
        w, v = results["weighted"], results["vllm_load"]
        print(f"| {rate:g} | vllm_load / weighted | | {v['mean'] / w['mean']:.2f}x | "
              f"{v['p50'] / w['p50']:.2f}x | {v['p99'] / w['p99']:.2f}x | |")


if __name__ == "__main__":
    main()
