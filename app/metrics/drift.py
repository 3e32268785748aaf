"""Drift signals: is a model still answering the way it did when it was known good?

Per public model and target (its provider and upstream model: two targets of one model on one
provider, two arms of an experiment say, are watched apart), from every successful chat,
completion or ``/v1/messages`` answer:

- **Inline, O(1) per answer**: completion length (histogram, and a bin in the rolling window),
  finish reason, refusal (the call's own verdict, ``app.answers.judge``: an explicit refusal,
  ``finish_reason: content_filter``, or a refusal phrase in the answer's head, so the call rows'
  ``refusal`` and these counts agree), JSON validity when the request
  asked for JSON, and the upstream's model version (response ``model`` and
  ``system_fingerprint``). A sampled share of answers is handed to the embedding monitor.
- **Every ``evaluate_every`` answers**: the recent window (``window`` answers) is compared with the
  baseline: the PSI of the length distribution (about 30 bins, widths growing by sqrt 2), the
  refusal and invalid-JSON rates. Gauges are set; a signal past its threshold is flagged.
- **Every ``sync_interval_s``, off the request path** (``sync``): captured baselines are saved
  (the first saved wins) and the stored ones adopted, so restarts and other workers share one;
  a baseline deleted from the store (``switchboard drift baseline reset MODEL``) is captured anew.

The baseline is the first ``baseline_size`` answers after start-up or a reset. Version changes
are detected per target: a (model, fingerprint) pair not seen from it before counts as a change
and is logged as an event with before and after; flipping between known versions (load-balanced
fleets) only moves the info gauge. With several workers the versions seen are shared, so a
change counts once (``app.metrics.versions``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Collection
from typing import Any, Protocol

from app.answers import is_json
from app.calllog.record import TEXT_CAPS, bound_text
from app.config import Drift
from app.metrics.baselines import RESET, Baseline, BaselineStore, Key, Target
from app.metrics.drift_state import (
    FINISH_REASONS,
    LENGTH,
    MIN_JSON,
    MIN_WINDOW,
    N_BINS,
    TargetState,
    length_bin,
    psi,
    shown_as,
)
from app.metrics.families import Metrics
from app.metrics.versions import VersionSlots
from app.scrub import one_line
from app.times import iso

log = logging.getLogger("switchboard.drift")
_EVENTS_KEPT = 100
_MAX_MODEL, _MAX_FINGERPRINT = TEXT_CAPS["response_model"], TEXT_CAPS["system_fingerprint"]
__all__ = ["LENGTH", "MIN_JSON", "MIN_WINDOW", "N_BINS", "DriftMonitor", "length_bin", "psi"]
"""(What tests and callers read here; the target's state is in ``app.metrics.drift_state``.)"""


class Answer(Protocol):
    """What drift needs of a finished call (``CallRecord`` has it)."""

    finish_reason: str | None
    response_model: str | None
    system_fingerprint: str | None
    answer_text: str | None
    wants_json: bool
    target_model: str | None
    """The target's model name on its provider (what the provider was asked for)."""
    refusal: bool | None
    """Whether the answer refused (``app.answers.judge`` decided it when the call ended;
    ``None``: nothing judged it, which counts as no refusal)."""


class EmbeddingSink(Protocol):
    """The embedding monitor (``app.metrics.embedding_drift``), as drift uses it."""

    def offer(self, model: str, provider: str, upstream_model: str, text: str) -> None: ...

    def set_targets(self, targets: frozenset[Target]) -> None: ...

    def pending_baselines(self) -> list[Baseline]: ...

    def adopt(self, stored: dict[Key, Baseline]) -> None: ...


class DriftMonitor:
    """Drift state for every target, fed by ``observe`` and kept in step by ``sync``."""

    def __init__(self, config: Drift, *, metrics: Metrics, store: BaselineStore,
                 embeddings: EmbeddingSink | None = None,
                 versions: VersionSlots | None = None) -> None:
        """``versions``: where targets' versions are placed (shared by the workers in
        multiprocess mode); in memory if not given."""
        self.config = config
        self._versions = versions or VersionSlots()
        self.metrics = metrics
        self._store = store
        self._embeddings = embeddings
        self._targets: dict[tuple[str, str, str], TargetState] = {}
        self._resets: dict[tuple[str, str], float] = {}
        """The stored reset markers' times by (model, provider; ``""``: all providers)."""
        self._loaded = False
        """Whether the store was read once (the resets known then are not news)."""
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=_EVENTS_KEPT)
        """Recent version changes, newest last (also logged)."""

    # ---- the hot path ---------------------------------------------------------------------

    def observe(self, model: str, provider: str, tokens: int, answer: Answer) -> None:
        """Account one successful answer of ``tokens`` completion tokens, from the target of
        public model ``model`` on ``provider`` that ``answer.target_model`` names."""
        key = (model, provider, answer.target_model or "none")
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = TargetState(self.metrics, self.config, *key,
                                                     self._reset_at(model, provider))
        target.tokens_hist.observe(tokens)
        reason = answer.finish_reason
        if reason is not None:
            target.reasons[reason if reason in FINISH_REASONS else "other"].n += 1
        text = answer.answer_text or ""
        refused = answer.refusal is True
        if refused:
            target.refusal_count.n += 1
        invalid: bool | None = None
        if answer.wants_json:
            invalid = not is_json(text)
            (target.json_invalid if invalid else target.json_valid).n += 1
        # what the upstream reports becomes label values and log text: bounded like the row's
        self._check_version(target, bound_text(answer.response_model or "", _MAX_MODEL),
                            bound_text(answer.system_fingerprint or "", _MAX_FINGERPRINT))
        if self._embeddings is not None and text:
            self._embeddings.offer(*key, text)
        b = length_bin(tokens)
        if target.baseline is None:
            self._capture(target, b, refused, invalid)
            return
        lengths = target.lengths
        if len(lengths) == lengths.maxlen:
            target.counts[lengths[0]] -= 1
        lengths.append(b)
        target.counts[b] += 1
        target.refusals.add(refused)
        if invalid is not None:
            target.json.add(invalid)
        target.since_eval += 1
        if target.since_eval >= self.config.evaluate_every:
            self.evaluate(target)

    def _capture(self, target: TargetState, b: int, refused: bool, invalid: bool | None) -> None:
        target.capture[b] += 1
        target.capture_refusals += refused
        if invalid is not None:
            target.capture_json += 1
            target.capture_json_invalid += invalid
        n = sum(target.capture)
        if n < self.config.baseline_size:
            return
        target.baseline = Baseline(
            model=target.model, provider=target.provider,
            upstream_model=target.upstream_model, signal=LENGTH, samples=n,
            data={"bins": list(target.capture), "refusal_rate": target.capture_refusals / n,
                  "json_answers": target.capture_json,
                  "json_invalid_rate": target.capture_json_invalid / target.capture_json
                  if target.capture_json else 0.0})
        target.baseline_gauge.set(n)
        log.info("drift baseline captured for %s (%d answers)", target.name, n)

    def _check_version(self, target: TargetState, model: str, fingerprint: str) -> None:
        version = (model, fingerprint)
        before = target.version
        if version == before:
            return
        info = self.metrics.model_info
        if before is not None:
            info.labels(*target.labels, *shown_as(target, before)).set(0)
        target.version = version
        slot, placed = self._versions.place(target.labels, target.seen, version)
        info.labels(*target.labels, *shown_as(target, version)).set(1)
        # A version new in its slot is a change unless it is the target's first; past the cap
        # (no slot), any other than the one before is.
        if not (placed and slot) and not (slot is None and before is not None):
            return
        target.version_changes.inc()
        event = {"at": iso(time.time()), "model": target.model, "provider": target.provider,
                 "upstream_model": target.upstream_model,
                 "before": None if before is None else {"model": before[0],
                                                        "system_fingerprint": before[1]},
                 "after": {"model": model, "system_fingerprint": fingerprint}}
        self.events.append(event)
        log.warning("upstream model version changed for %s: %s -> %s %s", target.name,
                    "(none seen by this worker)" if before is None
                    else f"{one_line(before[0])} {one_line(before[1] or '-')}",
                    one_line(model), one_line(fingerprint or "-"), extra={"drift_event": event})

    # ---- evaluation -----------------------------------------------------------------------

    def evaluate(self, target: TargetState) -> None:
        """Compare the window with the baseline; set the gauges and flags."""
        target.since_eval = 0
        baseline = target.baseline
        if baseline is None or len(target.lengths) < min(MIN_WINDOW, self.config.window):
            return
        cfg = self.config
        score = psi(baseline.data["bins"], target.counts)
        refusal_rate = target.refusals.rate()
        target.psi_gauge.set(score)
        target.refusal_gauge.set(refusal_rate)
        target.flag(LENGTH, score > cfg.psi_threshold)
        target.flag("refusals", refusal_rate > baseline.data["refusal_rate"] + cfg.rate_delta)
        target.last = {"psi": score, "refusal_rate": refusal_rate}
        if len(target.json.items) >= MIN_JSON:
            invalid_rate = target.json.rate()
            target.json_gauge.set(invalid_rate)
            target.flag("json", invalid_rate > baseline.data["json_invalid_rate"] + cfg.rate_delta)
            target.last["json_invalid_rate"] = invalid_rate

    # ---- keeping baselines in step --------------------------------------------------------

    def set_targets(self, targets: Collection[Target]) -> None:
        """The targets (public model, provider, upstream model) the config serving after a
        live reload has: the others' drift state and series go (``TargetState.drop``), as the
        embedding monitor's. A target a later reload adds back starts afresh (its stored
        baseline adopted at the next sync)."""
        keep = frozenset(targets)
        for key in [key for key in self._targets if key not in keep]:
            self._targets.pop(key).drop(self.metrics)
            log.info("drift of %s/%s/%s forgotten: no longer configured", *key)
        if self._embeddings is not None:
            self._embeddings.set_targets(keep)

    def _reset_at(self, model: str, provider: str) -> float:
        """When ``model``'s baselines on ``provider`` were last reset (0: never, as known)."""
        resets = self._resets
        return max(resets.get((model, ""), 0.0), resets.get((model, provider), 0.0))

    async def sync(self) -> None:
        """Restart the captures a reset since came after, save new baselines (the first saved
        wins) and adopt the stored ones; a baseline that was saved and is gone from the store
        was reset too: capture a new one."""
        stored = await self._store.load_all()
        first, self._loaded = not self._loaded, True
        self._resets = {(k[0], k[1]): b.captured_at for k, b in stored.items() if k[3] == RESET}
        for target in list(self._targets.values()):
            reset_at = self._reset_at(target.model, target.provider)
            if reset_at > target.reset_seen:
                target.reset_seen = reset_at
                if not first:  # (the first load tells the resets before this process apart)
                    # A capture in progress, saved or not, holds answers from before it.
                    log.info("drift baseline of %s was reset; capturing a new one",
                             target.name)
                    target.restart_capture()
        saved = False
        for target in list(self._targets.values()):
            if target.baseline is not None and not target.handed_out:
                await self._store.save_if_absent(target.baseline)
                target.handed_out = saved = True
        if self._embeddings is not None:
            for baseline in self._embeddings.pending_baselines():
                await self._store.save_if_absent(baseline)
                saved = True
        if saved:  # read back: another worker's may have been saved first
            stored = await self._store.load_all()
        for target in list(self._targets.values()):
            found = stored.get((*target.labels, LENGTH))
            if found is not None and len(found.data.get("bins", ())) != N_BINS:
                found = None  # saved by a version with other bins: capture a fresh one
            if found is not None:
                # The same baseline, read back: its timestamp went through a datetime column
                # (microseconds), so compare it to the millisecond, not exactly; an exact
                # comparison cleared the window once after most captures.
                if target.baseline is None \
                        or abs(target.baseline.captured_at - found.captured_at) > 0.001:
                    target.baseline, target.handed_out = found, True
                    target.baseline_gauge.set(found.samples)
                    target.clear_window()
            elif target.handed_out:
                log.info("drift baseline of %s was reset; capturing a new one", target.name)
                target.restart_capture()
        if self._embeddings is not None:
            self._embeddings.adopt(stored)

    def status(self) -> list[dict[str, Any]]:
        """Per target: baseline, window and the last evaluation (for ``GET /admin/drift``)."""
        out = []
        for target in self._targets.values():
            baseline = target.baseline
            out.append({
                "model": target.model, "provider": target.provider,
                "upstream_model": target.upstream_model,
                "baseline": None if baseline is None else {
                    "samples": baseline.samples, "captured_at": iso(baseline.captured_at),
                    "refusal_rate": baseline.data["refusal_rate"]},
                "capturing": None if baseline is not None else sum(target.capture),
                "window": len(target.lengths), **target.last,
                "flagged": [s for s, on in target.flagged.items() if on],
                "version": None if target.version is None else {
                    "model": target.version[0], "system_fingerprint": target.version[1]},
            })
        return out
