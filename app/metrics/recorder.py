"""Turning finished call records into metric samples: the per-request cost of ``/metrics``.

``observe(record)`` runs once per request, after the response, on the event loop. It looks up the
label children of a request's (endpoint, model, provider) once, in a dict keyed by the tuple
(``prometheus_client``'s ``labels()`` hashes, locks and validates on every call), then adds to
plain numbers that reach the families in bulk (``app.metrics.accumulate``). Tokens and cost count
every call that has them (cancelled and failed ones included, as the call log does); drift
signals are fed from here for successful generations, and spend per team for calls made with a
team's key.

The admission stage reports its refusals and Redis failures as they happen, through
``limit_rejected``, ``budget_rejected`` and ``limiter_unavailable`` (an addition to a plain
number each).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Literal, get_args

from app.calllog.record import CallRecord
from app.metrics.accumulate import Count, Hist, Level
from app.metrics.drift import DriftMonitor
from app.metrics.families import MAX_PROMPTS, MAX_TEAMS, Metrics
from app.metrics.versions import VersionSlots

Scope = Literal["key", "team", "model"]
"""What a rate limit or budget belongs to: a virtual key, a team, a public model."""
LimiterOutcome = Literal["admitted", "refused"]
"""What a call got when its limits could not be checked: fail-open admits, fail-closed
refuses."""
OTHER_TEAM = "other"
"""The ``team`` label past ``MAX_TEAMS`` distinct teams."""
TEAM_SLOTS = ("label-slots", "team")
PROMPT_SLOTS = ("label-slots", "prompt")
"""The ``VersionSlots`` targets the capped ``team`` and ``prompt`` label values are placed
under."""

OTHER_MODEL = "other"
"""The ``model`` label of requests naming no configured model, or refused before their body was
read (bounded labels)."""
OTHER_PROMPT = "other"
"""The ``prompt`` label of template versions past ``MAX_PROMPTS``."""
NO_PROVIDER = "none"
_GENERATIONS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/messages"})
"""The endpoints whose answers feed drift: ``/v1/messages`` ones are chat answers (a native
target's translated for the gateway's books, ``Result.body``)."""
BATCH = 256
"""Records accounted together (at most a second's worth wait: flushes drain the rest)."""


class _Series:
    """The children of one (endpoint, model, provider)."""

    __slots__ = ("cached", "cost", "duration", "endpoint", "model", "overhead", "provider",
                 "statuses", "tokens_in", "tokens_out", "ttft")

    def __init__(self, m: Metrics, endpoint: str, model: str, provider: str) -> None:
        self.endpoint, self.model, self.provider = endpoint, model, provider
        p = m.pending
        self.duration = p.hist(m.request_duration.labels(endpoint, model, provider))
        self.overhead = p.hist(m.overhead.labels(endpoint))
        self.ttft = p.hist(m.ttft.labels(model, provider))
        self.tokens_in = p.count(m.tokens.labels(model, provider, "input"))
        self.tokens_out = p.count(m.tokens.labels(model, provider, "output"))
        self.cached = p.count(m.cached_tokens.labels(model, provider))
        self.cost = p.count(m.cost.labels(model, provider))
        self.statuses: dict[int, Count] = {}


class _Upstream:
    """The children of one (model, attempted provider)."""

    __slots__ = ("duration", "errors", "failed", "fallbacks", "ok")

    def __init__(self, m: Metrics, model: str, provider: str) -> None:
        p = m.pending
        self.duration = p.hist(m.upstream_duration.labels(model, provider))
        self.ok = p.count(m.attempts.labels(model, provider, "ok"))
        self.failed = p.count(m.attempts.labels(model, provider, "error"))
        self.fallbacks = p.count(m.fallbacks.labels(model, provider))
        self.errors: dict[str | None, Count] = {}


class Recorder:
    """Observes finished call records into ``metrics`` (and ``drift``, when given)."""

    def __init__(self, metrics: Metrics, *, models: Collection[str],
                 targets: Iterable[tuple[str, str]] = (),
                 drift: DriftMonitor | None = None, slots: VersionSlots | None = None) -> None:
        """``targets``: the configured (provider, upstream model) pairs, whose breakers are
        exported as closed until they change (``set_targets``). ``slots``: where the capped
        team and prompt label values are placed (shared by the workers of ``--workers N``;
        default: this process's own)."""
        self.metrics = metrics
        self._slots = slots or VersionSlots()
        self._models = frozenset(models)
        self._targets: frozenset[tuple[str, str]] = frozenset()
        """The configured targets: those ``switchboard_target_state`` has a series for."""
        self._states: dict[tuple[str, str], int] = {}
        """The last state each target's breaker reported (the router keeps a removed target's
        breaker: a reload that adds it back exports its state)."""
        self.set_targets(targets)
        self._drift = drift
        self._series: dict[tuple[str, str | None, str | None], _Series] = {}
        self._upstreams: dict[tuple[str, str], _Upstream] = {}
        self._batch: list[CallRecord] = []
        p = metrics.pending
        # Every scope and outcome exported from the start (at 0), so rates exist before the
        # first refusal.
        self._limit_rejections = {scope: p.count(metrics.ratelimit_rejections.labels(scope))
                                  for scope in get_args(Scope)}
        self._budget_rejections = {scope: p.count(metrics.budget_rejections.labels(scope))
                                   for scope in get_args(Scope)}
        self._limiter_unavailable = {
            outcome: p.count(metrics.limiter_unavailable.labels(outcome))
            for outcome in get_args(LimiterOutcome)}
        self._team_spend: dict[str, Count] = {}
        self._team_slots: dict[tuple[str, str], int] = {}
        self._privacy: dict[tuple[str, str], Count] = {}
        self._prompts: set[str] = set()
        """The ``prompt`` label values in use (at most ``MAX_PROMPTS``, over all workers)."""
        self._prompt_slots: dict[tuple[str, str], int] = {}

    def _series_for(self, record: CallRecord) -> _Series:
        model = record.public_model
        if model not in self._models:  # keyed by the label: unknown names add nothing
            model = OTHER_MODEL
        key = (record.endpoint, model, record.provider)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.metrics, record.endpoint, model,
                                                 record.provider or NO_PROVIDER)
        return series

    def target_state(self, provider: str, *, upstream_model: str, value: int) -> None:
        """A target's circuit breaker changed state (``app.routing.breaker``). Not exported for
        a target the serving config does not have (a call of a config a reload replaced, still
        finishing, or a breaker shared by another gateway): its series would never go."""
        self._states[provider, upstream_model] = value
        if (provider, upstream_model) in self._targets:
            self.metrics.target_state.labels(provider, upstream_model).set(value)

    def set_targets(self, targets: Iterable[tuple[str, str]]) -> None:
        """The configured targets (provider, upstream model), at start-up and after each live
        reload. A new one's breaker is exported at once, at the state it last reported (closed
        if none), so dashboards and alerts see every target before its first change; one no
        longer configured loses its series (in multiprocess mode, where a series cannot be
        removed, it stays at 0, closed, until a restart: never an open breaker that nothing
        will close)."""
        targets = frozenset(targets)
        family = self.metrics.target_state
        for provider, model in sorted(self._targets - targets):
            family.labels(provider, model).set(0)
            self.metrics.remove_series(family, provider, model)
        for provider, model in sorted(targets - self._targets):
            family.labels(provider, model).set(self._states.get((provider, model), 0))
        self._targets = targets

    def set_models(self, models: Collection[str]) -> None:
        """The configured public models after a live reload (the ``model`` label's values). A
        model no longer configured loses its traffic series (requests, durations, tokens, cost,
        upstream attempts, errors and fallbacks), as a removed target's drift series and
        ``target_state`` do: its calls that finish later count under ``other``, and a reload
        that adds it back starts its series afresh. In multiprocess mode, where a series cannot
        be removed, they stay at their values until a restart. ``other`` itself is kept (it
        counts the names no config has)."""
        models = frozenset(models)
        gone = self._models - models - {OTHER_MODEL}
        self._models = models
        if gone:
            self._forget(gone)

    def _forget(self, gone: frozenset[str]) -> None:
        """Remove the series of the models ``gone`` (``set_models``), their pending values
        flushed first."""
        m = self.metrics
        pending: list[Count | Hist | Level] = []
        series: set[tuple[Any, tuple[str, ...]]] = set()
        for key in [key for key, s in self._series.items() if s.model in gone]:
            s = self._series.pop(key)
            # ``overhead`` is the endpoint's, shared with other models: its accumulator goes,
            # its series stays.
            pending += [s.duration, s.overhead, s.ttft, s.tokens_in, s.tokens_out, s.cached,
                        s.cost, *s.statuses.values()]
            target = (s.model, s.provider)
            series |= {(m.request_duration, (s.endpoint, *target)), (m.ttft, target),
                       (m.tokens, (*target, "input")), (m.tokens, (*target, "output")),
                       (m.cached_tokens, target), (m.cost, target),
                       *((m.requests, (s.endpoint, *target, f"{c}xx")) for c in s.statuses)}
        for target in [target for target in self._upstreams if target[0] in gone]:
            up = self._upstreams.pop(target)
            pending += [up.duration, up.ok, up.failed, up.fallbacks, *up.errors.values()]
            series |= {(m.upstream_duration, target), (m.attempts, (*target, "ok")),
                       (m.attempts, (*target, "error")), (m.fallbacks, target),
                       *((m.upstream_errors, (*target, error or "unknown"))
                         for error in up.errors)}
        m.pending.discard(pending)
        for family, labels in series:
            m.remove_series(family, *labels)

    def limit_rejected(self, scope: Scope) -> None:
        """Count one call refused by a rate limit of ``scope`` (429 rate_limit_exceeded)."""
        self._limit_rejections[scope].n += 1

    def budget_rejected(self, scope: Scope) -> None:
        """Count one call refused by an exhausted budget of ``scope`` (429
        insufficient_quota)."""
        self._budget_rejections[scope].n += 1

    def privacy_detected(self, counts: dict[str, int], action: str) -> None:
        """Count the sensitive values the privacy stage found in one request, by entity type
        and the action taken (entity types come from the config: bounded)."""
        for entity, n in counts.items():
            key = (entity, action)
            child = self._privacy.get(key)
            if child is None:
                child = self._privacy[key] = self.metrics.pending.count(
                    self.metrics.privacy_detections.labels(entity, action))
            child.n += n

    def limiter_unavailable(self, outcome: LimiterOutcome) -> None:
        """Count one call whose limits could not be checked (Redis unreachable or too slow),
        by what the configured mode did with it."""
        self._limiter_unavailable[outcome].n += 1

    def _spend_for(self, team_id: str) -> Count:
        """The spend counter of ``team_id``: its own for the first ``MAX_TEAMS`` teams the
        gateway's workers meet, ``OTHER_TEAM``'s after that."""
        count = self._team_spend.get(team_id)
        if count is None:
            slot, _ = self._slots.place(TEAM_SLOTS, self._team_slots, (team_id, ""), MAX_TEAMS)
            label = OTHER_TEAM if slot is None else team_id
            count = self._team_spend.get(label)
            if count is None:
                count = self.metrics.pending.count(self.metrics.team_spend.labels(label))
                self._team_spend[label] = count
        return count

    def observe(self, record: CallRecord) -> None:
        """Take a finished record; it is accounted with the next batch (``BATCH`` records, or
        ``drain()``, which every flush and scrape calls first). Accounting records in a tight
        loop measured about half the cost of one at a time between requests, in the server."""
        batch = self._batch
        batch.append(record)
        if len(batch) >= BATCH:
            self.drain()

    def drain(self) -> None:
        """Account every record taken so far."""
        batch, self._batch = self._batch, []
        for record in batch:
            self._account(record)

    def _account(self, record: CallRecord) -> None:
        s = self._series_for(record)
        status_class = record.http_status // 100
        counter = s.statuses.get(status_class)
        if counter is None:
            counter = s.statuses[status_class] = self.metrics.pending.count(
                self.metrics.requests.labels(s.endpoint, s.model, s.provider,
                                             f"{status_class}xx"))
        counter.n += 1
        latency_ms = record.latency_ms or 0.0
        s.duration.observe(latency_ms / 1000)
        if record.attempts:
            self._attempts(record, s.model)
        if record.experiment is not None:
            self._experiment(record, record.experiment, record.variant or "-")
        if record.prompt_id is not None and record.prompt_version is not None \
                and record.shadow_of is None:
            # A shadow copy names its original's version, but another model answered it: the
            # version's calls, tokens and refusals are its clients' (the experiment families
            # count copies, under their shadow variant). A call whose version does not exist
            # (a variant pinning one the template lacks: a 404) has none to count under.
            self._prompt(record, f"{record.prompt_id}@v{record.prompt_version}")
        # Tokens and cost of every call that has them, whatever its status, as the call log,
        # its spend read-outs and budgets count them: a stream the client left or that failed
        # after chunks went out is billed by its provider (its usage reported early or
        # estimated, app.gateway). Shadow copies included: their upstream bills them too.
        usage = record.usage
        if usage is not None:
            s.tokens_in.n += usage.prompt_tokens
            s.tokens_out.n += usage.completion_tokens
            if usage.cached_tokens:
                s.cached.n += usage.cached_tokens
        if record.cost_usd:
            s.cost.n += record.cost_usd
            if record.team_id is not None and record.shadow_of is None:
                # Shadow copies are no team's spend (app.db.ledger).
                self._spend_for(record.team_id).n += record.cost_usd
        if record.status != "ok":
            # Time and drift signals are answered calls' only: a cut answer's length (often
            # estimated) is not the model's.
            return
        s.overhead.observe(record.overhead_of(latency_ms) / 1000)
        if record.ttft_ms is not None:
            s.ttft.observe(record.ttft_ms / 1000)
        if self._drift is not None and record.endpoint in _GENERATIONS \
                and record.public_model in self._models:  # not a model a reload removed
            self._drift.observe(s.model, s.provider,
                                usage.completion_tokens if usage is not None else 0, record)
        record.answer_text = None

    def _experiment(self, record: CallRecord, experiment: str, variant: str) -> None:
        m = self.metrics
        m.experiment_calls.labels(experiment, variant, f"{record.http_status // 100}xx").inc()
        if record.status == "ok" and record.latency_ms is not None:
            m.experiment_duration.labels(experiment, variant).observe(record.latency_ms / 1000)
        if record.cost_usd:
            m.experiment_cost.labels(experiment, variant).inc(record.cost_usd)

    def _prompt(self, record: CallRecord, label: str) -> None:
        """Count ``record`` under ``label`` (``<template>@v<version>``), or ``other`` once
        ``MAX_PROMPTS`` labels are in use (by any worker)."""
        if label not in self._prompts:  # past the cap, placing is one length check
            slot, _ = self._slots.place(PROMPT_SLOTS, self._prompt_slots, (label, ""),
                                        MAX_PROMPTS)
            if slot is None:
                label = OTHER_PROMPT
            else:
                self._prompts.add(label)
        m = self.metrics
        m.prompt_calls.labels(label, f"{record.http_status // 100}xx").inc()
        if record.status != "ok":
            return
        if record.latency_ms is not None:
            m.prompt_duration.labels(label).observe(record.latency_ms / 1000)
        if record.usage is not None:
            m.prompt_completion_tokens.labels(label).inc(record.usage.completion_tokens)
        if record.refusal:
            m.prompt_refusals.labels(label).inc()
        if record.json_valid is False:
            m.prompt_json_invalid.labels(label).inc()

    def _attempts(self, record: CallRecord, model: str) -> None:
        attempts = record.attempts
        last = len(attempts) - 1
        for i, attempt in enumerate(attempts):
            key = (model, attempt.provider)
            up = self._upstreams.get(key)
            if up is None:
                up = self._upstreams[key] = _Upstream(self.metrics, model, attempt.provider)
            up.duration.observe(attempt.duration_ms / 1000)
            if attempt.status == 200:
                up.ok.n += 1
                continue
            up.failed.n += 1
            errors = up.errors.get(attempt.error_type)
            if errors is None:
                errors = up.errors[attempt.error_type] = self.metrics.pending.count(
                    self.metrics.upstream_errors.labels(model, attempt.provider,
                                                        attempt.error_type or "unknown"))
            errors.n += 1
            # A fallback is a failed attempt followed by one on another target; a retry of the
            # same target (same provider and upstream model) is not one (README glossary).
            if i < last and (attempts[i + 1].provider, attempts[i + 1].model) != (
                    attempt.provider, attempt.model):
                up.fallbacks.n += 1
