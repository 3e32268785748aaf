"""Scraping vLLM backends' /metrics: re-exported values, old names, per-interval ratio, failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.metrics.backends import BackendScraper, BackendState
from app.metrics.families import Metrics
from app.providers.vllm import VllmProvider
from app.simulator import SimOptions, create_app
from tests.providers.calls import header, received
from tests.servers import free_port, serve

LOGGER = "switchboard.metrics.backends"


def provider(base_url: str, **fields: Any) -> VllmProvider:
    """A vllm provider config entry."""
    return VllmProvider(type="vllm", base_url=base_url, **fields)


def value(metrics: Metrics, family: str, name: str = "gpu-a") -> float | None:
    """One backend's sample of a switchboard_backend_* family."""
    return metrics.registry.get_sample_value(f"switchboard_backend_{family}", {"provider": name})


async def post(session: aiohttp.ClientSession, url: str, body: Any = None) -> None:
    """POST JSON and insist on a 200."""
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()


async def chats(session: aiohttp.ClientSession, sim: str, count: int = 4) -> None:
    """Generations, which move the prefix cache counters by the configured hit rate."""
    for i in range(count):
        await post(session, f"{sim}/v1/chat/completions", {
            "model": "sim-model", "max_tokens": 2,
            "messages": [{"role": "user", "content": f"Tell me about the number {i} at length"}]})


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` for at most about 10 s."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached within 10 s")


@pytest.fixture(scope="module")
def legacy_simulator() -> Iterator[str]:
    """A simulator playing vLLM 0.9.2, which still serves the gpu_-prefixed metric names."""
    with serve(create_app(SimOptions(vllm_version="0.9.2"))) as url:
        yield url


@pytest.fixture
def metrics() -> Metrics:
    """A fresh set of families with its own registry."""
    return Metrics()


@pytest.fixture
async def reset_sims(session: aiohttp.ClientSession) -> AsyncIterator[list[str]]:
    """Simulators the test appends to are reset before use by the test and again at its end."""
    sims: list[str] = []
    try:
        yield sims
    finally:
        for sim in sims:
            await post(session, f"{sim}/_sim/reset")


async def fresh(session: aiohttp.ClientSession, sims: list[str], sim: str) -> str:
    """``sim`` reset now and registered for the reset at the test's end."""
    sims.append(sim)
    await post(session, f"{sim}/_sim/reset")
    return sim


@dataclass
class Fake:
    """A stand-in /metrics for what the simulator never serves; set ``status``/``body``."""

    url: str
    status: int = 200
    body: str = ""
    delay_s: float = 0.0


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    """A tiny aiohttp server whose GET /metrics answers what the test set."""
    port = free_port()
    state = Fake(url=f"http://127.0.0.1:{port}/v1")

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(state.delay_s)
        return web.Response(status=state.status, text=state.body)

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


# --- values from the simulator ---------------------------------------------------------------


@pytest.mark.parametrize("sim_fixture", ["simulator", "old_vllm_simulator", "legacy_simulator"])
async def test_gauges_reexported(request: pytest.FixtureRequest, sim_fixture: str,
                                 session: aiohttp.ClientSession, metrics: Metrics,
                                 reset_sims: list[str]) -> None:
    """Waiting, running, KV cache and hit ratio reach the registry under current and old names."""
    sim = await fresh(session, reset_sims, request.getfixturevalue(sim_fixture))
    await post(session, f"{sim}/_sim/state", {
        "num_requests_waiting": 3, "num_requests_running": 2, "kv_cache_usage_perc": 0.42,
        "prefix_cache_hit_rate": 0.5})
    await chats(session, sim)
    scraper = BackendScraper({"gpu-a": provider(f"{sim}/v1")}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    assert value(metrics, "up") == 1
    assert value(metrics, "requests_waiting") == 3
    assert value(metrics, "requests_running") == 2
    assert value(metrics, "kv_cache_usage_ratio") == pytest.approx(0.42)
    assert value(metrics, "prefix_cache_hit_ratio") == pytest.approx(0.5, abs=0.05)
    assert value(metrics, "scrape_errors_total") == 0
    state = scraper.state["gpu-a"]
    assert (state.up, state.waiting, state.running) == (True, 3, 2)
    assert state.kv_cache_usage == pytest.approx(0.42)
    assert state.scraped_at is not None


async def test_url_and_bearer(simulator: str, session: aiohttp.ClientSession, metrics: Metrics,
                              reset_sims: list[str]) -> None:
    """The URL is base_url less /v1/ plus /metrics, sent with the provider's key as Bearer."""
    sim = await fresh(session, reset_sims, simulator)
    config = provider(f"{sim}/v1/", api_key="sk-backend", headers={"X-Team": "ml"})
    scraper = BackendScraper({"gpu-a": config}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    [record] = await received(session, sim)
    assert record["path"] == "/metrics"
    assert header(record, "authorization") == "Bearer sk-backend"
    assert header(record, "x-team") == "ml"
    assert scraper.state["gpu-a"].up


async def test_prefix_ratio_is_per_interval(simulator: str, session: aiohttp.ClientSession,
                                            metrics: Metrics, reset_sims: list[str]) -> None:
    """The ratio covers the last interval, survives an idle one and a counter reset."""
    sim = await fresh(session, reset_sims, simulator)
    scraper = BackendScraper({"gpu-a": provider(f"{sim}/v1")}, session=session, metrics=metrics)

    async def interval(rate: float | None) -> float | None:
        if rate is not None:
            await post(session, f"{sim}/_sim/state", {"prefix_cache_hit_rate": rate})
            await chats(session, sim)
        await scraper.scrape_once("gpu-a")
        return value(metrics, "prefix_cache_hit_ratio")

    assert await interval(None) == 0  # no queries yet
    assert await interval(0.5) == pytest.approx(0.5, abs=0.05)
    assert await interval(0.25) == pytest.approx(0.25, abs=0.05)  # not the lifetime 0.375
    assert await interval(None) == pytest.approx(0.25, abs=0.05)  # idle: kept
    await post(session, f"{sim}/_sim/reset")  # counters drop to 0, as on a restart
    assert await interval(1.0) == pytest.approx(1.0)
    assert scraper.state["gpu-a"].prefix_cache_hit_ratio == pytest.approx(1.0)


# --- what the simulator never serves ----------------------------------------------------------

MULTI_ENGINE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 5.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries{engine="0",model_name="m"} 100.0
vllm:prefix_cache_queries{engine="1",model_name="m"} 300.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 10.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 90.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e9
"""


async def test_label_sets_combined(fake: Fake, session: aiohttp.ClientSession,
                                   metrics: Metrics) -> None:
    """Several engines: queues and counters summed, KV cache averaged, either counter spelling."""
    fake.body = MULTI_ENGINE
    scraper = BackendScraper({"gpu-a": provider(fake.url)}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    state = scraper.state["gpu-a"]
    assert (state.up, state.waiting, state.running) == (True, 7, 4)
    assert state.kv_cache_usage == pytest.approx(0.4)
    assert state.prefix_cache_hit_ratio == pytest.approx(0.25)
    assert value(metrics, "requests_waiting") == 7


async def test_very_old_hit_rate_gauge(fake: Fake, session: aiohttp.ClientSession,
                                       metrics: Metrics) -> None:
    """With no prefix counters, vllm:gpu_prefix_cache_hit_rate is the ratio."""
    fake.body = ("vllm:num_requests_waiting 1\nvllm:num_requests_running 0\n"
                 "vllm:gpu_cache_usage_perc 0.5\nvllm:gpu_prefix_cache_hit_rate 0.3\n")
    scraper = BackendScraper({"gpu-a": provider(fake.url)}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    assert value(metrics, "prefix_cache_hit_ratio") == pytest.approx(0.3)
    assert value(metrics, "kv_cache_usage_ratio") == pytest.approx(0.5)


@pytest.mark.parametrize(("status", "body"), [
    (500, "vllm:num_requests_waiting 1\n"),
    (200, "vllm:num_requests_waiting{engine=0} one\n"),
    (200, "<html>not metrics</html>\n"),
    (200, "process_cpu_seconds_total 3.0\n"),
])
async def test_bad_answers_count_as_errors(fake: Fake, status: int, body: str,
                                           session: aiohttp.ClientSession,
                                           metrics: Metrics) -> None:
    """A non-200, unparsable text or text without vLLM's metrics is a failed scrape."""
    fake.status, fake.body = status, body
    scraper = BackendScraper({"gpu-a": provider(fake.url)}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    assert value(metrics, "up") == 0
    assert value(metrics, "scrape_errors_total") == 1
    assert not scraper.state["gpu-a"].up


async def test_timeout_is_an_error(fake: Fake, session: aiohttp.ClientSession,
                                   metrics: Metrics) -> None:
    """A backend slower than the scrape timeout (at most the interval) counts as down."""
    fake.body, fake.delay_s = MULTI_ENGINE, 1.0
    config = provider(fake.url, metrics_interval_s=0.1)
    scraper = BackendScraper({"gpu-a": config}, session=session, metrics=metrics)
    await scraper.scrape_once("gpu-a")
    assert value(metrics, "up") == 0
    assert value(metrics, "scrape_errors_total") == 1


# --- down and up ---------------------------------------------------------------------------


async def test_dead_backend(session: aiohttp.ClientSession, metrics: Metrics,
                            caplog: pytest.LogCaptureFixture) -> None:
    """A closed port: up is 0, each failure counted, one warning, nothing raised."""
    config = provider(f"http://127.0.0.1:{free_port()}/v1")
    scraper = BackendScraper({"gpu-a": config}, session=session, metrics=metrics)
    assert value(metrics, "up") == 0
    assert value(metrics, "scrape_errors_total") == 0
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):
            await scraper.scrape_once("gpu-a")
    assert value(metrics, "up") == 0
    assert value(metrics, "scrape_errors_total") == 3
    assert scraper.state["gpu-a"] == BackendState()
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.WARNING]


async def test_backend_comes_back(session: aiohttp.ClientSession, metrics: Metrics,
                                  caplog: pytest.LogCaptureFixture) -> None:
    """Down, then served, then gone again: up flips 0, 1, 0 and each change is logged once."""
    port = free_port()
    scraper = BackendScraper({"gpu-a": provider(f"http://127.0.0.1:{port}/v1")},
                             session=session, metrics=metrics)
    seen: list[float | None] = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await scraper.scrape_once("gpu-a")
        seen.append(value(metrics, "up"))
        with serve(create_app(SimOptions()), port=port):
            for _ in range(2):
                await scraper.scrape_once("gpu-a")
                seen.append(value(metrics, "up"))
            last_seen = scraper.state["gpu-a"].scraped_at
        for _ in range(2):
            await scraper.scrape_once("gpu-a")
            seen.append(value(metrics, "up"))
    assert seen == [0, 1, 1, 0, 0]
    assert value(metrics, "scrape_errors_total") == 3
    assert scraper.state["gpu-a"].scraped_at == last_seen
    levels = [r.levelno for r in caplog.records if r.name == LOGGER]
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING]


# --- the loop ------------------------------------------------------------------------------


async def test_start_scrapes_in_background(simulator: str, session: aiohttp.ClientSession,
                                           metrics: Metrics, reset_sims: list[str]) -> None:
    """start() scrapes each enabled backend on its own; interval 0 is never scraped."""
    sim = await fresh(session, reset_sims, simulator)
    await post(session, f"{sim}/_sim/state", {"num_requests_waiting": 6})
    providers = {"gpu-a": provider(f"{sim}/v1", metrics_interval_s=0.05),
                 "gpu-off": provider(f"{sim}/v1", metrics_interval_s=0)}
    scraper = BackendScraper(providers, session=session, metrics=metrics)
    assert list(scraper.state) == ["gpu-a"]
    scraper.start()
    try:
        await until(lambda: value(metrics, "requests_waiting") == 6)
        await post(session, f"{sim}/_sim/state", {"num_requests_waiting": 1})
        await until(lambda: value(metrics, "requests_waiting") == 1)  # later scrapes follow
    finally:
        await scraper.aclose()
    assert value(metrics, "up", "gpu-off") is None
    await scraper.aclose()  # twice is harmless


async def test_follow_scrapes_the_new_set_from_then_on(
        simulator: str, session: aiohttp.ClientSession, metrics: Metrics,
        reset_sims: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """``follow`` (a reload): an added server is scraped from then on, starting with no state;
    a removed one is no longer scraped and its state and series are gone; an unchanged one is
    left alone."""
    sim = await fresh(session, reset_sims, simulator)
    scraper = BackendScraper({"gpu-a": provider(f"{sim}/v1", metrics_interval_s=0.05)},
                             session=session, metrics=metrics)
    scraper.start()
    try:
        await until(lambda: value(metrics, "up") == 1)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await scraper.follow({
                "gpu-a": provider(f"{sim}/v1", metrics_interval_s=0.05),
                "gpu-b": provider(f"{sim}/v1", metrics_interval_s=0.05)})
        await until(lambda: value(metrics, "up", "gpu-b") == 1)
        assert scraper.state["gpu-b"].up and scraper.state["gpu-a"].up
        state = scraper.state
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await scraper.follow({"gpu-b": provider(f"{sim}/v1", metrics_interval_s=0.05),
                                  "gpu-off": provider(f"{sim}/v1", metrics_interval_s=0)})
        assert scraper.state is state and list(state) == ["gpu-b"]
        for family in ("up", "requests_waiting", "scrape_errors_total"):
            assert value(metrics, family, "gpu-a") is None
        assert value(metrics, "up", "gpu-off") is None
        assert [task.get_name() for task in asyncio.all_tasks()
                if task.get_name().startswith("scrape-")] == ["scrape-gpu-b"]
    finally:
        await scraper.aclose()
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"backend gpu-b: scraping {sim}/metrics from now on",
        "backend gpu-a: no longer scraped (not in the config)"]
