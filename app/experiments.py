"""The report of an A/B experiment (``GET /admin/experiments/{name}``, ``switchboard experiments
report NAME``), from the call log and the feedback on its calls.

Per variant: calls, the prompt template versions they rendered (``prompt_versions``:
``{"summarise@2": 120}``, how an experiment whose variants pin prompt versions compares them),
how many of its calls ended before any provider was tried (``refused_before_provider``: the
gateway's own refusals at admission or validation, such as a key over its budget, a privacy
block, a ``max_tokens`` past the cap or a bad deadline header, and the rare client that left
before), then, over the calls that reached a provider (at least one attempt recorded), failed
or not: the error rate, latency p50/p95 and time to first token p50 (of those that recorded
one: a failed call's is the time it took to fail, a stream cut after its first token has
one), mean tokens and cost per call (of those billed: a stream cut after output is, a call
refused by its upstream is not, and counts in neither rather than as free), refusal rate and
JSON validity (of answered calls: ``calls.refusal`` and ``calls.json_valid``, set by
``app.answers.judge``), and the feedback scores' mean (of scores within
``app.feedback.MAX_SCORE``; a call scored several times is one sample, the mean of its
scores). Every rate and mean comes with a 95% **confidence
sequence**: unlike a fixed-sample confidence interval, it holds at every sample size at once,
so the report stays valid however often it is looked at while the experiment runs (no
"peeking" problem). Each variant's sequence is at level ``ALPHA / 2``, so that two variants'
sequences hold together with 95% probability; a variant differs significantly from the control
(the first-listed variant; for an experiment no longer configured, whose variants are those of
its calls, the one the reader names, or none) when their sequences for the metric do not
overlap. This is conservative: it needs more data than a test of the difference would.

Two kinds of sequence, by what is known of the quantity's range:

- A bounded quantity (a rate, within [0, 1]; a feedback score, within the lowest and highest
  score any variant of the experiment received, which stand for the ends of its rating scale:
  the gateway does not know the scale, and a scale whose two ends were never given is
  narrower than assumed, a little less conservative) gets the predictable plug-in empirical
  Bernstein sequence of Waudby-Smith and Ramdas ("Estimating means of bounded random variables
  by betting", 2023): valid at any sample size, not only asymptotically, and never of zero
  width. The asymptotic one below collapses to a point on a sample with no variation (30
  answered calls with no refusal: "a refusal rate of exactly 0, 95% sure"), and two such
  variants with the same true rate of 3% were called different in 39% of simulated experiments;
  this one keeps its promise (``tests/routing/test_experiment_false_positives.py``).
- An unbounded one (latency, tokens, cost) gets the asymptotic sequence of Waudby-Smith,
  Arnold, Wu, Howard and Ramdas ("Time-uniform central limit theory and asymptotic confidence
  sequences", 2021), which assumes the sample's variance is a fair estimate: that needs a few
  dozen samples, and a sample of one value (a fixed price a call) has a sequence of zero width.

Fewer than ``MIN_SAMPLES`` samples are reported without a sequence. A sequence is cut to its
quantity's range (a rate's to [0, 1]): near an edge a symmetric one would cross it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.db.models import Call, Feedback
from app.feedback import MAX_SCORE

ALPHA = 0.05
TARGET_SAMPLES = 1000
"""The sample size the sequences are tightest at (their width grows slowly past it)."""
MIN_SAMPLES = 30
TRUNCATION = 0.5
"""The largest bet of the bounded sequence, on the [0, 1] scale (the paper's choice: it bounds
the sequence's width on a sample with no variation to about ``2 log(2 / alpha) / n``)."""
_calls = Call.__table__
_feedback = Feedback.__table__


def confidence_sequence(values: Sequence[float], *, alpha: float = ALPHA / 2,
                        target: int = TARGET_SAMPLES) -> tuple[float, float] | None:
    """The asymptotic confidence sequence for the mean of ``values`` at ``len(values)``, at
    level ``1 - alpha`` (see the module docstring); ``None`` under ``MIN_SAMPLES``."""
    n = len(values)
    if n < MIN_SAMPLES:
        return None
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values, mean)
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / target
    half = sd * math.sqrt(2 * (n * rho2 + 1) / (n * n * rho2)
                          * math.log(math.sqrt(n * rho2 + 1) / alpha))
    return mean - half, mean + half


def bounded_confidence_sequence(values: Sequence[float], low: float, high: float, *,
                                alpha: float = ALPHA / 2, target: int = TARGET_SAMPLES,
                                ) -> tuple[float, float] | None:
    """The empirical Bernstein confidence sequence (Waudby-Smith and Ramdas 2023, predictable
    plug-in, two-sided) for the mean of ``values``, each within ``[low, high]`` (``low <
    high``), at ``len(values)`` and level ``1 - alpha``, in the order the samples came;
    ``None`` under ``MIN_SAMPLES``. Valid for any sample size and any distribution within the
    range (each bet uses only the samples before it); its width never reaches 0."""
    n = len(values)
    if n < MIN_SAMPLES:
        return None
    width = high - low
    log_term = math.log(2 / alpha)
    # The running mean and variance start from one imagined sample of the widest variance
    # (mean 1/2, variance 1/4), so a first run of equal samples bets cautiously.
    mean, variance, total, squares = 0.5, 0.25, 0.0, 0.0
    bets = weighted = penalty = 0.0
    sqrt, log1p, twice = math.sqrt, math.log1p, 2 * log_term  # a loop over every call
    for t, value in enumerate(values, 1):
        x = (value - low) / width
        # The bet is tuned for ``target`` samples, as the asymptotic sequence is, and shrinks
        # like 1/sqrt(t) past it, so the sequence keeps narrowing (a bet fixed for good would
        # leave it a floor of width); any bet chosen before the sample keeps it valid.
        bet = min(TRUNCATION, sqrt(twice / (variance * max(target, t))))
        penalty += (x - mean) ** 2 * (-log1p(-bet) - bet)
        bets += bet
        weighted += bet * x
        total += x
        mean = (0.5 + total) / (t + 1)
        squares += (x - mean) ** 2
        variance = (0.25 + squares) / (t + 1)
    centre, margin = weighted / bets, (log_term + penalty) / bets
    return low + width * (centre - margin), low + width * (centre + margin)


@dataclass
class _Arm:
    """One variant's samples."""

    calls: int = 0
    refused: int = 0
    """Calls that ended before any provider was tried (no attempt recorded)."""
    errors: list[float] = field(default_factory=list)
    """1.0 per failed call, 0.0 per answered one (their mean is the error rate), of the calls
    that reached a provider: a refusal of the gateway's own (a key's budget, say) says nothing
    of the variant, and ``sticky: key`` would pin one over-budget key's refusals on one."""
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    prompt: list[float] = field(default_factory=list)
    completion: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    refusals: list[float] = field(default_factory=list)
    """1.0 per answered call that refused, 0.0 per other answered one (logged since 0010)."""
    json_valid: list[float] = field(default_factory=list)
    """1.0 per answer to a JSON request that parses, 0.0 per one that does not."""
    prompts: dict[str, int] = field(default_factory=dict)
    """Calls per prompt template version (``id@version``), for calls that named a template."""


_HUGE = 1e150
"""Past this magnitude a sample's square (in its variance) could overflow a float."""


RATE = (0.0, 1.0)
"""The range of a rate (error, refusal, JSON validity)."""
NON_NEGATIVE = (0.0, math.inf)
"""The range of latencies, token counts and costs."""
SCORE = (-MAX_SCORE, MAX_SCORE)


def metric(values: list[float], within: tuple[float, float] = (-math.inf, math.inf),
           ) -> dict[str, Any]:
    """``values``' count, mean and confidence sequence, for any finite floats in the order
    they came, each within ``within``, the range of the quantity (a rate is never below 0).
    A range bounded on both sides gets the bounded sequence (``bounded_confidence_sequence``);
    another the asymptotic one, its samples past ``_HUGE`` scaled down first (their sums and
    squares would overflow), a bound past the float range no sequence (``None``). The sequence
    is cut to ``within``: its centre lies in it, so this changes no verdict of ``_apart``."""
    if not values:
        return {"n": 0, "mean": None, "ci95": None}
    low, high = within
    if math.isfinite(low) and math.isfinite(high) and low < high:
        bounded = bounded_confidence_sequence(values, low, high)
        return {"n": len(values), "mean": statistics.fmean(values),
                "ci95": None if bounded is None else [max(bounded[0], low),
                                                      min(bounded[1], high)]}
    scale = max(abs(v) for v in values)
    if scale <= _HUGE:
        scale = 1.0  # unscaled: the usual case stays exact
    scaled = values if scale == 1.0 else [v / scale for v in values]
    sequence = confidence_sequence(scaled)
    ci = None if sequence is None else [sequence[0] * scale, sequence[1] * scale]
    if ci is not None and not (math.isfinite(ci[0]) and math.isfinite(ci[1])):
        ci = None
    if ci is not None:
        ci = [max(ci[0], within[0]), min(ci[1], within[1])]
    return {"n": len(values), "mean": statistics.fmean(scaled) * scale, "ci95": ci}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def report_of(engine: AsyncEngine, name: str, configured: Sequence[str] | None, *,
                    control: str | None = None, since: datetime | None = None,
                    ) -> dict[str, Any]:
    """The report of experiment ``name`` (``GET /admin/experiments/{name}``): ``configured``,
    its variants in the config serving now, the first the control unless ``control`` names
    another; ``None``, it is not configured (it ended, a config edit): its report is read from
    the call log, its variants those of its calls, compared with ``control`` if given (the
    rows do not say which variant was the control). ``NotFound`` for an experiment neither
    configured nor in the call log; ``InvalidRequest`` for a ``control`` that is none of its
    variants, configured or in the call log (a variant a live reload removed is still one of
    the report's, and may be compared with)."""
    variants = list(configured) if configured is not None else await logged_variants(engine,
                                                                                     name)
    if not variants:
        raise errors.NotFound(f"No experiment named {name[:128]!r} in the config serving now, "
                              "and no call of one in the call log.", param="name",
                              code="experiment_not_found")
    if control is not None and control not in variants:
        known = variants if configured is None else [
            *variants, *(v for v in await logged_variants(engine, name) if v not in variants)]
        if control not in known:
            raise errors.InvalidRequest(
                f"Experiment {name[:128]!r} has no variant named {control[:128]!r} (its "
                f"variants: {', '.join(known)}).", param="control", code="variant_not_found")
    if control is None and configured is not None:
        control = variants[0]
    return await report(engine, name, variants, control=control, since=since,
                        ended=configured is None)


async def logged_variants(engine: AsyncEngine, name: str) -> list[str]:
    """The variants the call log holds calls of for experiment ``name``, in the order of their
    first call (none: the call log has no call of it)."""
    first = func.min(_calls.c.created_at)
    query = (select(_calls.c.variant).where(_calls.c.experiment == name,
                                             _calls.c.variant.is_not(None))
             .group_by(_calls.c.variant).order_by(first, _calls.c.variant))
    async with engine.connect() as conn:
        return [variant for variant, in (await conn.execute(query)).all()]


async def report(engine: AsyncEngine, name: str, variants: Sequence[str], *,
                 control: str | None, since: datetime | None = None,
                 ended: bool = False) -> dict[str, Any]:
    """The report of experiment ``name`` whose variants are ``variants``, each compared with
    ``control`` (``None``: none is, ``differs_from_control`` is ``None`` throughout); calls
    since ``since`` (all when ``None``). ``ended``: the experiment is no longer configured
    (its variants are those of its calls, ``logged_variants``). A variant's ``calls`` counts
    every call assigned to it; its metrics count those that reached a provider, the others
    are its ``refused_before_provider``."""
    arms = {variant: _Arm() for variant in variants}
    calls = select(_calls.c.id, _calls.c.variant, _calls.c.status, _calls.c.attempts,
                   _calls.c.latency_ms,
                   _calls.c.ttft_ms, _calls.c.prompt_tokens, _calls.c.completion_tokens,
                   _calls.c.cost_usd, _calls.c.refusal, _calls.c.json_valid,
                   _calls.c.prompt_id, _calls.c.prompt_version,
                   # in the order they came: the bounded sequence's bets follow it
                   ).where(_calls.c.experiment == name).order_by(_calls.c.created_at,
                                                                 _calls.c.id)
    # One sample a call, the mean of its scores, in the order of each call's first score: a
    # client that rates one call a hundred times does not weigh a hundred calls.
    scores = (select(func.avg(_feedback.c.score), func.min(_feedback.c.score),
                     func.max(_feedback.c.score), _calls.c.variant)
              .select_from(_feedback.join(_calls, _feedback.c.call_id == _calls.c.id))
              .where(_calls.c.experiment == name,
                     # a score stored before scores were bounded is left out
                     _feedback.c.score.between(-MAX_SCORE, MAX_SCORE))
              .group_by(_feedback.c.call_id, _calls.c.variant)
              .order_by(func.min(_feedback.c.created_at), _feedback.c.call_id))
    if since is not None:
        calls = calls.where(_calls.c.created_at >= since)
        scores = scores.where(_calls.c.created_at >= since)
    async with engine.connect() as conn:
        rows = (await conn.execute(calls)).all()
        scored = (await conn.execute(scores)).all()
    for row in rows:
        arm = arms.get(row.variant) or arms.setdefault(row.variant, _Arm())
        arm.calls += 1
        if row.prompt_id is not None:
            used = f"{row.prompt_id}@{row.prompt_version}"
            arm.prompts[used] = arm.prompts.get(used, 0) + 1
        if not row.attempts and row.status != "ok":  # refused (or left) before any provider
            arm.refused += 1
            continue
        arm.errors.append(0.0 if row.status == "ok" else 1.0)
        # Failed calls count too: the time a timeout took, the first token of a stream cut
        # later, the tokens and cost of one billed after it failed (a failure nothing billed
        # has no tokens or cost, and is left out of those rather than counted as free).
        for into, value in ((arm.latency, row.latency_ms), (arm.ttft, row.ttft_ms),
                            (arm.prompt, row.prompt_tokens),
                            (arm.completion, row.completion_tokens), (arm.cost, row.cost_usd)):
            if value is not None:
                into.append(float(value))
        if row.status == "ok":  # what an answer says: only an answered call has one
            for into, value in ((arm.refusals, row.refusal), (arm.json_valid, row.json_valid)):
                if value is not None:
                    into.append(float(value))
    ends: list[float] = []  # each call's lowest and highest score: the scale's ends
    for score, lowest, highest, variant in scored:
        arm = arms.get(variant) or arms.setdefault(variant, _Arm())
        arm.scores.append(float(score))
        ends += (float(lowest), float(highest))
    scale = _scale_of(ends)
    out: dict[str, Any] = {}
    for variant, arm in arms.items():
        out[variant] = {
            "calls": arm.calls, "refused_before_provider": arm.refused,
            "prompt_versions": arm.prompts,
            "error_rate": metric(arm.errors, RATE),
            "latency_ms": {"p50": _percentile(arm.latency, 0.5),
                           "p95": _percentile(arm.latency, 0.95),
                           **metric(arm.latency, NON_NEGATIVE)},
            "ttft_ms": {"p50": _percentile(arm.ttft, 0.5)},
            "prompt_tokens": metric(arm.prompt, NON_NEGATIVE),
            "completion_tokens": metric(arm.completion, NON_NEGATIVE),
            "cost_usd": metric(arm.cost, NON_NEGATIVE), "refusal_rate": metric(arm.refusals, RATE),
            "json_validity": metric(arm.json_valid, RATE),
            "feedback_score": metric(arm.scores, scale)}
    for variant, data in out.items():
        data["differs_from_control"] = None if variant == control or control not in out else {
            metric: _apart(out[control][metric]["ci95"], data[metric]["ci95"])
            for metric in ("error_rate", "latency_ms", "cost_usd", "refusal_rate",
                           "json_validity", "feedback_score")}
    return {"object": "experiment.report", "experiment": name, "ended": ended,
            "control": control,
            "method": "95% time-uniform confidence sequences per variant (level 0.025 "
                      "each): empirical Bernstein (Waudby-Smith and Ramdas 2023) for rates "
                      "and feedback scores, asymptotic (Waudby-Smith et al. 2021) for "
                      "latency, tokens and cost; a metric differs when the control's and the "
                      "variant's do not overlap",
            "variants": out}


def _scale_of(scores: list[float]) -> tuple[float, float]:
    """The range the feedback scores of an experiment are taken to lie in: the lowest and the
    highest any variant received (the ends of its rating scale, which the gateway is not
    told; taken over every variant, so that all are judged on one scale), or ``SCORE``, all
    scores allowed, when they are all the same (no scale is known then: 30 ratings of 5 say
    nothing of how far off 5 the next may be)."""
    if scores and min(scores) < max(scores):
        return min(scores), max(scores)
    return SCORE


def _apart(a: list[float] | None, b: list[float] | None) -> bool | None:
    """Whether two intervals are disjoint (``None``: one is missing, too few samples). Bounds
    within a billionth of each other touch: the means of two runs of one value (a fixed
    price a call) can differ in their last bit, and their zero-width sequences with them."""
    if a is None or b is None:
        return None
    slack = 1e-9 * max(abs(a[0]), abs(a[1]), abs(b[0]), abs(b[1]))
    return a[1] + slack < b[0] or b[1] + slack < a[0]
