"""Every Prometheus family the gateway exports, in one place (``GET /metrics``).

Labels are bounded (STYLE.md #12): ``endpoint`` is a route path, ``model`` a configured public
model name (anything else a client sends is ``"other"``), ``provider`` a configured provider name
(``"none"`` when no target was reached), ``status_class`` ``2xx``/``4xx``/``5xx``;
``switchboard_target_state`` has ``provider`` and ``upstream_model`` (a configured target's
model name) instead, as a breaker belongs to a target, not to a public model; the drift
families (``DRIFT``) have ``model``, ``provider`` and ``upstream_model``, a public model's
target. Never a key, a
user, a path from the client or a prompt. The two label values that come from upstreams
(``response_model`` and ``system_fingerprint`` on ``switchboard_upstream_model_info``) are capped
per target: its first ``MAX_VERSIONS`` versions keep their own, any later one is exported as
``other`` for both; the current version reads 1, the others 0. ``team`` on
``switchboard_spend_usd_total`` is a team id from the gateway's own key records, capped at
``MAX_TEAMS`` (the first teams any worker meets: ``app.metrics.versions`` shares them); no
family has a key id.

One ``Metrics`` is built per app (tests build several in one process), each with its own
registry. With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` is set before any worker
starts (``switchboard serve`` does it) and the values live in files there; ``app.metrics.expose``
merges them. Gauges say how to merge with their ``multiprocess_mode``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.metrics.accumulate import Pending

# Seconds. Requests span milliseconds (embeddings) to minutes (long generations).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# The gateway's own time: sub-millisecond when healthy.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25)
# Completion tokens: doubling buckets, 1 to 16384.
TOKEN_BUCKETS = tuple(float(2 ** i) for i in range(15))
MAX_VERSIONS = 16
"""Distinct (response model, fingerprint) pairs remembered, and exported, per target."""
OTHER_VERSION = "other"
"""``response_model`` and ``system_fingerprint`` of every version past a target's first
``MAX_VERSIONS``."""

MAX_TEAMS = 100
"""Distinct ``team`` label values of ``switchboard_spend_usd_total`` per process."""

MAX_PROMPTS = 200
"""Distinct ``prompt`` label values (``<template>@v<version>``) of the prompt families per
process; later ones are counted under ``other``."""

TARGET = ("model", "provider")
DRIFT = (*TARGET, "upstream_model")
"""The drift families' labels: a public model's target, its provider and the model name the
provider is asked for (a configured target's, bounded like ``target_state``'s): two targets of
one model on one provider (two arms of an experiment) drift, and change versions, apart."""


class Metrics:
    """The families, registered in ``registry`` (a fresh one unless given). ``multiprocess``:
    the values live in ``PROMETHEUS_MULTIPROC_DIR`` (``Settings.metrics_dir``), as with
    ``switchboard serve --workers N``."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        r = self.registry = registry if registry is not None else CollectorRegistry(
            auto_describe=True)
        self.pending = Pending()
        """Per-request increments not yet in the families (``app.metrics.accumulate``)."""

        # ---- traffic -----------------------------------------------------------------------
        self.build = Gauge("switchboard_build_info", "1, labelled with the gateway's version.",
                           ("version",), multiprocess_mode="max", registry=r)
        self.config_info = Gauge(
            "switchboard_config_info", "1, labelled with the version of the config serving "
            "(GET /admin/config; with several workers, 1 for each version one of them serves).",
            ("version",), multiprocess_mode="max", registry=r)
        self.config_reload_errors = Counter(
            "switchboard_config_reload_errors", "Config files a reload refused (the old config "
            "kept serving; GET /admin/config says why).", registry=r)
        self.requests = Counter(
            "switchboard_requests", "Client requests answered, by outcome.",
            ("endpoint", "model", "provider", "status_class"), registry=r)
        self.request_duration = Histogram(
            "switchboard_request_duration_seconds",
            "Time from request received to response finished (streams: last byte).",
            ("endpoint", "model", "provider"), buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram(
            "switchboard_time_to_first_token_seconds",
            "Streams: time from request received to the first content chunk sent.",
            TARGET, buckets=TTFT_BUCKETS, registry=r)
        self.upstream_duration = Histogram(
            "switchboard_upstream_duration_seconds",
            "Time spent waiting on one upstream attempt (failed attempts included).",
            TARGET, buckets=DURATION_BUCKETS, registry=r)
        self.overhead = Histogram(
            "switchboard_gateway_overhead_seconds",
            "Time the gateway itself added to a successful request (wall time minus upstream).",
            ("endpoint",), buckets=OVERHEAD_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "switchboard_requests_in_flight", "Model calls being served right now.",
            ("endpoint",), multiprocess_mode="livesum", registry=r)
        self.tokens = Counter(
            "switchboard_tokens", "Tokens billed, by direction (input: prompt, output: "
            "completion), of every call with usage: cancelled and failed streams included "
            "(their usage estimated where the provider reported none), as in the call log.",
            (*TARGET, "direction"), registry=r)
        self.cached_tokens = Counter(
            "switchboard_cached_input_tokens",
            "Input tokens served from the provider's prompt cache (a part of the input ones).",
            TARGET, registry=r)
        self.cost = Counter(
            "switchboard_cost_usd", "Spend in US dollars, at the configured prices, of every "
            "priced call: cancelled and failed streams included, as in the call log and "
            "budgets.", TARGET, registry=r)
        self.attempts = Counter(
            "switchboard_upstream_attempts", "Upstream attempts, by outcome (ok or error).",
            (*TARGET, "outcome"), registry=r)
        self.fallbacks = Counter(
            "switchboard_fallbacks",
            "Times a target failed and the next one was tried; provider is the one that failed.",
            TARGET, registry=r)
        self.upstream_errors = Counter(
            "switchboard_upstream_errors", "Failed upstream attempts, by error type.",
            (*TARGET, "error_type"), registry=r)

        # ---- the call log ------------------------------------------------------------------
        self.calllog_queue = Gauge(
            "switchboard_calllog_queue_depth", "Call records waiting to be written.",
            multiprocess_mode="livesum", registry=r)
        self.calllog_stored = Counter(
            "switchboard_calllog_stored_records", "Call records committed to the database.",
            registry=r)
        self.calllog_spooled = Counter(
            "switchboard_calllog_spooled_records",
            "Call records parked in a spool (redis or file) because the database could not "
            "take them in time.", ("spool",), registry=r)
        self.calllog_dropped = Counter(
            "switchboard_calllog_dropped_records",
            "Call records lost for good (database, Redis and the local file all failed). "
            "Must stay 0.", registry=r)
        self.calllog_store_up = Gauge(
            "switchboard_calllog_store_up",
            "1 while the call log's database takes rows; 0 while they are spooled instead "
            "(unreachable, unmigrated, timing out or refusing writes: /readyz says why).",
            multiprocess_mode="livemin", registry=r)
        self.calllog_spool_up = Gauge(
            "switchboard_calllog_spool_up",
            "1 while a spool can be written (spool: file, the spool directory; redis, when "
            "configured), 0 otherwise (/readyz says why).", ("spool",),
            multiprocess_mode="livemin", registry=r)

        # Not ``TARGET``'s labels: a breaker belongs to a (provider, upstream model) pair,
        # shared by every public model and variant that lists it, so ``model`` (a public
        # model everywhere else) would be the wrong name for its second label.
        self.target_state = Gauge(
            "switchboard_target_state", "A target's circuit breaker: 0 closed (healthy), "
            "1 half-open (probing), 2 open (skipped); upstream_model is the model name the "
            "provider is asked for. Each configured target has a series, from start-up or "
            "the reload that adds it to the reload that removes it.",
            ("provider", "upstream_model"), multiprocess_mode="max", registry=r)

        # ---- experiments (label values: experiment and variant names from the config)
        self.experiment_calls = Counter(
            "switchboard_experiment_calls", "Calls of A/B experiments, by variant (shadow "
            "copies included, under their shadow variant) and outcome.",
            ("experiment", "variant", "status_class"), registry=r)
        self.experiment_duration = Histogram(
            "switchboard_experiment_duration_seconds", "Time to answer the answered calls of "
            "A/B experiments, by variant.", ("experiment", "variant"),
            buckets=DURATION_BUCKETS, registry=r)
        self.experiment_cost = Counter(
            "switchboard_experiment_cost_usd", "Spend in US dollars of A/B experiments' calls, "
            "by variant.", ("experiment", "variant"), registry=r)

        # ---- prompt templates (label ``prompt``: "<template>@v<version>" of a version that
        # exists, only calls that rendered one, at most MAX_PROMPTS values, then "other"). A
        # family of its own rather than a label on switchboard_requests, which would multiply
        # every endpoint/model/provider series by the number of versions.
        self.prompt_calls = Counter(
            "switchboard_prompt_calls", "Calls that rendered a prompt template, by template "
            "version and outcome.", ("prompt", "status_class"), registry=r)
        self.prompt_duration = Histogram(
            "switchboard_prompt_duration_seconds", "Time to answer the answered calls that "
            "rendered a prompt template, by template version.", ("prompt",),
            buckets=DURATION_BUCKETS, registry=r)
        self.prompt_completion_tokens = Counter(
            "switchboard_prompt_completion_tokens", "Completion tokens of answered calls, by "
            "template version (answer length per version: the length drift signal's input).",
            ("prompt",), registry=r)
        self.prompt_refusals = Counter(
            "switchboard_prompt_refusals", "Answered calls that refused, by template version "
            "(over switchboard_prompt_calls: the refusal rate per version).", ("prompt",),
            registry=r)
        self.prompt_json_invalid = Counter(
            "switchboard_prompt_json_invalid", "Answered calls that asked for JSON and did not "
            "get it, by template version.", ("prompt",), registry=r)

        # ---- keys, limits and budgets -------------------------------------------------------
        self.ratelimit_rejections = Counter(
            "switchboard_ratelimit_rejections",
            "Calls refused with 429 rate_limit_exceeded, by the scope of the limit that was "
            "reached (key, team or model).", ("scope",), registry=r)
        self.budget_rejections = Counter(
            "switchboard_budget_rejections",
            "Calls refused with 429 insufficient_quota, by the scope of the exhausted budget "
            "(key, team or model).", ("scope",), registry=r)
        # ---- privacy -------------------------------------------------------------------------
        self.privacy_detections = Counter(
            "switchboard_privacy_detections",
            "Sensitive values found in requests by the privacy stage, by entity type (a "
            "built-in type or a custom one from the config) and the action the policy took.",
            ("entity", "action"), registry=r)
        self.limiter_unavailable = Counter(
            "switchboard_limiter_unavailable",
            "Limit and budget checks that could not reach Redis, by what the configured mode "
            "did with the call (admitted: fail-open; refused: fail-closed, 503).", ("outcome",),
            registry=r)
        self.team_spend = Counter(
            "switchboard_spend_usd",
            "Spend in US dollars of calls made with a team's virtual key, by team id (at most "
            f"{MAX_TEAMS} teams, the rest as \"other\"; calls without a team are "
            "not counted here).", ("team",), registry=r)

        # ---- drift -------------------------------------------------------------------------
        self.completion_tokens = Histogram(
            "switchboard_completion_tokens", "Completion tokens per successful answer.",
            DRIFT, buckets=TOKEN_BUCKETS, registry=r)
        self.finish_reasons = Counter(
            "switchboard_finish_reasons", "Answers by finish reason (stop, length, tool_calls, "
            "content_filter, function_call, other).", (*DRIFT, "reason"), registry=r)
        self.refusals = Counter(
            "switchboard_refusals", "Answers that match a refusal phrase.", DRIFT, registry=r)
        self.json_answers = Counter(
            "switchboard_json_answers",
            "Answers to requests that asked for JSON output, by validity (true/false).",
            (*DRIFT, "valid"), registry=r)
        self.length_psi = Gauge(
            "switchboard_drift_length_psi",
            "Population stability index of completion lengths: the recent window against the "
            "baseline (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift).",
            DRIFT, multiprocess_mode="max", registry=r)
        self.refusal_rate = Gauge(
            "switchboard_drift_refusal_rate", "Share of refusals in the recent window.",
            DRIFT, multiprocess_mode="max", registry=r)
        self.json_invalid_rate = Gauge(
            "switchboard_drift_json_invalid_rate",
            "Share of invalid JSON among recent answers to requests that asked for JSON.",
            DRIFT, multiprocess_mode="max", registry=r)
        self.embedding_distance = Gauge(
            "switchboard_drift_embedding_distance",
            "Cosine distance between the centroid of recent answer embeddings and the "
            "baseline centroid (only with the local embedding model installed).",
            DRIFT, multiprocess_mode="max", registry=r)
        self.drift_flagged = Gauge(
            "switchboard_drift_flagged",
            "1 while a drift signal is past its threshold (signal: length, refusals, json, "
            "embedding).", (*DRIFT, "signal"), multiprocess_mode="max", registry=r)
        self.baseline_samples = Gauge(
            "switchboard_drift_baseline_samples",
            "Answers in the drift baseline (0 while it is being captured).",
            (*DRIFT, "signal"), multiprocess_mode="max", registry=r)
        self.model_info = Gauge(
            "switchboard_upstream_model_info",
            "1 for the model version a target answers with now (response model and "
            "system_fingerprint), 0 for ones seen before.",
            (*DRIFT, "response_model", "system_fingerprint"),
            multiprocess_mode="mostrecent", registry=r)
        self.version_changes = Counter(
            "switchboard_upstream_version_changes",
            "Times a target answered with a model version not seen from it before (0 from its "
            "first answer on).",
            DRIFT, registry=r)

        # ---- vLLM backends (scraped from each vllm provider's /metrics) --------------------
        self.backend_up = Gauge(
            "switchboard_backend_up", "1 when the last scrape of the backend's /metrics "
            "succeeded.", ("provider",), multiprocess_mode="mostrecent", registry=r)
        self.backend_waiting = Gauge(
            "switchboard_backend_requests_waiting", "Requests queued in the backend.",
            ("provider",), multiprocess_mode="mostrecent", registry=r)
        self.backend_running = Gauge(
            "switchboard_backend_requests_running", "Requests the backend is generating.",
            ("provider",), multiprocess_mode="mostrecent", registry=r)
        self.backend_kv_cache = Gauge(
            "switchboard_backend_kv_cache_usage_ratio", "KV cache in use, 0 to 1.",
            ("provider",), multiprocess_mode="mostrecent", registry=r)
        self.backend_prefix_hits = Gauge(
            "switchboard_backend_prefix_cache_hit_ratio",
            "Prefix cache hits over queries since the previous scrape, 0 to 1.",
            ("provider",), multiprocess_mode="mostrecent", registry=r)
        self.backend_scrape_errors = Counter(
            "switchboard_backend_scrape_errors", "Failed scrapes of a backend's /metrics.",
            ("provider",), registry=r)

    def remove_series(self, family: Gauge | Counter | Histogram, *labelvalues: str) -> None:
        """Drop ``family``'s series with ``labelvalues``, in a single process. In multiprocess
        mode prometheus-client cannot (each worker's values stay in its file, and ``remove``
        only warns, a raw ``UserWarning`` on stderr at every reload): the series is left, at the
        value the caller set last (0 for a replaced config version, a removed backend's ``up``),
        until a restart."""
        if not self.multiprocess:
            family.remove(*labelvalues)
