"""Upstream versions shared by workers (``app.metrics.versions``): two monitors on one metrics
folder stand for two workers of ``switchboard serve --workers 2``, each with its own registry
(multiprocess mode sums their counters and takes the most recent info gauge)."""

from __future__ import annotations

from pathlib import Path

from app.config import Drift
from app.metrics.baselines import MemoryBaselines
from app.metrics.drift import DriftMonitor
from app.metrics.families import MAX_VERSIONS, Metrics
from app.metrics.versions import VersionSlots
from tests.metrics.test_drift import answer

CHANGES = "switchboard_upstream_version_changes_total"
INFO = "switchboard_upstream_model_info"


def workers(folder: Path, n: int = 2) -> list[tuple[DriftMonitor, Metrics]]:
    out = []
    for _ in range(n):
        metrics = Metrics(multiprocess=True)
        out.append((DriftMonitor(Drift(), metrics=metrics, store=MemoryBaselines(),
                                 versions=VersionSlots(folder)), metrics))
    return out


def see(worker: tuple[DriftMonitor, Metrics], fingerprint: str) -> None:
    worker[0].observe("chat", "sim", 100, answer(fingerprint=fingerprint))


def total(ws: list[tuple[DriftMonitor, Metrics]]) -> float:
    """The version changes of all workers, as the merged exposition sums them."""
    return sum(s.value for _, m in ws for family in m.registry.collect()
               for s in family.samples if s.name == CHANGES)


def test_one_change_counts_once_whichever_worker_sees_it_first(tmp_path: Path) -> None:
    ws = workers(tmp_path)
    a, b = ws
    see(a, "fp_1")
    see(b, "fp_1")
    see(b, "fp_2")  # the change
    see(a, "fp_2")  # the same change, seen by the other worker
    see(a, "fp_1")  # flips back and forth: no change
    see(b, "fp_1")
    assert total(ws) == 1
    late = workers(tmp_path, 1)[0]  # a worker that starts after (a restarted one)
    see(late, "fp_1")
    see(late, "fp_3")  # seen there first: counted there, once
    see(a, "fp_3")
    see(b, "fp_3")
    assert total([*ws, late]) == 2


def test_a_worker_counts_a_change_it_did_not_see_the_version_before(tmp_path: Path) -> None:
    """A worker whose first answer comes with a new version still counts it when another
    worker had seen an older one (nobody else saw the change)."""
    a, b = workers(tmp_path)
    see(a, "fp_1")
    see(b, "fp_2")
    assert total([a, b]) == 1
    assert b[0].events[-1]["before"] is None


def test_rotating_fingerprints_keep_one_set_of_series_for_all_workers(tmp_path: Path) -> None:
    """Both workers export the same first ``MAX_VERSIONS`` versions under their own labels,
    so the merged family has at most ``MAX_VERSIONS + 1`` series per target; changes to
    versions past the cap are counted by each worker that sees them."""
    ws = workers(tmp_path)
    past = 4
    for i in range(MAX_VERSIONS + past):
        for worker in ws if i % 2 else reversed(ws):
            see(worker, f"fp_{i}")
    labels = {s.labels["system_fingerprint"] for _, m in ws for family in m.registry.collect()
              if family.name == INFO for s in family.samples}
    assert len(labels) == MAX_VERSIONS + 1
    assert total(ws) == MAX_VERSIONS - 1 + len(ws) * past


def test_without_a_folder_versions_stay_in_the_process() -> None:
    slots = VersionSlots()
    known: dict[tuple[str, str], int] = {}
    assert slots.place(("m", "p", "u"), known, ("a", "1")) == (0, True)
    assert slots.place(("m", "p", "u"), known, ("a", "2")) == (1, True)
    assert slots.place(("m", "p", "u"), known, ("a", "1")) == (0, False)
