"""The simulator's vLLM queueing (``app.simulator.engine``): slots, the waiting queue, the KV
cache and the prefix cache, on their own and through ``/metrics``."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import pytest

from app.simulator.app import create_app
from app.simulator.engine import BLOCK, Engine, EngineOptions, block_hashes
from app.simulator.options import SimOptions
from tests.servers import serve
from tests.simulator.test_vllm import metric


def test_blocks_are_named_by_their_whole_prefix() -> None:
    a, b = list(range(40)), [99, *range(1, 40)]
    assert len(block_hashes(a)) == 2  # full blocks only
    assert block_hashes(a)[0] != block_hashes(b)[0]
    assert block_hashes(a)[1] != block_hashes(b)[1]  # same tokens, other prefix
    assert block_hashes(a + [7] * 16)[:2] == block_hashes(a)[:2]


def test_a_cached_prefix_skips_its_prefill() -> None:
    engine = Engine(EngineOptions(max_seqs=4, prefill_ms=1.0, tpot_ms=10.0))
    system = list(range(64))
    first, _ = engine.timing([*system, 1, 2, 3])
    again, _ = engine.timing([*system, 4, 5, 6, 7])
    assert first == pytest.approx(67 / 1000)
    assert again == pytest.approx((68 - 64) / 1000)  # the 4 system blocks hit
    assert (engine.prefix_queries, engine.prefix_hits) == (67 + 68, 64)


def test_the_prefix_cache_forgets_the_least_recently_used() -> None:
    engine = Engine(EngineOptions(max_seqs=1, kv_tokens=2 * BLOCK))
    a, b = [1] * BLOCK, [2] * BLOCK
    engine.prefill(a)
    engine.prefill(b)
    engine.prefill(a)  # a is now the most recent
    engine.prefill([3] * BLOCK)  # evicts b
    assert engine.prefill(a) == BLOCK
    assert engine.prefill(b) == 0


async def test_requests_beyond_the_slots_wait_in_order() -> None:
    engine = Engine(EngineOptions(max_seqs=2, tpot_ms=10.0, batch_slowdown=0.5))
    order: list[int] = []
    release = asyncio.Event()

    async def generate(n: int) -> float:
        async with engine.generation([n] * 10, 5) as (_ttft, tpot):
            order.append(n)
            await release.wait()
            return tpot

    tasks = [asyncio.create_task(generate(n)) for n in range(4)]
    await asyncio.sleep(0.01)
    assert (engine.running, engine.waiting, engine.kv_used) == (2, 2, 30)
    assert engine.kv_usage == pytest.approx(30 / 65_536)
    release.set()
    tpots = await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert tpots[0] == pytest.approx(0.010) and tpots[1] == pytest.approx(0.015)  # 2 running
    assert (engine.running, engine.waiting, engine.kv_used) == (0, 0, 0)


async def test_a_full_kv_cache_makes_requests_wait() -> None:
    engine = Engine(EngineOptions(max_seqs=8, kv_tokens=100))
    release = asyncio.Event()

    async def generate() -> None:
        async with engine.generation([1] * 50, 10):
            await release.wait()

    tasks = [asyncio.create_task(generate()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert (engine.running, engine.waiting) == (1, 1)  # 60 + 60 > 100
    waiting = asyncio.create_task(generate())
    await asyncio.sleep(0.01)
    waiting.cancel()  # a waiter that leaves gives its place up
    await asyncio.gather(waiting, return_exceptions=True)
    assert engine.waiting == 1
    release.set()
    await asyncio.gather(*tasks)
    assert (engine.running, engine.waiting, engine.kv_used) == (0, 0, 0)


def test_metrics_report_the_engine_under_load() -> None:
    options = SimOptions(tpot_ms=20.0, default_completion_tokens=10,
                         engine=EngineOptions(max_seqs=2, tpot_ms=20.0))
    chat = {"model": "m", "messages": [{"role": "system", "content": "You are terse. " * 20},
                                       {"role": "user", "content": "hi"}]}
    with serve(create_app(options)) as url, httpx.Client(base_url=url, timeout=30) as http, \
            concurrent.futures.ThreadPoolExecutor(6) as pool:
        calls = [pool.submit(http.post, "/v1/chat/completions", json=chat) for _ in range(6)]
        seen_waiting = 0.0
        while not all(c.done() for c in calls):
            text = http.get("/metrics").text
            seen_waiting = max(seen_waiting, metric(text, "vllm:num_requests_waiting"))
            assert metric(text, "vllm:num_requests_running") <= 2
        assert all(c.result().status_code == 200 for c in calls)
        text = http.get("/metrics").text
    assert seen_waiting >= 1
    assert metric(text, "vllm:num_requests_running") == 0
    queries = metric(text, "vllm:prefix_cache_queries_total")
    hits = metric(text, "vllm:prefix_cache_hits_total")
    assert queries > 0 and hits >= 5 * (queries / 6 // BLOCK - 1) * BLOCK  # all but the first
