"""Load of each self-hosted vLLM backend, scraped from its ``/metrics`` and re-exported.

Contract:

- Every ``vllm`` provider with ``metrics_interval_s > 0`` is scraped every that many seconds, by
  one background task per provider (``start``/``aclose``), at
  ``server_root(base_url) + "/metrics"`` (``base_url`` less a trailing ``/v1``), with the
  provider's headers and its ``api_key`` as a Bearer token. Each scrape waits at most
  ``min(interval, 2 s)``.
- A successful scrape sets, per provider, ``switchboard_backend_up`` to 1 and the queue depths
  (``vllm:num_requests_waiting``/``_running``, summed over label sets), the KV cache use
  (``vllm:kv_cache_usage_perc``, before vLLM 0.10 ``vllm:gpu_cache_usage_perc``: a 0..1
  fraction, averaged over label sets, i.e. over engines) and the prefix cache hit ratio.
- The hit ratio is hits over queries of the prefix cache counters (``vllm:prefix_cache_*_total``,
  before 0.10 ``vllm:gpu_prefix_cache_*_total``) between the previous scrape and this one (the
  first scrape: since the server started). A counter that went backwards (a restart) counts from
  zero; an interval without queries keeps the previous ratio. A server with neither counter but
  the very old gauge ``vllm:gpu_prefix_cache_hit_rate`` is read from that gauge.
- A failed scrape (connection refused, timeout, non-200, text that does not parse or holds no
  ``vllm:num_requests_*``) sets ``up`` to 0, adds 1 to ``switchboard_backend_scrape_errors`` and
  leaves the other values as last seen (``BackendState.scraped_at`` tells their age). Nothing is
  raised; a warning is logged when a backend goes down (or is down at the first scrape) and an
  info line when it comes back, never once per failure.
- ``state`` holds the latest ``BackendState`` per scraped provider, replaced whole on each scrape
  (a reader never sees half of one). Its entry for a provider not scraped successfully yet has
  ``scraped_at`` ``None``.
- ``follow(providers)`` (a live reload) scrapes the new set from then on: a provider added, or
  one whose URL, headers, key or interval changed, starts afresh (no state yet); a removed one
  is no longer scraped and its entry and series are removed (with ``--workers``, prometheus-client
  cannot remove a series: it stays, at ``up`` 0, until a restart). ``state`` stays the same
  dict, so whoever holds it sees the change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from app.background import pause
from app.metrics.families import Metrics
from app.providers.vllm import VllmProvider, server_root

log = logging.getLogger("switchboard.metrics.backends")

MAX_SCRAPE_TIMEOUT_S = 2.0
WAITING = ("vllm:num_requests_waiting",)
RUNNING = ("vllm:num_requests_running",)
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_COUNTERS = (("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
                   ("vllm:gpu_prefix_cache_hits", "vllm:gpu_prefix_cache_queries"))
PREFIX_GAUGE = "vllm:gpu_prefix_cache_hit_rate"


class ScrapeError(Exception):
    """A scrape that gave no usable metrics; the message says why."""


@dataclass(slots=True)
class BackendState:
    """The latest view of one backend, for dashboards and the future routing engine."""

    up: bool = False
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    prefix_cache_hit_ratio: float = 0.0
    scraped_at: float | None = None
    """``time.time()`` of the last successful scrape."""


class Samples:
    """Sample values of one exposition by sample name, summed over label sets."""

    def __init__(self, text: str) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if math.isfinite(sample.value):
                    self.sums[sample.name] = self.sums.get(sample.name, 0.0) + sample.value
                    self.counts[sample.name] = self.counts.get(sample.name, 0) + 1

    def total(self, *names: str) -> float | None:
        """The sum of the first of ``names`` present."""
        return next((self.sums[n] for n in names if n in self.sums), None)

    def mean(self, *names: str) -> float | None:
        """The mean over label sets of the first of ``names`` present."""
        return next((self.sums[n] / self.counts[n] for n in names if n in self.sums), None)

    def counter(self, name: str) -> float | None:
        """A counter by its name without ``_total``, whether or not its samples carry it."""
        return self.total(name + "_total", name)

    def prefix_counters(self) -> tuple[float, float] | None:
        """(hits, queries) of the prefix cache, under the current or the pre-0.10 names."""
        for hits_name, queries_name in PREFIX_COUNTERS:
            hits, queries = self.counter(hits_name), self.counter(queries_name)
            if hits is not None and queries is not None:
                return hits, queries
        return None


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(slots=True)
class _Backend:
    url: str
    headers: dict[str, str]
    interval_s: float
    timeout: aiohttp.ClientTimeout
    counters: tuple[float, float] | None = None
    """(hits, queries) at the previous successful scrape."""
    reported_up: bool | None = None
    """What the log last said about this backend (None: nothing yet)."""

    @classmethod
    def of(cls, config: VllmProvider) -> _Backend | None:
        """How to scrape ``config``'s server; ``None`` when its scraping is off."""
        interval = config.metrics_interval_s
        if interval <= 0:
            return None
        headers = dict(config.headers)
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        wait = min(interval, MAX_SCRAPE_TIMEOUT_S)
        return cls(url=server_root(config.base_url) + "/metrics", headers=headers,
                   interval_s=interval, timeout=aiohttp.ClientTimeout(total=wait))

    def same_target(self, other: _Backend) -> bool:
        return (self.url, self.headers, self.interval_s) == (other.url, other.headers,
                                                            other.interval_s)


class BackendScraper:
    """Scrapes the ``/metrics`` of vLLM providers into ``metrics`` and ``state``."""

    def __init__(self, providers: Mapping[str, VllmProvider], *,
                 session: aiohttp.ClientSession, metrics: Metrics) -> None:
        self._session = session
        self._metrics = metrics
        self._backends: dict[str, _Backend] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self.state: dict[str, BackendState] = {}
        for name, config in providers.items():
            if (backend := _Backend.of(config)) is not None:
                self._add(name, backend)

    def start(self) -> None:
        """One scraping task per backend; call inside a running loop (again: no-op)."""
        if not self._started:
            self._started = True
            for name in self._backends:
                self._start(name)

    async def follow(self, providers: Mapping[str, VllmProvider]) -> None:
        """Scrape ``providers`` from now on instead of the current set (see the module
        docstring)."""
        wanted = {name: backend for name, config in providers.items()
                  if (backend := _Backend.of(config)) is not None}
        gone = {name for name, backend in self._backends.items()
                if name not in wanted or not backend.same_target(wanted[name])}
        stopping = [task for name in sorted(gone) if (task := self._drop(name)) is not None]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        for name in sorted(gone - wanted.keys()):
            log.info("backend %s: no longer scraped (not in the config)", name)
        for name, backend in wanted.items():
            if name not in self._backends:
                log.info("backend %s: scraping %s from now on", name, backend.url)
                self._add(name, backend)
                if self._started:
                    self._start(name)

    def _add(self, name: str, backend: _Backend) -> None:
        self._backends[name] = backend
        self.state[name] = BackendState()
        self._metrics.backend_up.labels(provider=name).set(0)
        self._metrics.backend_scrape_errors.labels(provider=name)

    def _start(self, name: str) -> None:
        self._tasks[name] = asyncio.create_task(self._run(name), name=f"scrape-{name}")

    def _drop(self, name: str) -> asyncio.Task[None] | None:
        """Forget backend ``name`` and its series; its task, to cancel, if any."""
        del self._backends[name]
        del self.state[name]
        m = self._metrics
        m.backend_up.labels(provider=name).set(0)  # what stays where series cannot be removed
        for family in (m.backend_up, m.backend_waiting, m.backend_running, m.backend_kv_cache,
                       m.backend_prefix_hits, m.backend_scrape_errors):
            m.remove_series(family, name)
        return self._tasks.pop(name, None)

    async def aclose(self) -> None:
        """Cancel the tasks and wait for them to end."""
        tasks, self._tasks = list(self._tasks.values()), {}
        self._started = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, name: str) -> None:
        interval = self._backends[name].interval_s
        while True:
            began = time.monotonic()
            try:
                await self.scrape_once(name)
            except Exception:  # scrape_once handles what it expects; a bug must not end the loop
                log.exception("scraping backend %s failed unexpectedly", name)
            await pause(max(0.0, interval - (time.monotonic() - began)))

    async def _fetch(self, backend: _Backend) -> Samples:
        try:
            async with self._session.get(backend.url, headers=backend.headers,
                                         timeout=backend.timeout) as response:
                if response.status != 200:
                    raise ScrapeError(f"HTTP {response.status}")
                raw = await response.read()
        except TimeoutError:
            raise ScrapeError("timed out") from None
        except aiohttp.ClientError as exc:
            raise ScrapeError(f"{type(exc).__name__}: {exc}") from None
        try:
            samples = Samples(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError included
            raise ScrapeError(f"unparsable metrics: {exc}") from None
        if samples.total(*WAITING) is None and samples.total(*RUNNING) is None:
            raise ScrapeError("no vllm:num_requests_* metrics")
        return samples

    async def scrape_once(self, name: str) -> None:
        """Scrape backend ``name`` once and publish the result; never raises for a bad scrape."""
        backend = self._backends[name]
        try:
            samples = await self._fetch(backend)
        except ScrapeError as exc:
            self._metrics.backend_up.labels(provider=name).set(0)
            self._metrics.backend_scrape_errors.labels(provider=name).inc()
            self.state[name] = dataclasses.replace(self.state[name], up=False)
            if backend.reported_up is not False:
                log.warning("backend %s is down: scraping %s failed: %s", name, backend.url, exc)
                backend.reported_up = False
            return
        self._publish(name, backend, samples)
        if backend.reported_up is False:
            log.info("backend %s is up again (%s)", name, backend.url)
        backend.reported_up = True

    def _publish(self, name: str, backend: _Backend, samples: Samples) -> None:
        old = self.state[name]
        waiting = samples.total(*WAITING)
        running = samples.total(*RUNNING)
        kv = samples.mean(*KV_CACHE)
        new = BackendState(
            up=True, waiting=old.waiting if waiting is None else waiting,
            running=old.running if running is None else running,
            kv_cache_usage=old.kv_cache_usage if kv is None else _clamp(kv),
            prefix_cache_hit_ratio=self._hit_ratio(backend, samples, old.prefix_cache_hit_ratio),
            scraped_at=time.time())
        self.state[name] = new
        m = self._metrics
        m.backend_up.labels(provider=name).set(1)
        m.backend_waiting.labels(provider=name).set(new.waiting)
        m.backend_running.labels(provider=name).set(new.running)
        m.backend_kv_cache.labels(provider=name).set(new.kv_cache_usage)
        m.backend_prefix_hits.labels(provider=name).set(new.prefix_cache_hit_ratio)

    @staticmethod
    def _hit_ratio(backend: _Backend, samples: Samples, previous: float) -> float:
        counters = samples.prefix_counters()
        if counters is None:
            gauge = samples.mean(PREFIX_GAUGE)
            return previous if gauge is None else _clamp(gauge)
        hits, queries = counters
        last_hits, last_queries = backend.counters or (0.0, 0.0)
        backend.counters = counters
        if hits < last_hits or queries < last_queries:  # the server restarted
            last_hits, last_queries = 0.0, 0.0
        delta_queries = queries - last_queries
        if delta_queries <= 0:
            return previous
        return _clamp((hits - last_hits) / delta_queries)
