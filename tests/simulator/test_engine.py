"""The simulator's vLLM engine (``app.simulator.engine``): slots and the waiting queue, the KV
cache, the prefix cache and the timing they imply, driven by a hand-moved clock; then how the
simulator runs requests through it and reports it in ``/metrics``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import httpx
import pytest

from app.simulator.app import create_app
from app.simulator.core import Sim, engine_slot
from app.simulator.engine import BLOCK, Engine, EngineOptions, block_hashes
from app.simulator.options import SimOptions
from app.simulator.vllm import render_metrics
from tests.servers import serve
from tests.simulator.test_vllm import metric


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def engine(clock: Clock | None = None, **options: float) -> Engine:
    settings = {"max_seqs": 8, **options}
    return Engine(EngineOptions(**settings),  # type: ignore[arg-type]  # numbers by name
                  clock=clock or Clock())


def prompt(tag: int, tokens: int) -> list[int]:
    """``tokens`` ids that no other ``tag`` shares from the first block on."""
    return [tag, *range(1000, 1000 + tokens - 1)]


def test_blocks_are_named_by_their_whole_prefix() -> None:
    """A block's name covers every token before it: same tokens after another prefix differ."""
    a, b = list(range(40)), [99, *range(1, 40)]
    assert len(block_hashes(a)) == 2  # full blocks only
    assert block_hashes(a)[0] != block_hashes(b)[0]
    assert block_hashes(a)[1] != block_hashes(b)[1]
    assert block_hashes(a + [7] * 16)[:2] == block_hashes(a)[:2]


def test_requests_beyond_the_slots_wait_first_come_first_served() -> None:
    """With every slot taken the next requests wait, and get in in their order as slots free."""
    e = engine(max_seqs=2)
    a, b, c, d = (e.submit(prompt(n, 20), 4) for n in range(4))
    assert [s.admitted for s in (a, b, c, d)] == [True, True, False, False]
    assert (e.running, e.waiting) == (2, 2)
    assert e.finish(b) == [c]
    assert e.finish(a) == [d]
    assert (e.running, e.waiting) == (2, 0)
    assert e.finish(c) == [] and e.finish(d) == []
    assert (e.running, e.waiting, e.blocks_used) == (0, 0, 0)


def test_a_waiter_that_leaves_gives_its_place_up() -> None:
    """A request that leaves the queue is never admitted; the one behind it is."""
    e = engine(max_seqs=1)
    a, b, c = (e.submit(prompt(n, 20), 4) for n in range(3))
    e.leave(b)
    assert e.waiting == 1
    assert e.finish(a) == [c]
    assert not b.admitted


def test_a_cached_prefix_skips_its_prefill() -> None:
    """The prompt's cached leading blocks cost no prefill; the counters count tokens."""
    clock = Clock()
    e = engine(clock, prefill_ms=1.0)
    system = prompt(1, 64)
    first = e.submit([*system, 1, 2, 3], 4)
    assert e.first_token_in(first) == pytest.approx(67 / 1000)
    e.finish(first)
    clock.now += 1
    again = e.submit([*system, 4, 5, 6, 7], 4)
    assert again.hit == 64
    assert e.first_token_in(again) == pytest.approx(4 / 1000)  # the 4 system blocks hit
    assert (e.prefix_queries, e.prefix_hits) == (67 + 68, 64)


def test_the_last_prompt_token_is_always_computed() -> None:
    """A prompt wholly cached still prefills its last block, as vLLM recomputes its last
    token."""
    e = engine()
    ids = prompt(1, 2 * BLOCK)
    e.finish(e.submit(ids, 1))
    assert e.submit(ids, 1).hit == BLOCK
    assert e.cached(ids) == BLOCK


def test_prefills_run_one_at_a_time() -> None:
    """Requests let in together prefill one after the other; a later one waits only for the
    prefills still to do."""
    clock = Clock()
    e = engine(clock, prefill_ms=1.0)
    a, b = e.submit(prompt(1, 30), 4), e.submit(prompt(2, 20), 4)
    assert e.first_token_in(a) == pytest.approx(0.030)
    assert e.first_token_in(b) == pytest.approx(0.050)
    clock.now += 0.040
    c = e.submit(prompt(3, 10), 4)
    assert e.first_token_in(b) == pytest.approx(0.010)
    assert e.first_token_in(c) == pytest.approx(0.020)
    clock.now += 1
    assert e.first_token_in(c) == 0.0


def test_decode_slows_as_the_batch_grows() -> None:
    """Each other running request adds ``batch_slowdown`` of the single request's token time."""
    e = engine(tpot_ms=10.0, batch_slowdown=0.5)
    first = e.submit(prompt(0, 20), 4)
    assert e.tpot() == pytest.approx(0.010)
    others = [e.submit(prompt(n, 20), 4) for n in range(1, 4)]
    assert e.tpot() == pytest.approx(0.025)
    for seq in [first, *others[1:]]:
        e.finish(seq)
    assert e.tpot() == pytest.approx(0.010)


def test_kv_usage_counts_a_shared_prefix_once() -> None:
    """Running requests with a common prefix share its blocks; each holds its tail and its
    completion alone. Finished, they hold nothing, and the prefix stays cached."""
    e = engine(kv_tokens=10 * BLOCK)
    system = prompt(1, 4 * BLOCK)
    a = e.submit([*system, *range(8)], 8)  # 4 prompt blocks + 1 of its own (8 + 8 tokens)
    assert e.blocks_used == 5 and e.kv_usage == pytest.approx(0.5)
    b = e.submit([*system, *range(50, 58)], 8)
    assert e.blocks_used == 6 and e.kv_usage == pytest.approx(0.6)
    e.finish(a)
    e.finish(b)
    assert e.kv_usage == 0.0
    assert e.cached([*system, 9]) == 4 * BLOCK


def test_a_full_kv_cache_makes_requests_wait() -> None:
    """A request whose blocks do not fit waits even with slots free, until some are freed."""
    e = engine(max_seqs=8, kv_tokens=10 * BLOCK)
    a = e.submit(prompt(1, 6 * BLOCK), BLOCK)  # 6 + 1 blocks
    b = e.submit(prompt(2, 6 * BLOCK), BLOCK)
    assert (a.admitted, b.admitted, e.waiting) == (True, False, 1)
    small = e.submit(prompt(3, 8), 8)
    assert not small.admitted  # first come, first served: no overtaking
    assert e.finish(a) == [b, small]
    assert e.blocks_used == 8


def test_a_request_too_large_for_the_cache_runs_alone() -> None:
    """A request larger than the whole KV cache is let in when nothing else runs."""
    e = engine(kv_tokens=2 * BLOCK)
    big = e.submit(prompt(1, 100), 10)
    assert big.admitted and e.kv_usage == 1.0
    small = e.submit(prompt(2, 4), 4)
    assert not small.admitted
    assert e.finish(big) == [small]


def test_the_prefix_cache_forgets_the_least_recently_freed_first() -> None:
    """When a new block needs room, the cached block freed longest ago goes first."""
    e = engine(kv_tokens=3 * BLOCK)  # each request: 1 prompt block + 1 of its own
    a, b, c = prompt(1, BLOCK + 1), prompt(2, BLOCK + 1), prompt(3, BLOCK + 1)
    e.finish(e.submit(a, 15))
    e.finish(e.submit(b, 15))
    e.finish(e.submit(a, 15))  # a's block is now the most recently freed
    e.finish(e.submit(c, 15))  # needs one block: b's goes
    assert (e.cached(a), e.cached(b), e.cached(c)) == (BLOCK, 0, BLOCK)


def test_a_prefix_outlives_its_tail() -> None:
    """A finished prompt's deeper blocks are evicted before its leading ones."""
    e = engine(kv_tokens=4 * BLOCK)
    first = prompt(1, 2 * BLOCK + 1)
    e.finish(e.submit(first, 15))  # 2 prompt blocks, then 1 of its own
    e.submit(prompt(2, 2 * BLOCK + 1), 15)  # 3 new blocks: one cached block must go
    assert e.cached(first) == BLOCK


def test_held_blocks_are_never_evicted() -> None:
    """The blocks of running requests stay cached however many others come and go."""
    e = engine(kv_tokens=6 * BLOCK)
    held = prompt(1, 2 * BLOCK + 1)
    e.submit(held, 15)
    for n in range(2, 6):
        e.finish(e.submit(prompt(n, 2 * BLOCK + 1), 15))
    assert e.cached(held) == 2 * BLOCK


def test_forget_empties_the_idle_cache_and_the_counters() -> None:
    """``forget`` (``POST /_sim/reset``) drops cached blocks nobody holds and zeroes the
    counters; running requests keep theirs."""
    e = engine()
    idle, held = prompt(1, 40), prompt(2, 40)
    e.finish(e.submit(idle, 4))
    e.submit(held, 4)
    e.forget()
    assert (e.prefix_queries, e.prefix_hits) == (0, 0)
    assert (e.cached(idle), e.cached(held)) == (0, 2 * BLOCK)


async def test_engine_slot_wakes_waiters_in_order_and_drops_cancelled_ones() -> None:
    """Through ``engine_slot`` a queued request waits until a slot frees, in order; one
    cancelled while queued leaves the queue."""
    sim = Sim(SimOptions(engine=EngineOptions(max_seqs=1)))
    assert sim.engine is not None
    e, order, release = sim.engine, [], asyncio.Event()

    async def generate(n: int) -> None:
        async with engine_slot(sim, e, prompt(n, 20), 4):
            order.append(n)
            await release.wait()

    tasks = [asyncio.create_task(generate(n)) for n in range(4)]
    for _ in range(4):  # each task runs up to its wait
        await asyncio.sleep(0)
    assert (e.running, e.waiting) == (1, 3)
    tasks[2].cancel()
    await asyncio.gather(tasks[2], return_exceptions=True)
    assert (e.running, e.waiting) == (1, 2)
    release.set()
    await asyncio.gather(tasks[0], tasks[1], tasks[3])
    assert order == [0, 1, 3]
    assert (e.running, e.waiting, e.blocks_used, sim.waiters) == (0, 0, 0, {})


@pytest.mark.parametrize(("version", "usage_name", "prefix"), [
    ("0.12.0", "vllm:kv_cache_usage_perc", "vllm:prefix_cache"),
    ("0.9.2", "vllm:gpu_cache_usage_perc", "vllm:gpu_prefix_cache")])
def test_metrics_report_the_engine(version: str, usage_name: str, prefix: str) -> None:
    """``/metrics`` shows the engine's running and waiting requests, KV-cache usage and
    prefix-cache counters, under the version's names."""
    sim = Sim(SimOptions(vllm_version=version,
                         engine=EngineOptions(max_seqs=1, kv_tokens=20 * BLOCK)))
    assert sim.engine is not None
    system = prompt(1, 2 * BLOCK)
    sim.engine.finish(sim.engine.submit([*system, 1], 15))
    sim.engine.submit([*system, 2], 15)
    sim.engine.submit(prompt(3, 8), 8)
    text = render_metrics(sim)
    assert metric(text, "vllm:num_requests_running") == 1
    assert metric(text, "vllm:num_requests_waiting") == 1
    assert metric(text, usage_name) == pytest.approx(3 / 20)
    assert metric(text, f"{prefix}_queries_total") == 2 * (2 * BLOCK + 1)
    assert metric(text, f"{prefix}_hits_total") == 2 * BLOCK


def test_requests_queue_behind_a_busy_slot_over_http() -> None:
    """With the engine on, a stream holds its slot until its client leaves, a second request
    waits for it meanwhile (as ``/metrics`` shows), and chat, streams and completions all go
    through the prefix cache."""
    options = SimOptions(engine=EngineOptions(max_seqs=1, tpot_ms=50.0))
    system = {"role": "system", "content": "You answer questions about orders. " * 20}
    long = {"model": "m", "max_tokens": 1000, "stream": True, "messages": [
        system, {"role": "user", "content": "Tell me everything."}]}
    short = {"model": "m", "max_tokens": 2, "messages": [
        system, {"role": "user", "content": "Where is my order?"}]}
    with serve(create_app(options)) as url, httpx.Client(base_url=url, timeout=30) as http, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        with http.stream("POST", "/v1/chat/completions", json=long,
                         headers={"X-Sim-Completion-Tokens": "1000"}) as streaming:
            chunks = streaming.iter_bytes()  # kept: a dropped iterator closes the stream
            next(chunks)  # admitted: its first token is out
            queued = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=short,
                                 timeout=30)
            deadline = time.monotonic() + 20
            while metric(http.get("/metrics").text, "vllm:num_requests_waiting") < 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.01)
            assert metric(http.get("/metrics").text, "vllm:num_requests_running") == 1
        assert queued.result().status_code == 200  # let in once the stream's client left
        completion = http.post("/v1/completions", json={
            "model": "m", "prompt": "hello " * 40, "max_tokens": 2})
        assert completion.status_code == 200
        text = http.get("/metrics").text
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "vllm:num_requests_waiting") == 0
    assert metric(text, "vllm:prefix_cache_hits_total") >= 3 * BLOCK  # the system prompt
    assert metric(text, "vllm:prefix_cache_queries_total") >= 2 * 3 * BLOCK + 40
