"""The drift state of one target (``TargetState``) and what it is measured with: length bins
and their PSI, rolling flag windows. ``app.metrics.drift``'s ``DriftMonitor`` feeds and judges
them."""

from __future__ import annotations

import bisect
import collections
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.config import Drift
from app.metrics.baselines import Baseline
from app.metrics.families import OTHER_VERSION, Metrics

log = logging.getLogger("switchboard.drift")

LENGTH = "length"
_BINS = 30
"""Length bins: 0, then [ceil(sqrt2**(k-1)), ceil(sqrt2**k)) up to 2**14, then the rest."""
_EDGES = sorted({math.ceil(math.sqrt(2) ** k) for k in range(_BINS - 1)})
MIN_WINDOW = 200
"""Answers the window needs before it is judged (or the whole window, if smaller)."""
MIN_JSON = 20
"""JSON answers the window needs before the invalid-JSON rate is judged. Fewer would let one
invalid answer flag the signal (1 in 10 is past any baseline + ``rate_delta`` 0.05), so with a
``window`` below 20 the JSON window still keeps the last 20 JSON answers."""
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def length_bin(tokens: int) -> int:
    """The bin of a completion length (0 for an empty answer)."""
    return bisect.bisect_right(_EDGES, tokens)


N_BINS = len(_EDGES) + 1


def psi(expected: Sequence[int], actual: Sequence[int]) -> float:
    """Population stability index of two histograms over the same bins (half-count smoothing,
    so that an empty bin on one side costs a little, not infinity)."""
    n_e, n_a = sum(expected), sum(actual)
    k = len(expected)
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        p = (a + 0.5) / (n_a + 0.5 * k)
        q = (e + 0.5) / (n_e + 0.5 * k)
        total += (p - q) * math.log(p / q)
    return total


@dataclass(slots=True)
class FlagWindow:
    """A rolling window of flags (refusal, invalid JSON) with its running count."""

    size: int
    items: collections.deque[bool] = field(init=False)
    hits: int = 0

    def __post_init__(self) -> None:
        self.items = collections.deque(maxlen=self.size)

    def add(self, flag: bool) -> None:
        items = self.items
        if len(items) == self.size and items[0]:
            self.hits -= 1
        items.append(flag)
        if flag:
            self.hits += 1

    def rate(self) -> float:
        return self.hits / len(self.items) if self.items else 0.0

    def clear(self) -> None:
        self.items.clear()
        self.hits = 0


class TargetState:
    """Drift state of one public model's target (provider and upstream model)."""

    def __init__(self, m: Metrics, cfg: Drift, model: str, provider: str,
                 upstream_model: str, reset_seen: float = 0.0) -> None:
        self.model, self.provider, self.upstream_model = model, provider, upstream_model
        self.labels = labels = (model, provider, upstream_model)
        self.lengths: collections.deque[int] = collections.deque(maxlen=cfg.window)
        self.counts = [0] * N_BINS
        self.refusals = FlagWindow(cfg.window)
        # At least MIN_JSON long: a smaller window could never hold the MIN_JSON answers the
        # JSON rate is judged on (the signal would be off, silently).
        self.json = FlagWindow(max(cfg.window, MIN_JSON))
        self.since_eval = 0
        self.baseline: Baseline | None = None
        self.handed_out = False
        """Whether ``baseline`` was given to the store (so its absence there means a reset)."""
        self.reset_seen = reset_seen
        """The time of the last reset marker (``app.metrics.baselines.RESET``) of this target
        acted on, or known when the target was first seen: a later one restarts the capture."""
        self.capture = [0] * N_BINS
        self.capture_refusals = 0
        self.capture_json = 0
        self.capture_json_invalid = 0
        self.version: tuple[str, str] | None = None
        self.seen: dict[tuple[str, str], int] = {}
        """The target's versions by slot, as far as read (``app.metrics.versions``)."""
        # Exported at 0 from the target's first answer on, so that its first version change
        # is an increase that Prometheus's increase() sees (a series born at 1 shows none).
        self.version_changes = m.version_changes.labels(*labels)
        # Children, looked up once; per-answer ones accumulate (``app.metrics.accumulate``).
        p = m.pending
        self.tokens_hist = p.hist(m.completion_tokens.labels(*labels))
        self.refusal_count = p.count(m.refusals.labels(*labels))
        self.json_valid = p.count(m.json_answers.labels(*labels, "true"))
        self.json_invalid = p.count(m.json_answers.labels(*labels, "false"))
        self.reasons = {r: p.count(m.finish_reasons.labels(*labels, r))
                        for r in (*FINISH_REASONS, "other")}
        self.psi_gauge = m.length_psi.labels(*labels)
        self.refusal_gauge = m.refusal_rate.labels(*labels)
        self.json_gauge = m.json_invalid_rate.labels(*labels)
        self.flags = {s: m.drift_flagged.labels(*labels, s)
                      for s in (LENGTH, "refusals", "json")}
        self.baseline_gauge = m.baseline_samples.labels(*labels, LENGTH)
        self.last: dict[str, float] = {}
        self.flagged: dict[str, bool] = dict.fromkeys(self.flags, False)

    @property
    def name(self) -> str:
        """How logs name it: ``model/provider/upstream model``."""
        return f"{self.model}/{self.provider}/{self.upstream_model}"

    def flag(self, signal: str, on: bool) -> None:
        if self.flagged[signal] != on:
            self.flagged[signal] = on
            log.warning("drift %s on %s: %s", "flagged" if on else "cleared", self.name,
                        signal)
        self.flags[signal].set(on)

    def drop(self, metrics: Metrics) -> None:
        """The target left the config (a live reload): its series go (single process); in
        multiprocess mode, where a series cannot be removed, its gauges stay at 0 (no flag,
        no current version) and its counters at their values, until a restart."""
        gauges = [self.psi_gauge, self.refusal_gauge, self.json_gauge, self.baseline_gauge,
                  *self.flags.values()]
        for gauge in gauges:
            gauge.set(0)
        shown = {shown_as(self, version) for version in (*self.seen, self.version) if version}
        for version in shown:
            metrics.model_info.labels(*self.labels, *version).set(0)
        metrics.pending.discard([self.tokens_hist, self.refusal_count, self.json_valid,
                                 self.json_invalid, *self.reasons.values()])
        labels, remove = self.labels, metrics.remove_series
        for family in (metrics.completion_tokens, metrics.refusals, metrics.length_psi,
                       metrics.refusal_rate, metrics.json_invalid_rate, metrics.version_changes):
            remove(family, *labels)
        for valid in ("true", "false"):
            remove(metrics.json_answers, *labels, valid)
        for reason in self.reasons:
            remove(metrics.finish_reasons, *labels, reason)
        for signal in self.flags:
            remove(metrics.drift_flagged, *labels, signal)
        remove(metrics.baseline_samples, *labels, LENGTH)
        # ``other`` too, whatever the versions say: a version past the cap that came before
        # the current one (which may be one of the first ``MAX_VERSIONS`` again) left its series
        # at 0, and nothing remembers it (removing a series that is not there is no error).
        for version in shown | {_PAST_THE_CAP}:
            remove(metrics.model_info, *labels, *version)

    def clear_window(self) -> None:
        """Forget the recent answers and what was judged of them (a new baseline compares
        with the answers that follow it only)."""
        self.lengths.clear()
        self.counts = [0] * N_BINS
        self.refusals.clear()
        self.json.clear()
        self.since_eval = 0
        self.last = {}
        for gauge in (self.psi_gauge, self.refusal_gauge, self.json_gauge):
            gauge.set(0)
        for signal in self.flags:
            self.flag(signal, False)

    def restart_capture(self) -> None:
        """Capture a new baseline from the next answers (after a reset): the capture so far,
        the window and its scores and flags are dropped."""
        self.baseline, self.handed_out = None, False
        self.capture = [0] * N_BINS
        self.capture_refusals = self.capture_json = self.capture_json_invalid = 0
        self.baseline_gauge.set(0)
        self.clear_window()


_PAST_THE_CAP = (OTHER_VERSION, OTHER_VERSION)


def shown_as(target: TargetState, version: tuple[str, str]) -> tuple[str, str]:
    """The label values ``version`` is exported under: its own while it is one of the target's
    first ``MAX_VERSIONS``, else ``other`` for both (an upstream that changes its fingerprint
    on every answer adds one series per target, not one per answer)."""
    return version if version in target.seen else _PAST_THE_CAP
