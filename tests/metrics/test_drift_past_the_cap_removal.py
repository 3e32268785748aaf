"""A target a live reload removes loses its ``switchboard_upstream_model_info`` series, the
``other`` one of versions past the cap included, even when its current version is one of its
first ``MAX_VERSIONS`` again (single process)."""

from __future__ import annotations

from app.config import Drift
from app.metrics.baselines import MemoryBaselines
from app.metrics.drift import DriftMonitor
from app.metrics.families import MAX_VERSIONS, OTHER_VERSION, Metrics
from tests.metrics.test_drift import answer


def info_series(metrics: Metrics) -> dict[tuple[str, str], float]:
    """``switchboard_upstream_model_info``'s value per (response model, fingerprint)."""
    return {(s.labels["response_model"], s.labels["system_fingerprint"]): s.value
            for family in metrics.model_info.collect() for s in family.samples}


def test_the_other_series_goes_with_its_target_after_the_version_came_back() -> None:
    metrics = Metrics()
    mon = DriftMonitor(Drift(baseline_size=10, window=10, evaluate_every=5), metrics=metrics,
                       store=MemoryBaselines())
    for i in range(1, MAX_VERSIONS + 3):  # two versions past the cap
        mon.observe("chat", "sim", 20, answer(fingerprint=f"fp_{i}"))
    mon.observe("chat", "sim", 20, answer(fingerprint="fp_1"))  # back to the first version
    before = info_series(metrics)
    assert before[(OTHER_VERSION, OTHER_VERSION)] == 0 and before[("gpt-4o-mini", "fp_1")] == 1
    mon.set_targets([])
    assert info_series(metrics) == {}
