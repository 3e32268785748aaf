"""Embedding drift: do a model's answers still mean what they meant when it was known good?

A sampled share (``drift.embedding.sample_rate``) of successful answers is embedded by the local
all-MiniLM-L6-v2 model (the ``[local]`` extra) and compared, per public model and target
(provider and upstream model):

- **Baseline**: the mean of the unit vectors of the first ``baseline_size`` samples after start-up
  or a reset. ``pending_baselines()`` hands each captured one out once, to be saved before the next
  ``adopt()``, which installs what the store holds (the first saved wins across workers) and treats
  a handed-out or adopted baseline missing from the store as reset: the next samples make a new one.
- **Window**: the last ``window`` samples after the baseline, kept as a running sum (O(384) per
  sample). Once it holds ``min(window, MIN_WINDOW)`` samples, distance = 1 - cosine(window
  centroid, baseline centroid) is exported, flagged while > ``threshold``. Fewer would read noise
  as drift: the centroid of a few dozen varied answers wobbles by up to a few hundredths.
- **Gauges**: ``embedding_distance``; ``drift_flagged`` and ``baseline_samples`` (0 while
  capturing) with ``signal="embedding"``. After a reset the distance reads 0 until measured again.

``offer()`` (every answer) is a coin flip, a token bucket (``max_per_second``) and an append to a
bounded deque; when it is full the sample is skipped and counted (``skipped``). One task batches
the queue to ONE encoder process (spawned at start-up; it loads the model at once, on the CPU:
telemetry must not claim a GPU in every worker) and embeds; state and gauges are updated back on
the event loop. Without the extra,
or with ``sample_rate: 0``, nothing starts and no embedding gauge label is ever created. Start-up
never waits for the model; a failed load is logged once and turns the monitor off. Failures are
counted (``failures``) and logged, or re-raised under ``strict`` (tests). numpy, torch and
sentence-transformers are imported only once enabled, so the module imports without them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from app.config import EmbeddingDrift
from app.metrics.baselines import Baseline, Key, Target
from app.metrics.encoder import BATCH, embed_here, encoder_available, load_here, watch_parent
from app.metrics.families import Metrics

__all__ = ["SIGNAL", "EmbeddingDriftMonitor", "encoder_available"]

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float64]

log = logging.getLogger("switchboard.drift.embedding")

SIGNAL = "embedding"
MIN_WINDOW = 50
"""Samples the window needs before its distance is exported (or the whole window, if smaller)."""
MAX_CHARS = 2048
"""Characters of an answer kept: in practice more than the 256 word pieces the model reads."""


class _LoadFailed(Exception):
    """The model could not be loaded: the monitor turns itself off."""


def _plus(total: Vector | None, vector: npt.NDArray[np.float32]) -> Vector:
    if total is None:
        return vector.astype("float64")
    total += vector
    return total


class _Track:
    """The state of one (public model, provider, upstream model): a public model's target."""

    def __init__(self) -> None:
        self.seen = 0
        self.capture_sum: Vector | None = None
        self.captured = 0
        self.baseline: Vector | None = None
        self.baseline_samples = 0
        self.known = False
        """The store holds this baseline (it was handed out or adopted)."""
        self.pending: Baseline | None = None
        self.window: deque[npt.NDArray[np.float32]] = deque()
        self.window_sum: Vector | None = None
        self.evicted = 0
        self.distance: float | None = None
        self.exported = False
        """The distance gauge has a value for this key."""

    def add(self, vector: npt.NDArray[np.float32], *, baseline_size: int, window: int) -> bool:
        """Account one unit vector; True when it completed the baseline."""
        self.seen += 1
        if self.baseline is None:
            self.capture_sum = _plus(self.capture_sum, vector)
            self.captured += 1
            if self.captured < baseline_size:
                return False
            self.baseline, self.baseline_samples = self.capture_sum / self.captured, self.captured
            self.capture_sum, self.captured = None, 0
            return True
        self.window.append(vector)
        self.window_sum = _plus(self.window_sum, vector)
        if len(self.window) > window:
            self.window_sum -= self.window.popleft()
            self.evicted += 1
            if self.evicted >= window:  # re-add now and then, so rounding cannot pile up
                import numpy as np
                self.window_sum = np.stack(self.window).sum(axis=0, dtype="float64")
                self.evicted = 0
        return False

    def measure(self, window: int) -> None:
        import numpy as np
        self.distance = None
        if (self.baseline is None or self.window_sum is None
                or len(self.window) < min(window, MIN_WINDOW)):
            return
        norms = float(np.linalg.norm(self.window_sum) * np.linalg.norm(self.baseline))
        if norms > 0:
            cosine = float(np.dot(self.window_sum, self.baseline)) / norms
            self.distance = min(2.0, max(0.0, 1.0 - cosine))

    def install(self, centroid: Vector, samples: int) -> None:
        self.baseline, self.baseline_samples, self.known = centroid, samples, True
        self.capture_sum, self.captured, self.pending = None, 0, None

    def reset(self) -> None:
        self.baseline, self.baseline_samples, self.known, self.pending = None, 0, False, None
        self.capture_sum, self.captured, self.distance = None, 0, None
        self.window.clear()
        self.window_sum, self.evicted = None, 0


def _centroid(baseline: Baseline) -> Vector | None:
    """The stored centroid as a vector, or None when it is not a 384-wide nonzero finite one."""
    import numpy as np

    from app.providers.local import DIMENSIONS
    raw = baseline.data.get("centroid")
    try:
        vector = np.asarray(raw, dtype="float64")
    except (TypeError, ValueError):
        return None
    ok = vector.shape == (DIMENSIONS,) and np.all(np.isfinite(vector)) and np.any(vector)
    return vector if ok else None


class EmbeddingDriftMonitor:
    """Samples answers, embeds them off the event loop, and exports the embedding drift signal."""

    def __init__(self, config: EmbeddingDrift, *, metrics: Metrics, strict: bool = False,
                 loader: Callable[[], None] = load_here) -> None:
        self._config = config
        self._metrics = metrics
        self._strict = strict
        self._rate = config.sample_rate
        self.enabled = config.sample_rate > 0 and encoder_available()
        if config.sample_rate > 0 and not self.enabled:
            log.info("embedding drift is off: the [local] extra is not installed")
        self._queue: deque[tuple[str, str, str, str]] = deque()
        self._tracks: dict[Target, _Track] = {}
        self._configured: frozenset[Target] | None = None
        """The targets the serving config has, after a live reload (``None``: all)."""
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._executor: ProcessPoolExecutor | None = None  # the encoder process
        self._loader = loader
        """Loads the model in the encoder process (a module-level function: it is pickled)."""
        self._bad: set[Key] = set()
        self.skipped = 0
        """Samples dropped because the queue was full."""
        self.throttled = 0
        """Samples not taken because ``max_per_second`` were already taken."""
        self._burst = max(1.0, config.max_per_second)
        """Bucket size: at least one sample, or a rate below 1/s would never take any."""
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self.failures = 0
        """Failed model loads, batches and offers (logged; re-raised under ``strict``)."""

    def offer(self, model: str, provider: str, upstream_model: str, text: str) -> None:
        """Maybe keep an answer for embedding (hot path: O(1), never blocks, never raises)."""
        if not self.enabled:
            return
        try:
            if random.random() >= self._rate:
                return
            now = time.monotonic()  # a token bucket: at most max_per_second samples
            per_s = self._config.max_per_second
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * per_s)
            self._refilled = now
            if self._tokens < 1:
                self.throttled += 1
                return
            self._tokens -= 1
            if len(self._queue) >= self._config.queue_max:
                self.skipped += 1
                return
            self._queue.append((model, provider, upstream_model, text[:MAX_CHARS]))
            self._wake.set()
            if self._task is None and self._started:
                self._launch()
        except Exception:  # telemetry must not fail an answer (STYLE.md #10)
            self.failures += 1
            if self._strict:
                raise

    def start(self) -> None:
        """Allow the work to start: the encoder process is spawned with the first sample (a
        gateway that never samples never pays for the model). Call in the running loop."""
        self._started = self.enabled
        if self._started and self._queue and self._task is None:
            self._launch()

    def _launch(self) -> None:
        self._executor = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=watch_parent, initargs=(os.getpid(),))
        self._task = asyncio.get_running_loop().create_task(self._work(), name="embedding-drift")

    async def aclose(self) -> None:
        """Stop the task and the encoder process; later offers are ignored."""
        self.enabled = False
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: already logged (or raised to drain) by the worker
        executor, self._executor = self._executor, None
        if executor is not None:
            # Stop the encoder process now, even mid-load or mid-batch: there is no public way
            # to, and left alone it would finish loading torch (seconds of CPU) for nothing.
            for process in list(getattr(executor, "_processes", {}).values()):
                process.terminate()
            executor.shutdown(wait=False, cancel_futures=True)

    async def drain(self) -> None:
        """Wait until every queued sample is embedded and accounted (tests). Re-raises what ended
        the worker under ``strict``."""
        task = self._task
        if task is None:
            if self._queue:
                raise RuntimeError("the embedding drift monitor is not started")
            return
        while (self._queue or self._in_flight) and not task.done():
            self._settled.clear()
            settled = asyncio.ensure_future(self._settled.wait())
            await asyncio.wait([settled, task], return_when=asyncio.FIRST_COMPLETED)
            settled.cancel()
        if task.done() and not task.cancelled():
            task.result()

    def pending_baselines(self) -> list[Baseline]:
        """Baselines captured since the last call, each handed out once (to be saved before the
        next ``adopt``)."""
        out: list[Baseline] = []
        for track in self._tracks.values():
            if track.pending is not None:
                out.append(track.pending)
                track.pending, track.known = None, True
        return out

    def adopt(self, stored: Mapping[Key, Baseline]) -> None:
        """Install the stored embedding baselines; forget those the store no longer holds."""
        if not self.enabled:
            return
        present: set[Target] = set()
        for key, baseline in stored.items():
            if key[3] != SIGNAL:
                continue
            centroid = _centroid(baseline)
            if centroid is None:
                if key not in self._bad:
                    self._bad.add(key)
                    log.warning("ignoring the stored embedding baseline of %s/%s/%s: no "
                                "384-wide centroid", *key[:3])
                continue
            pair = (key[0], key[1], key[2])
            if self._configured is not None and pair not in self._configured:
                continue
            present.add(pair)
            track = self._tracks.setdefault(pair, _Track())
            track.install(centroid, baseline.samples)
            self._publish(pair, track)
        for pair, track in self._tracks.items():
            if track.known and pair not in present:
                log.info("embedding baseline of %s/%s/%s was reset: capturing a new one", *pair)
                track.reset()
                self._publish(pair, track)

    def set_targets(self, targets: frozenset[Target]) -> None:
        """The targets the config serving after a live reload has: the others' tracks and
        series go (in multiprocess mode their gauges stay at 0 until a restart), and their
        stored baselines are no longer adopted."""
        self._configured = targets
        metrics = self._metrics
        for pair in [pair for pair in self._tracks if pair not in targets]:
            del self._tracks[pair]
            for family, labels in ((metrics.baseline_samples, (*pair, SIGNAL)),
                                   (metrics.embedding_distance, pair),
                                   (metrics.drift_flagged, (*pair, SIGNAL))):
                family.labels(*labels).set(0)
                metrics.remove_series(family, *labels)

    def status(self) -> dict[str, Any]:
        """Per ``model/provider/upstream model``: what was seen and measured (for an admin
        endpoint)."""
        return {"/".join(target): {
            "samples": t.seen, "baseline_samples": t.baseline_samples,
            "capturing": t.captured if t.baseline is None else None, "window": len(t.window),
            "distance": t.distance, "flagged": t.distance is not None
            and t.distance > self._config.threshold,
        } for target, t in self._tracks.items()}

    # ---- the worker ------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:  # load at start-up, not under the first traffic (~5 s of CPU)
            await loop.run_in_executor(self._executor, self._loader)
        except Exception as exc:  # noqa: BLE001 - what the child raised, pickled back, or a dead child
            self._load_failed(exc)
            return
        import numpy  # noqa: F401 - the vectors come back as arrays: imported now, not under load

        if gc.get_freeze_count():  # the process froze its start-up heap: numpy's objects too
            gc.collect()
            gc.freeze()
        while True:
            if not self._queue:
                self._settled.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            self._in_flight = len(batch)
            try:
                vectors = await loop.run_in_executor(self._executor, embed_here,
                                                     [text for *_, text in batch])
                self._account(batch, vectors)
            except Exception:  # telemetry outlives a bad batch (STYLE.md #10)
                self.failures += 1
                if self._strict:
                    raise
                log.warning("embedding drift: a batch of %d failed (%d failures so far)",
                            len(batch), self.failures, exc_info=self.failures == 1)
            finally:
                self._in_flight = 0

    def _load_failed(self, exc: Exception) -> None:
        self.failures += 1
        self.enabled = False
        self._queue.clear()
        log.error("embedding drift is off: the model failed to load", exc_info=exc)
        if self._strict:
            raise _LoadFailed("the embedding model failed to load") from exc

    def _account(self, batch: list[tuple[str, str, str, str]],
                 vectors: npt.NDArray[np.float32]) -> None:
        config = self._config
        touched: dict[Target, _Track] = {}
        for (model, provider, upstream_model, _), vector in zip(batch, vectors, strict=True):
            pair = (model, provider, upstream_model)
            if self._configured is not None and pair not in self._configured:
                continue  # sampled before a reload removed its target
            track = touched.get(pair) or self._tracks.setdefault(pair, _Track())
            touched[pair] = track
            if track.add(vector.copy(), baseline_size=config.baseline_size, window=config.window):
                assert track.baseline is not None
                track.pending = Baseline(model, provider, SIGNAL, track.baseline_samples,
                                         {"centroid": track.baseline.tolist()},
                                         upstream_model=upstream_model)
        for pair, track in touched.items():
            self._publish(pair, track)

    def _publish(self, pair: Target, track: _Track) -> None:
        metrics = self._metrics
        track.measure(self._config.window)
        metrics.baseline_samples.labels(*pair, SIGNAL).set(
            track.baseline_samples if track.baseline is not None else 0)
        distance = track.distance
        if distance is not None or track.exported:
            track.exported = True
            metrics.embedding_distance.labels(*pair).set(distance or 0.0)
        flagged = distance is not None and distance > self._config.threshold
        metrics.drift_flagged.labels(*pair, SIGNAL).set(1 if flagged else 0)
