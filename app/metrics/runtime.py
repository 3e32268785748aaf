"""Building the metrics of a running gateway, and the background work they need.

- ``Recorder``: per-request samples (the gateway calls ``observe`` once per request).
- ``DriftMonitor`` (+ the embedding monitor when the ``[local]`` extra is installed), kept in
  step with the stored baselines every ``drift.sync_interval_s``.
- ``BackendScraper``: each ``vllm`` provider's ``/metrics``, re-exported (a reload changes the
  set: ``BackendScraper.follow(vllm_providers(config))``).
- Once a second, the call-log writer's counters become metrics (queue depth, spooled, dropped).
- ``exposition()``: the text for ``GET /metrics``; with several workers (multiprocess mode) it
  merges every worker's values from ``Settings.metrics_dir``, less the gauges of workers that
  died without cleaning up (``forget_dead_workers``).

Telemetry never breaks the gateway: each loop logs and goes on (re-raising under ``strict``, as
in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy.ext.asyncio import AsyncEngine

from app.background import pause
from app.calllog.writer import CallLogWriter, WriterStats
from app.config import GatewayConfig
from app.db.engine import DATABASE_ERRORS, describe_error
from app.metrics.backends import BackendScraper
from app.metrics.baselines import BaselineStore, DatabaseBaselines, MemoryBaselines
from app.metrics.drift import DriftMonitor
from app.metrics.embedding_drift import EmbeddingDriftMonitor
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
from app.metrics.versions import VERSIONS_DIR, VersionSlots
from app.providers.vllm import VllmProvider

log = logging.getLogger("switchboard.metrics")
VERSION = "0.1.0"
_STATS_INTERVAL_S = 1.0


@dataclass(slots=True)
class MetricsRuntime:
    metrics: Metrics
    recorder: Recorder
    drift: DriftMonitor | None
    embeddings: EmbeddingDriftMonitor | None
    backends: BackendScraper
    metrics_dir: Path | None
    strict: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of all workers in multiprocess mode."""
        self.flush()
        if self.metrics_dir is None:
            return generate_latest(self.metrics.registry)
        forget_dead_workers(self.metrics_dir)
        registry = CollectorRegistry()
        # An untyped call in prometheus-client.
        MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def start(self, *, writer: CallLogWriter | None, sync_interval_s: float) -> None:
        """Adopt the stored drift baselines (waiting at most 5 s: the database may be down; the
        sync loop retries), then start the background work. When the call log has just found
        the database unreachable (down, or not answering within its check's timeout), the
        baselines are left to the sync loop at once: a hung database would otherwise cost the
        start a second 5 s wait."""
        store = writer.conditions()["store"] if writer is not None else None
        if self.drift is not None and store is not None and store.reason == "unreachable":
            log.warning("drift baselines not loaded yet (the call log's database is "
                        "unreachable); retrying in the background")
        elif self.drift is not None:
            try:
                await asyncio.wait_for(self.drift.sync(), 5.0)
            except TimeoutError:
                log.warning("drift baselines not loaded yet (timeout); retrying in the background")
            except DATABASE_ERRORS as exc:
                log.warning("drift baselines not loaded yet (%s); retrying in the background",
                            describe_error(exc))
        self.backends.start()
        if self.embeddings is not None:
            self.embeddings.start()
        self._loop("metrics-flush", _STATS_INTERVAL_S, self._flush)
        if writer is not None:
            self._loop("calllog-metrics", _STATS_INTERVAL_S, _StatsExport(self.metrics, writer))
        if self.drift is not None:
            self._loop("drift-sync", sync_interval_s, self.drift.sync)

    def _loop(self, name: str, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            failing = False
            while True:
                try:
                    await step()
                    failing = False
                except DATABASE_ERRORS as exc:  # the database is down: retry next time
                    if not failing:
                        log.warning("%s: %s; retrying every %.0fs", name, describe_error(exc),
                                    interval_s)
                    failing = True
                except Exception:  # a telemetry loop must outlive any bug (STYLE.md #10)
                    if self.strict:
                        raise
                    log.exception("%s failed; retrying", name)
                await pause(interval_s)

        self._tasks.append(asyncio.create_task(run(), name=name))

    def flush(self) -> None:
        """Account the records taken so far and move every pending count into the families."""
        self.recorder.drain()
        dropped = self.metrics.pending.flush()
        if dropped:
            if self.strict:
                raise ValueError(f"{dropped} metric values were refused by their counters")
            log.error("metrics: dropped %d pending values their counters refused (negative "
                      "or not a number); the other values were recorded", dropped)

    async def _flush(self) -> None:
        self.flush()

    async def aclose(self) -> None:
        self.flush()  # a worker's last counts reach the shared files
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backends.aclose()
        if self.embeddings is not None:
            await self.embeddings.aclose()
        if self.metrics_dir is not None:
            # This worker's live gauges stop counting (the call is untyped in prometheus-client;
            # a worker killed instead is ``forget_dead_workers``' work).
            mark_process_dead(os.getpid(), str(self.metrics_dir))  # type: ignore[no-untyped-call]


def forget_dead_workers(directory: Path) -> None:
    """Delete the gauge files of worker processes that are gone. A worker that exits cleanly
    does it itself (``aclose``: ``mark_process_dead``); one killed (SIGKILL, the OOM killer)
    cannot, and uvicorn starts its replacement under a new pid, so the dead one's values, its
    requests in flight (``livesum``) or an open breaker (``max``) among them, would be merged
    into every scrape for good. Every gauge here is a process's own current state, which a
    dead process no longer has; its counters and histograms stay (what it counted happened).
    A few file names and one ``kill(pid, 0)`` per other worker, once per scrape."""
    alive: dict[int, bool] = {os.getpid(): True}
    for path in directory.glob("gauge_*.db"):
        pid_text = path.stem.rpartition("_")[2]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid not in alive:
            alive[pid] = _alive(pid)
        if not alive[pid]:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to judge
        return True
    return True


class _StatsExport:
    """Writer counters to metrics: gauges set, counters advanced by what changed."""

    def __init__(self, metrics: Metrics, writer: CallLogWriter) -> None:
        self._m, self._writer = metrics, writer
        self._last = WriterStats()

    async def __call__(self) -> None:
        m, stats, last = self._m, self._writer.stats, self._last
        m.calllog_queue.set(self._writer.buffered)
        m.calllog_stored.inc(stats.stored - last.stored)
        m.calllog_spooled.labels("redis").inc(stats.redis_spooled - last.redis_spooled)
        m.calllog_spooled.labels("file").inc(stats.file_spooled + stats.overflowed
                                             - last.file_spooled - last.overflowed)
        m.calllog_dropped.inc(stats.dropped - last.dropped)
        for name, condition in self._writer.conditions().items():
            gauge = m.calllog_store_up if name == "store" else m.calllog_spool_up.labels(name)
            gauge.set(condition.up)
        self._last = dataclasses.replace(stats)


def configured_targets(config: GatewayConfig) -> set[tuple[str, str]]:
    """Every (provider, upstream model) pair the config can send calls to: its models'
    targets and its experiment variants' (each has a circuit breaker)."""
    lists = [model.targets for model in config.models.values()]
    lists += [variant.targets for experiment in config.experiments.values()
              for variant in experiment.variants.values() if variant.targets is not None]
    return {(target.provider, target.model) for targets in lists for target in targets}


def drift_targets(config: GatewayConfig) -> set[tuple[str, str, str]]:
    """Every (public model, provider, upstream model) whose answers ``config`` can feed to
    drift: its models' targets and their experiments' variants' (``DriftMonitor.set_targets``)."""
    out = {(name, t.provider, t.model) for name, model in config.models.items()
           for t in model.targets}
    out |= {(experiment.model, t.provider, t.model)
            for experiment in config.experiments.values()
            for variant in experiment.variants.values() for t in variant.targets or ()}
    return out


def open_metrics(config: GatewayConfig, *, session: aiohttp.ClientSession,
                 engine: AsyncEngine | None, metrics_dir: Path | None,
                 strict: bool = False) -> MetricsRuntime:
    """Build the metrics for one gateway process (start them with ``start``)."""
    # Process-wide: ``_created`` series would double the exposition (an untyped call).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(multiprocess=metrics_dir is not None)
    metrics.build.labels(VERSION).set(1)
    drift = embeddings = None
    slots = VersionSlots(metrics_dir / VERSIONS_DIR if metrics_dir is not None else None)
    if config.drift.enabled:
        embeddings = EmbeddingDriftMonitor(config.drift.embedding, metrics=metrics,
                                           strict=strict)
        store: BaselineStore = DatabaseBaselines(engine) if engine is not None \
            else MemoryBaselines()
        drift = DriftMonitor(config.drift, metrics=metrics, store=store,
                             embeddings=embeddings if embeddings.enabled else None,
                             versions=slots)
        if not embeddings.enabled:
            embeddings = None
    return MetricsRuntime(
        metrics=metrics, recorder=Recorder(metrics, models=config.models,
                                           targets=configured_targets(config), drift=drift,
                                           slots=slots),
        drift=drift, embeddings=embeddings,
        backends=BackendScraper(vllm_providers(config), session=session, metrics=metrics),
        metrics_dir=metrics_dir, strict=strict)


def vllm_providers(config: GatewayConfig) -> Mapping[str, VllmProvider]:
    """``config``'s ``vllm`` providers by name: the servers ``BackendScraper`` scrapes."""
    return {name: cfg for name, cfg in config.providers.items() if isinstance(cfg, VllmProvider)}
