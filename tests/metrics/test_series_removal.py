"""Series a reload replaces (the config version of ``switchboard_config_info``, a removed vLLM
backend's families): removed in a single process, left at their last value in multiprocess mode
(``--workers N``), where prometheus-client cannot remove one and would warn on stderr at every
reload. pytest turns warnings into errors, so a warning fails these tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from app.calllog import LogSink
from app.config import load_config
from app.gateway import Gateway
from app.metrics.backends import BackendScraper
from app.metrics.families import Metrics
from app.metrics.runtime import open_metrics
from app.pricing import PriceBook
from app.providers import build_provider
from app.providers.http import new_session
from app.providers.vllm import VllmProvider
from app.reload import ConfigReloader


def raw(provider: str) -> dict[str, object]:
    return {"providers": {"alpha": {"type": "mock"}, "beta": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": provider, "model": "mock-chat"}]}},
            "drift": {"enabled": False}}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    made = new_session()
    yield made
    await made.close()


def info(metrics: Metrics) -> dict[str, float]:
    """``switchboard_config_info``'s value per version, in this process's registry."""
    return {sample.labels["version"]: sample.value
            for family in metrics.config_info.collect() for sample in family.samples}


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_reload_replaces_the_config_info_series_without_a_warning(
        workers: int, tmp_path: Path, session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One process: the old version's series is removed. Multiprocess mode (as ``switchboard
    serve --workers 2`` sets it up): no warning, and the old version reads 0 until a restart."""
    metrics_dir = None
    if workers > 1:
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        # what prometheus-client's remove() looks at, when it is called
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw("alpha")))
    config = load_config(path, {})
    gateway = Gateway(config=config,
                      providers={n: build_provider(c, session)
                                 for n, c in config.providers.items()},
                      prices=PriceBook({}), sink=LogSink())
    runtime = open_metrics(config, session=session, engine=None, metrics_dir=metrics_dir)
    reloader = ConfigReloader(gateway, path, session=session, metrics=runtime, poll_s=0)
    old = gateway.snapshot.version
    try:
        path.write_text(yaml.safe_dump(raw("beta")))
        outcome = await reloader.reload(reason="test")
    finally:
        await gateway.aclose()
    assert outcome.changed
    expected = {outcome.version: 1.0} if workers == 1 else {old: 0.0, outcome.version: 1.0}
    assert info(runtime.metrics) == expected


async def test_a_removed_backend_leaves_no_warning_in_multiprocess_mode(
        tmp_path: Path, session: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A vLLM server a reload removes, in multiprocess mode: no warning; its ``up`` reads 0."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = Metrics(multiprocess=True)
    gpu = VllmProvider(type="vllm", base_url="http://127.0.0.1:9/v1", metrics_interval_s=0.05)
    scraper = BackendScraper({"gpu-a": gpu}, session=session, metrics=metrics)
    await scraper.follow({})
    await scraper.aclose()
    ups = [s.value for f in metrics.backend_up.collect() for s in f.samples]
    assert ups == [0.0]
