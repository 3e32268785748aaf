"""The version-changes counter of a target exists at 0 from its first answer, so that the first
change is an increase Prometheus sees (``SwitchboardModelVersionChanged``, the dashboards'
"Model version changes" annotations)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import MASTER_KEY, sim_config
from tests.metrics.scrape import Samples, scrape
from tests.metrics.test_endpoint import chat, gateway

CHANGES = "switchboard_upstream_version_changes_total"


@pytest.fixture
def sim(simulator: str) -> Iterator[httpx.Client]:
    """The shared simulator's process-wide knobs; reset afterwards."""
    client = httpx.Client(base_url=simulator, timeout=10)
    client.post("/_sim/reset").raise_for_status()
    try:
        yield client
    finally:
        client.post("/_sim/reset")
        client.close()


def changes(samples: Samples) -> dict[tuple[str, str], float]:
    """The exported changes series, by (model, provider)."""
    return {(labels["model"], labels["provider"]): v
            for (name, ls), v in samples.items() if name == CHANGES
            for labels in [dict(ls)]}


def two_targets(simulator: str) -> dict[str, Any]:
    """Public models ``chat`` and ``other``, both on provider ``sim``."""
    return sim_config(simulator, chat={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
                      other={"targets": [{"provider": "sim", "model": "gpt-4o"}]})


def test_the_series_is_exported_at_zero_from_the_first_answer(
        tmp_path: Path, simulator: str, sim: httpx.Client) -> None:
    """Before any answer no series; after a target's first answers, its series at 0, and
    only its own; the first change makes it 1, a flip back to a known version does not."""
    sim.post("/_sim/state", json={"fingerprint": "fp_first"}).raise_for_status()
    with gateway(tmp_path, two_targets(simulator)) as url:
        assert changes(scrape(url, MASTER_KEY)) == {}
        chat(url)
        chat(url, stream=True)
        assert changes(scrape(url, MASTER_KEY)) == {("chat", "sim"): 0}
        chat(url, model="other")
        assert changes(scrape(url, MASTER_KEY)) == {("chat", "sim"): 0, ("other", "sim"): 0}
        sim.post("/_sim/state", json={"fingerprint": "fp_second"}).raise_for_status()
        chat(url)
        assert changes(scrape(url, MASTER_KEY)) == {("chat", "sim"): 1, ("other", "sim"): 0}
        sim.post("/_sim/state", json={"fingerprint": "fp_first"}).raise_for_status()
        chat(url)
        assert changes(scrape(url, MASTER_KEY))[("chat", "sim")] == 1
