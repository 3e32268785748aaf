"""Each routing strategy's choice under planted conditions (pure functions: no gateway)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from app.metrics.backends import BackendState
from app.pricing import Price, PriceBook
from app.providers.base import Target
from app.routing.router import prefix_key
from app.routing.state import TargetStates, TargetStats
from app.routing.strategies import STRATEGIES, Choice
from app.routing.strategies import latency as latency_strategy

A, B, C = (Target(provider=p, model=f"m-{p}") for p in ("a", "b", "c"))


def choice(*targets: Target, stats: dict[str, TargetStats] | None = None,
           **fields: object) -> Choice:
    """``stats`` by provider name (a target is not hashable: its params are a dict)."""
    by_key = {(p, f"m-{p}"): s for p, s in (stats or {}).items()}
    return Choice(targets=targets or (A, B, C), stats=by_key,
                  prices=fields.pop("prices", PriceBook({})),  # type: ignore[arg-type]
                  rng=random.Random(7), **fields)  # type: ignore[arg-type]


def test_ordered_keeps_the_config_order() -> None:
    assert STRATEGIES["ordered"](choice()) == [A, B, C]


def test_weighted_firsts_follow_the_weights_and_every_target_stays_a_fallback() -> None:
    heavy = Target(provider="a", model="m-a", weight=3.0)
    firsts: Counter[str] = Counter()
    made = choice(heavy, B)
    for _ in range(20_000):
        order = STRATEGIES["weighted"](made)
        assert sorted(t.provider for t in order) == ["a", "b"]
        firsts[order[0].provider] += 1
    assert abs(firsts["a"] / 20_000 - 0.75) < 0.02


def test_least_busy_prefers_the_fewest_in_flight() -> None:
    stats = {"a": TargetStats(in_flight=5), "b": TargetStats(in_flight=1),
             "c": TargetStats(in_flight=3)}
    assert STRATEGIES["least_busy"](choice(stats=stats)) == [B, C, A]
    assert STRATEGIES["least_busy"](choice()) == [A, B, C]  # nothing known: config order


def test_latency_prefers_the_fastest_measures_the_unknown_and_shuns_the_failing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency_strategy, "EXPLORE", 0.0)
    now = time.monotonic()
    fast, slow = TargetStats(ewma_ms=50, sampled_at=now), TargetStats(ewma_ms=400, sampled_at=now)
    assert STRATEGIES["latency"](choice(A, B, stats={"a": slow, "b": fast})) == [B, A]
    assert STRATEGIES["latency"](choice(A, B, C, stats={"a": slow, "b": fast})) == [C, B, A]
    failing = TargetStats(ewma_ms=10, sampled_at=now, failures=2)
    assert STRATEGIES["latency"](choice(A, B, stats={"a": failing, "b": slow})) == [B, A]
    stale = TargetStats(ewma_ms=900, sampled_at=now - 3600)  # measured long ago: try again
    assert STRATEGIES["latency"](choice(A, B, stats={"a": fast, "b": stale}))[0] == B


def test_latency_puts_a_target_that_only_ever_failed_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A target whose every attempt failed (a spent quota's 429s) has no sample, yet goes last
    until an attempt succeeds, not first as an unmeasured one would."""
    monkeypatch.setattr(latency_strategy, "EXPLORE", 0.0)
    states = TargetStates()
    quota = states.started(A)
    states.ended(quota)
    states.failed(quota)
    measured = states.started(B)
    states.answered(measured, 400.0)
    states.ended(measured)
    made = Choice(targets=(A, B, C), stats=states.by_target, prices=PriceBook({}),
                  rng=random.Random(7))
    assert STRATEGIES["latency"](made) == [C, B, A]  # unknown, measured, failing
    again = states.started(A)
    states.answered(again, 100.0)  # it answered: measured now, and faster than B
    states.ended(again)
    assert STRATEGIES["latency"](made) == [C, A, B]


def test_latency_keeps_a_target_failing_since_a_stale_sample_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A target that worked once, then failed for longer than STALE_S, stays last: its old
    sample makes it unknown, but its failures since say it is down."""
    monkeypatch.setattr(latency_strategy, "EXPLORE", 0.0)
    now = time.monotonic()
    down = TargetStats(ewma_ms=10, sampled_at=now - latency_strategy.STALE_S - 60, failures=40)
    fine = TargetStats(ewma_ms=400, sampled_at=now)
    assert STRATEGIES["latency"](choice(A, B, stats={"a": down, "b": fine})) == [B, A]
    never = TargetStats(failures=1)  # no sample at all
    assert STRATEGIES["latency"](choice(A, B, C, stats={"a": never, "b": fine})) == [C, B, A]


def test_latency_explores_a_share_of_calls() -> None:
    now = time.monotonic()
    stats = {"a": TargetStats(ewma_ms=50, sampled_at=now), "b": TargetStats(ewma_ms=400,
                                                                         sampled_at=now)}
    made = choice(A, B, stats=stats)
    firsts = Counter(STRATEGIES["latency"](made)[0].provider for _ in range(20_000))
    assert 0.01 < firsts["b"] / 20_000 < 0.05  # EXPLORE picks at random: half land on b


def test_cost_puts_the_cheapest_for_this_call_first_and_unpriced_last() -> None:
    prices = PriceBook({"m-a": Price(input=10.0, output=30.0), "m-b": Price(input=1.0,
                                                                            output=100.0)})
    long_prompt = choice(prices=prices, prompt_tokens=100_000, output_tokens=100)
    assert STRATEGIES["cost"](long_prompt) == [B, A, C]
    long_answer = choice(prices=prices, prompt_tokens=10, output_tokens=10_000)
    assert STRATEGIES["cost"](long_answer) == [A, B, C]


def scraped(waiting: float = 0.0, kv: float = 0.1, up: bool = True) -> BackendState:
    return BackendState(up=up, waiting=waiting, kv_cache_usage=kv, scraped_at=time.time())


def test_vllm_load_keeps_a_prefix_on_its_home_server_until_it_is_saturated() -> None:
    idle = {"a": scraped(), "b": scraped(), "c": scraped()}
    homes = {STRATEGIES["vllm_load"](choice(backends=idle, affinity=k))[0].provider
             for k in range(200)}
    assert homes == {"a", "b", "c"}  # prefixes spread over the pool
    home = STRATEGIES["vllm_load"](choice(backends=idle, affinity=42))[0]
    assert all(STRATEGIES["vllm_load"](choice(backends=idle, affinity=42))[0] == home
               for _ in range(10))
    busy = {**idle, home.provider: scraped(waiting=20)}
    moved = STRATEGIES["vllm_load"](choice(backends=busy, affinity=42))
    assert moved[0] != home and moved[-1] == home
    others = [t for t in (A, B, C) if t != home]
    loads = {others[0].provider: scraped(waiting=3, kv=0.5),
             others[1].provider: scraped(waiting=1, kv=0.2)}
    spread = STRATEGIES["vllm_load"](choice(backends={**busy, **loads}, affinity=42))
    assert spread == [others[1], others[0], home]
    down = {**idle, home.provider: scraped(up=False)}
    assert STRATEGIES["vllm_load"](choice(backends=down, affinity=42))[0] != home


def test_vllm_load_tries_a_server_it_knows_nothing_of_last() -> None:
    """A server never scraped successfully (a pod not ready yet, one just added by a reload,
    or one with no scrape) is tried after every scraped one, even for the prefixes it is home
    to; with no scrape at all the order is the rendezvous order, home first."""
    unscraped = BackendState(up=False)  # its first scrape failed, or has not happened yet
    for newcomer in (unscraped, None):
        for k in range(50):
            pool = {"a": scraped(), "b": scraped(waiting=20), "c": newcomer}
            backends = {p: s for p, s in pool.items() if s is not None}
            assert STRATEGIES["vllm_load"](choice(backends=backends, affinity=k))[-1] == C
    unknown = [STRATEGIES["vllm_load"](choice(affinity=k))[0].provider for k in range(50)]
    assert set(unknown) == {"a", "b", "c"}
    known = [STRATEGIES["vllm_load"](choice(backends={p: scraped() for p in "abc"},
                                            affinity=k))[0].provider for k in range(50)]
    assert unknown == known


def test_stats_track_in_flight_and_a_moving_average() -> None:
    states = TargetStates()
    stats = states.started(A)
    assert states.of(A).in_flight == 1
    states.answered(stats, 100.0)
    states.answered(stats, 200.0)
    assert stats.ewma_ms == pytest.approx(120.0)
    states.failed(stats)
    states.ended(stats)
    assert (stats.in_flight, stats.failures) == (0, 1)


def test_the_prefix_key_is_the_system_prompt_or_else_the_first_message() -> None:
    system = {"role": "system", "content": "You are a support agent."}
    one = {"messages": [system, {"role": "user", "content": "where is my order?"}]}
    two = {"messages": [system, {"role": "user", "content": "refund please"},
                        {"role": "assistant", "content": "ok"}]}
    assert prefix_key(one) == prefix_key(two) == [system]
    turn1 = {"messages": [{"role": "user", "content": "hi"}]}
    turn2 = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "?"},
                          {"role": "user", "content": "more"}]}
    assert prefix_key(turn1) == prefix_key(turn2) != prefix_key(one)
    assert prefix_key({"prompt": "Once upon"}) == "Once upon"
    assert prefix_key(None) is None


def test_vllm_load_moves_the_prefixes_of_a_down_server_to_one_new_home() -> None:
    """While a prefix's home server is down, its calls go to the next server up in its
    rendezvous order whatever the others' momentary loads (short of busy), so they keep one
    prefix cache (they went to the least loaded server, which changed call to call)."""
    idle = {"a": scraped(), "b": scraped(), "c": scraped()}
    for k in range(30):
        ranked = STRATEGIES["vllm_load"](choice(backends=idle, affinity=k))
        home, second = ranked[0], ranked[1]
        down = {**idle, home.provider: scraped(up=False)}
        for waiting, kv in ((0, 0.1), (5, 0.9), (7, 0.5)):
            loaded = {**down, second.provider: scraped(waiting=waiting, kv=kv)}
            moved = STRATEGIES["vllm_load"](choice(backends=loaded, affinity=k))
            assert moved[0] == second and moved[-1] == home
        busy = {**down, second.provider: scraped(waiting=20)}
        spilled = STRATEGIES["vllm_load"](choice(backends=busy, affinity=k))
        assert spilled[0] not in (home, second)  # the new home is saturated: another one
