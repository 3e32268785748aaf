"""The gateway's YAML configuration: schema, interpolation and strict validation.

Every mapping forbids unknown keys and repeated ones, and every error names the path of the
offending key (``providers.openai.api_kye: unknown key``) or, for a key written twice, its
lines, so a typo never silently changes behaviour.

Interpolation, in any string: ``${NAME}`` (an environment variable; ``${NAME:-default}`` when it
may be unset or empty, as in sh) and ``${file:/path}`` (a file's content without its trailing
newline: a mounted Kubernetes Secret, say, whose rotation a live reload picks up; ``app.reload``
watches such files as well as the config file itself). The paths of the values written with a
reference are kept (``GatewayConfig.referenced``): ``app.config_diff`` never shows them.

(Past 400 lines: one schema, whose sections refer to each other (targets name providers,
experiments name models and providers) and are validated together; split by section, the
modules would import one another in a circle.)
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.errors import problem_message
from app.pricing import Price
from app.privacy.config import (
    ModelPrivacy,
    PrivacyConfig,
    check_entities,
    custom_names,
    model_entities,
)
from app.providers import PROVIDER_TYPES
from app.providers import serves as provider_serves
from app.providers.base import ENDPOINTS, ProviderBase, Seconds
from app.yaml_keys import StrictKeys

_FORBID = ConfigDict(extra="forbid", frozen=True)
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # libyaml's safe loader when PyYAML was built with it (about 10x faster), else PyYAML's
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(StrictKeys, _SafeLoader):
    """The safe loader, with ``StrictKeys``'s refusals: a second ``chat:`` under ``models:``
    would silently replace the first, and a provider named ``off:`` would be refused later as
    "not a valid string" without saying why."""

KeyPath = tuple[str, ...]
"""Where a value is in the YAML document: its keys (and list indexes, as text) from the top."""
Name = Annotated[str, Field(min_length=1, max_length=128,
                            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$")]
"""A provider's, model's, experiment's or variant's name: ASCII letters and digits, then also
``_ . : / @ -`` (names go into response headers, which carry Latin-1 only, and into metric
labels)."""


def _no_slash(name: str) -> str:
    if "/" in name:
        raise ValueError(
            f"{name!r} has a '/', which an experiment or variant name cannot: the answer's "
            "x-switchboard-variant header joins the two with one (EXPERIMENT/VARIANT), and "
            "GET /admin/experiments/NAME takes a name without one")
    return name


ArmName = Annotated[Name, AfterValidator(_no_slash)]
"""An experiment's or a variant's name: a ``Name`` without ``/``."""


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its path."""


if TYPE_CHECKING:
    # mypy cannot see a union built at run time: code that reads a type's own fields narrows
    # with ``isinstance`` on that type's config model (``app.providers.vllm.VllmProvider``...).
    ProviderConfig = ProviderBase
else:
    # The union of the registered provider types' config models, told apart by ``type``: a new
    # provider type registers in ``app.providers`` and is accepted here without an edit.
    ProviderConfig = Annotated[
        Union[tuple(kind.config for kind in PROVIDER_TYPES.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class TargetConfig(BaseModel):
    model_config = _FORBID
    provider: Name
    model: Annotated[str, Field(min_length=1, pattern=r"^[ -~]+$")]
    """The upstream's model (printable ASCII: the answer's ``x-switchboard-target-model``
    header carries it)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Extra request fields sent to this target (e.g. vLLM's ``top_k``); the client's win."""
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    """Its share of first attempts under ``strategy: weighted``."""
    context_window: Annotated[int, Field(ge=1)] | None = None
    """The most prompt tokens the model takes: a call whose estimated prompt is larger skips
    this target instead of failing upstream."""
    timeout_s: Seconds | None = None
    """This target's own ``timeout_s`` (default: its provider's)."""
    first_chunk_timeout_s: Seconds | None = None
    """This target's own ``first_chunk_timeout_s`` (default: its provider's)."""


class ModelConfig(BaseModel):
    model_config = _FORBID
    targets: Annotated[list[TargetConfig], Field(min_length=1)]
    strategy: str = "ordered"
    """How the targets are ordered for each call (``app.routing.strategies``)."""
    max_tokens_cap: Annotated[int, Field(ge=1)] | None = None
    """The most tokens a call may ask for (``max_tokens``, ``max_completion_tokens``); a call
    that asks for none is sent it, unless ``max_tokens_default`` is set or its provider has a
    default within it (``app.routing.table``)."""
    max_tokens_default: Annotated[int, Field(ge=1)] | None = None
    """What a call that asks for no limit is sent with: at most ``max_tokens_cap`` (after it
    here, so that the cap is validated first)."""
    owned_by: str = "switchboard"
    privacy: ModelPrivacy | None = None
    """This model's privacy policy (``app.privacy.config``); unset: the global default."""

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        return known_strategy(name)

    @field_validator("max_tokens_default")
    @classmethod
    def _default_within_cap(cls, default: int | None, info: ValidationInfo) -> int | None:
        cap = info.data.get("max_tokens_cap")
        if default is not None and cap is not None and default > cap:
            raise ValueError(f"{default} is above max_tokens_cap ({cap}): a call that gives no "
                             "max_tokens would be sent more than the cap lets a call ask for")
        return default


def known_strategy(name: str) -> str:
    """``name`` if it is a routing strategy (``app.routing.strategies``), else ``ValueError``."""
    from app.routing.strategies import STRATEGIES  # the routing package imports this module

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of: {', '.join(STRATEGIES)}")
    return name


class VariantPrompt(BaseModel):
    """The prompt template version a variant renders (``app.stages.template``): for a call that
    names a template, this version (or the version this label points at) of that template
    instead of the one the call asked for."""

    model_config = _FORBID
    version: Annotated[int, Field(ge=1, strict=True)] | None = None
    label: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VariantPrompt:
        from app.prompts.model import LABEL, LATEST, MAX_VERSION  # app.prompts imports the
        # db, which imports this

        if (self.version is None) == (self.label is None):
            raise ValueError("give 'version' or 'label' (one of them)")
        if self.version is not None and self.version > MAX_VERSION:
            raise ValueError(f"version {self.version} is past the highest a template can have "
                             f"({MAX_VERSION})")
        if self.label is not None and not (self.label == LATEST or LABEL.fullmatch(self.label)):
            raise ValueError(f"label {self.label[:64]!r} is not a label name (a-z, 0-9, '_', "
                             "'.', '-')")
        return self


class VariantConfig(BaseModel):
    """One arm of an experiment: its share of the traffic, where it goes, and for calls that
    use a prompt template, which version they get."""

    model_config = _FORBID
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    """Its share of the calls (among the variants that are not shadows)."""
    targets: Annotated[list[TargetConfig], Field(min_length=1)] | None = None
    """Where its calls go; left out (only by a variant with a ``prompt``): the experiment's
    model's own targets and strategy."""
    prompt: VariantPrompt | None = None
    """The template version its calls render (only calls that name a template have one)."""
    strategy: str = "ordered"
    shadow: bool = False
    """A shadow variant serves no client: after a call of another variant has been answered, a
    copy of it (a ``sample`` of them) goes to this variant, its answer is discarded and its call
    row is logged (``shadow_of`` names the original)."""
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0
    """The share of answered calls a shadow variant gets a copy of."""

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        return known_strategy(name)

    @model_validator(mode="after")
    def _targets_or_prompt(self) -> VariantConfig:
        if self.targets is None and self.prompt is None:
            raise ValueError("a variant needs 'targets', or a 'prompt' (then it keeps the "
                             "model's targets)")
        if self.targets is None and "strategy" in self.model_fields_set:
            raise ValueError("'strategy' orders the variant's own 'targets'; without them the "
                             "model's targets keep the model's strategy")
        if self.shadow and self.prompt is not None:
            raise ValueError("a shadow variant cannot pin a 'prompt': a shadow copy is sent "
                             "the original call's rendered messages")
        if self.shadow and "weight" in self.model_fields_set:
            raise ValueError("'weight' shares the calls among the variants that serve them; a "
                             "shadow variant serves none (its share of copies is 'sample')")
        if not self.shadow and "sample" in self.model_fields_set:
            raise ValueError("'sample' is the share of calls a shadow variant gets a copy of; "
                             "a variant that serves calls gets its share by 'weight'")
        return self


class ExperimentConfig(BaseModel):
    """An A/B experiment: the traffic of one public model split between named variants
    (``app.routing.experiments``)."""

    model_config = _FORBID
    model: Name
    """The public model whose calls are split (its own targets then serve only the variants
    that keep them: those with a ``prompt`` and no ``targets``)."""
    sticky: Literal["user", "key", "header"] = "user"
    """What keeps a caller on one variant: the request's ``user``, the virtual key, or the
    ``x-switchboard-variant-key`` header (a call without it is assigned at random)."""
    variants: dict[ArmName, VariantConfig]

    @field_validator("variants")
    @classmethod
    def _two_or_more(cls, variants: dict[str, VariantConfig]) -> dict[str, VariantConfig]:
        if len(variants) < 2:
            raise ValueError(f"an experiment needs at least two variants to compare (this one "
                             f"has {len(variants)}): add another, or remove the experiment")
        return variants


class Limits(BaseModel):
    model_config = _FORBID
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=4, le=200)] = 64
    """Deepest nesting of a request body (the object is level 1); deeper is a 400. At most 200:
    the call log serialises bodies with orjson, which stops at 255 levels."""
    max_n: Annotated[int, Field(ge=1)] = 16
    max_tokens: Annotated[int, Field(ge=1)] = 262_144
    max_embedding_inputs: Annotated[int, Field(ge=1)] = 2048


class RateLimits(BaseModel):
    """How virtual keys' rate limits and budgets are enforced (``app.stages.admit``)."""

    model_config = _FORBID
    redis_timeout_ms: Annotated[float, Field(gt=0, le=1000)] = 250.0
    """The longest an admission waits for Redis; past it the fail mode below decides, and for the
    next second every admission is decided at once without asking Redis, so an outage costs one
    wait a second, not one per request. It counts this process's own event-loop delays too: a
    gateway saturated by 32 concurrent calls took 6-70 ms per round trip to a healthy loopback
    Redis, so tens of milliseconds would refuse (or admit past a limit) exactly under load."""
    on_redis_down: Literal["open", "closed"] = "open"
    """Rate limits when Redis cannot be reached: ``open`` admits (counting
    ``switchboard_limiter_unavailable_total``), ``closed`` answers 503."""
    budgets_on_redis_down: Literal["open", "closed"] = "closed"
    """Budgets when Redis cannot be reached: ``closed`` answers 503, ``open`` admits."""
    output_reservation: Annotated[int, Field(ge=1)] = 4096
    """The most output tokens an admission charges to a TPM limit before the call runs (the
    request's max tokens, or the model's default, capped by this); the real usage is settled
    when the call ends."""
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """How often budget counters are raised to the spend the call log proves (at start-up too;
    with Redis, once an interval by whichever gateway sharing it takes the turn)."""


class BreakerConfig(BaseModel):
    """The circuit breaker of every target (``app.routing.breaker``)."""

    model_config = _FORBID
    failures: Annotated[int, Field(ge=1)] = 5
    """Consecutive failed attempts that open it."""
    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    """The share of failed attempts over ``window_s`` that opens it..."""
    min_calls: Annotated[int, Field(ge=1)] = 20
    """...once the window holds at least this many attempts."""
    window_s: Seconds = 30.0
    cooldown_s: Seconds = 5.0
    """How long it stays open before one call probes the target."""
    max_cooldown_s: Annotated[Seconds, Field(validate_default=True)] = 300.0
    """The cooldown doubles on each failed probe, up to this (at least ``cooldown_s``)."""
    enabled: bool = True
    shared: bool = True
    """With Redis (``SWITCHBOARD_REDIS_URL``), every gateway process shares each breaker's
    openings, closings and half-open probe (``app.routing.shared``); without it, or false,
    each process keeps its own."""

    @field_validator("max_cooldown_s")
    @classmethod
    def _max_not_below_first(cls, longest: float, info: ValidationInfo) -> float:
        return _not_below_first(longest, info, "cooldown_s", "a breaker's first opening")


def _not_below_first(longest: float, info: ValidationInfo, first_field: str,
                     first_is: str) -> float:
    """A ``max_...`` duration validated against the first one it caps (``first_field``, whose
    meaning is ``first_is``): not below it."""
    first = info.data.get(first_field)
    if first is not None and longest < first:
        raise ValueError(f"{longest:g} is below {first_field} ({first:g}): {first_is} would "
                         "last longer than the longest")
    return longest


class RetryConfig(BaseModel):
    """Retries of a target before falling back to the next one (``app.routing.retry``)."""

    model_config = _FORBID
    attempts: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries on the same target after a 429, a 502/503 or a refused connection."""
    backoff_s: Seconds = 0.1
    """The first retry's base delay; it doubles with each retry, with jitter."""
    max_backoff_s: Annotated[Seconds, Field(validate_default=True)] = 2.0
    """The longest a retry's delay grows to (at least ``backoff_s``; checked when left at its
    default too)."""
    max_retry_after_s: Seconds = 10.0
    """The longest ``Retry-After`` waited for; a longer one falls back to the next target."""
    budget: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Retries may add at most this share of the calls of the last 10 s..."""
    min_retries: Annotated[int, Field(ge=0)] = 10
    """...or this many in 10 s, whichever is more."""
    deadline_s: Seconds = 300.0
    """The longest a call may take to its first byte, over all its attempts, retries and
    waits; a client may shorten it with the ``x-switchboard-deadline-s`` header."""

    @field_validator("max_backoff_s")
    @classmethod
    def _max_not_below_first(cls, longest: float, info: ValidationInfo) -> float:
        return _not_below_first(longest, info, "backoff_s", "the first retry's delay")


class Streaming(BaseModel):
    model_config = _FORBID
    keepalive_s: Seconds = 10.0
    """Quiet time after which a stream starts and sends an SSE comment while waiting for tokens."""
    first_chunk_timeout_s: Seconds = 8.0
    """The longest a stream attempt waits for its first chunk when its model has another target
    to fall back to: past it, the target counts as failed (its circuit breaker hears of it)
    and the next one is tried. Shorter than ``keepalive_s``, so that a dead target is left
    before the first keep-alive commits the client to it; set it longer (or serve a model from
    one target) and a stream that is quiet for ``keepalive_s`` is committed to its target,
    which then has ``timeout_s`` to send its first token."""


class CallLog(BaseModel):
    model_config = _FORBID
    capture_bodies: bool = False
    """Store request and response bodies with each call (off by default)."""
    redact_keys: list[str] = Field(default_factory=lambda: [
        "api_key", "apikey", "authorization", "password", "secret", "token", "access_token"])
    """JSON keys whose values are replaced by ``[redacted]`` in captured bodies."""
    redact_patterns: list[str] = Field(default_factory=list)
    """Regular expressions whose matches are replaced by ``[redacted]`` in captured bodies."""
    buffer_max: Annotated[int, Field(ge=1)] = 10_000
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    flush_interval_s: Seconds = 0.05
    claim_idle_s: Seconds = 30.0
    """Rows a gateway took from the Redis spool and left unacknowledged this long (it died) are
    taken over by another gateway. Must exceed the longest store write."""
    forget_idle_s: Seconds = 600.0
    """A Redis spool consumer of another process (``host-pid``) with no pending row, idle this
    long, is deleted from the group when a gateway starts reading the spool and every minute
    after, so restarts do not pile consumers up. A live one forgotten while idle (it reads
    nothing during a database outage) is recreated by its next read and loses nothing."""
    fsync_interval_s: Seconds = 1.0
    """The longest a journaled row (every buffered row, written to the spool directory before
    its call is answered) stays neither stored, spooled nor fsynced: a killed process loses no
    answered call's row, a lost machine at most this interval of them."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> CallLog:
        for i, pattern in enumerate(self.redact_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"calllog.redact_patterns.{i}: not a valid regex: {exc}") \
                    from None
        return self


DEFAULT_REFUSAL_PHRASES = (
    "as an ai language model", "as an ai model", "i can't help with that",
    "i cannot help with that", "i can't assist with that", "i cannot assist with that",
    "i'm sorry, but i can't", "i'm sorry, but i cannot", "i am sorry, but i cannot",
    "i'm unable to help with", "i am unable to help with", "i won't be able to help",
    "i can't comply with", "i cannot comply with",
)


class EmbeddingDrift(BaseModel):
    model_config = _FORBID
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Share of answers embedded by the local all-MiniLM-L6-v2 model (needs the ``[local]``
    extra; without it embedding drift is simply off). 0 turns it off."""
    baseline_size: Annotated[int, Field(ge=10)] = 200
    """Sampled answers whose mean embedding is the baseline centroid."""
    window: Annotated[int, Field(ge=10)] = 200
    """Recent sampled answers whose centroid is compared with the baseline."""
    threshold: Annotated[float, Field(gt=0, le=2)] = 0.1
    """Cosine distance between the centroids past which the signal is flagged."""
    queue_max: Annotated[int, Field(ge=1)] = 1000
    """Sampled answers waiting to be embedded; past that, samples are skipped (and counted)."""
    max_per_second: Annotated[float, Field(gt=0)] = 0.2
    """Most samples taken per second and worker, whatever the traffic. The model runs in an
    encoder process beside each worker, on the same machine's CPU (7-16 ms per answer on one
    core, bench/README.md): this bounds what embedding drift costs, about 0.3% of a core at the
    default, plus ~5 s of CPU to load the model once, at start-up. The price is time: the
    default baseline takes ~17 minutes of traffic per worker to capture. Embedding drift is the
    slow, broad signal; the others react within hundreds of answers."""


class Drift(BaseModel):
    model_config = _FORBID
    enabled: bool = True
    baseline_size: Annotated[int, Field(ge=10)] = 1000
    """Answers per public model and provider captured as the baseline, after start-up or a
    reset, then persisted in the database (``switchboard drift baseline reset MODEL``)."""
    window: Annotated[int, Field(ge=10)] = 500
    """Recent answers compared with the baseline."""
    evaluate_every: Annotated[int, Field(ge=1)] = 50
    """Answers between two evaluations of the window (PSI and rates; cheap)."""
    psi_threshold: Annotated[float, Field(gt=0)] = 0.25
    """Length PSI past which the length signal is flagged (> 0.25 is a major shift)."""
    rate_delta: Annotated[float, Field(gt=0, le=1)] = 0.05
    """Rise of the refusal rate or the invalid-JSON rate over the baseline's that is flagged."""
    refusal_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PHRASES))
    """Case-insensitive phrases that mark an answer as a refusal (searched in its first
    ``refusal_scan_chars`` characters)."""
    refusal_scan_chars: Annotated[int, Field(ge=16)] = 200
    """Refusals open the answer; scanning further costs ~0.6 us per 100 characters."""
    sync_interval_s: Seconds = 5.0
    """How often baselines are saved to and reloaded from the database (picks up resets)."""
    embedding: EmbeddingDrift = Field(default_factory=EmbeddingDrift)


class GatewayConfig(BaseModel):
    model_config = _FORBID
    providers: dict[Name, ProviderConfig]
    models: dict[Name, ModelConfig]
    pricing: dict[str, Price] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    streaming: Streaming = Field(default_factory=Streaming)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    experiments: dict[ArmName, ExperimentConfig] = Field(default_factory=dict)
    calllog: CallLog = Field(default_factory=CallLog)
    drift: Drift = Field(default_factory=Drift)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    _referenced: frozenset[KeyPath] = PrivateAttr(default=frozenset())

    @property
    def referenced(self) -> frozenset[KeyPath]:
        """The paths of the values written with a ``${...}`` reference (credentials are):
        ``app.config_diff`` never shows them."""
        return self._referenced

    @model_validator(mode="after")
    def _between_sections(self) -> GatewayConfig:
        """Every check between sections runs, and one error lists all their problems (a path
        a line): a reader fixes them in one go rather than one rerun each."""
        problems = [*self._defaults_within_the_limit(), *self._privacy_entities(),
                    *self._targets_name_providers()]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _defaults_within_the_limit(self) -> list[str]:
        """No public model's ``max_tokens_default`` is above ``limits.max_tokens``, the cap of
        every model (a call giving no ``max_tokens`` would be sent more than any may ask)."""
        cap = self.limits.max_tokens
        return [f"models.{name}.max_tokens_default: {model.max_tokens_default} is above "
                f"limits.max_tokens ({cap}), the most tokens any call may ask for"
                for name, model in self.models.items()
                if model.max_tokens_default is not None and model.max_tokens_default > cap]

    def _privacy_entities(self) -> list[str]:
        """Each model's ``privacy.entities`` names known types (its own custom ones, the
        global section's, built-in ones, or ``privacy.presidio``'s)."""
        inherited = tuple(custom_names(self.privacy))
        found_by_model = model_entities(self.privacy)
        problems = []
        for name, model in self.models.items():
            if model.privacy is not None:
                try:
                    check_entities(model.privacy, inherited, found_by_model)
                except ValueError as exc:
                    problems.append(f"models.{name}.privacy: {exc}")
        return problems

    def _targets_name_providers(self) -> list[str]:
        """Targets name providers, targets of one list share an endpoint, their ``params`` are
        what their provider takes (``ProviderBase.target_problems``), experiments name
        models (one experiment a model) and have a variant that serves the calls."""
        problems = []
        lists = [(f"models.{public}", model.targets) for public, model in self.models.items()]
        lists += [(f"experiments.{name}.variants.{variant}", arm.targets)
                  for name, experiment in self.experiments.items()
                  for variant, arm in experiment.variants.items() if arm.targets is not None]
        for where, targets in lists:
            for i, target in enumerate(targets):
                if target.provider not in self.providers:
                    problems.append(_no_provider(f"{where}.targets.{i}", target.provider,
                                                 self.providers))
        if not problems:
            problems += [problem for where, targets in lists
                         for problem in _repeated_targets(where, targets)]
            problems += [problem for where, targets in lists
                         if (problem := self._common_endpoint(where, targets)) is not None]
            problems += [f"{where}.targets.{i}.{problem}" for where, targets in lists
                         for i, target in enumerate(targets)
                         for problem in self.providers[target.provider].target_problems(
                             model=target.model, params=target.params)]
        split: dict[str, str] = {}
        for name, experiment in self.experiments.items():
            if experiment.model not in self.models:
                problems.append(_no_model(name, experiment.model))
            elif all(arm.shadow for arm in experiment.variants.values()):
                problems.append(f"experiments.{name}.variants: every variant is a shadow; "
                                "at least one must serve the calls")
            elif experiment.model in split:
                problems.append(f"experiments.{name}.model: {experiment.model!r} is already "
                                f"split by experiment {split[experiment.model]!r}")
            split.setdefault(experiment.model, name)
        return problems

    def _common_endpoint(self, where: str, targets: list[TargetConfig]) -> str | None:
        """A target list's problem when its targets share no endpoint. A call only goes to the
        targets that can serve it (``app.routing.table.Route.serving``), so targets that can do
        different things are fine together, but targets that are never one another's fallback
        (an embeddings-only provider beside a chat-only one) are a mistake in the config."""
        serves = [provider_serves(self.providers[t.provider]) for t in targets]
        if frozenset.intersection(*serves):
            return None
        each = "; ".join(
            f"targets.{i} (provider {t.provider!r}, type "
            f"{self.providers[t.provider].type}) serves {_endpoints(caps)}"
            for i, (t, caps) in enumerate(zip(targets, serves, strict=True)))
        return (f"{where}.targets: no endpoint is served by every target, so none can stand in "
                f"for another: {each}")


def _repeated_targets(where: str, targets: list[TargetConfig]) -> list[str]:
    """A target listed again in one list (same provider, model and ``params``): a call tries
    each target once, so the repeat would be the target's own fallback, failing with it and
    opening its breaker twice as fast; ``retries`` is what tries a target again."""
    first: dict[tuple[str, str, str], int] = {}
    problems = []
    for i, target in enumerate(targets):
        same = (target.provider, target.model,
                json.dumps(target.params, sort_keys=True, default=str))
        if same in first:
            problems.append(f"{where}.targets.{i}: the same target as targets.{first[same]} "
                            f"(provider {target.provider!r}, model {target.model[:200]!r}); "
                            "a call tries each target once: 'retries' tries one again")
        first.setdefault(same, i)
    return problems


def _no_provider(target: str, name: str, providers: Iterable[str]) -> str:
    return (f"{target}.provider: no provider named {name!r} "
            f"(known: {', '.join(sorted(map(str, providers)))})")


def _no_model(experiment: str, name: str) -> str:
    return f"experiments.{experiment}.model: no public model named {name!r}"


def _references(data: dict[Any, Any]) -> list[str]:
    """The targets naming no provider and the experiments naming no public model, read from
    the document itself: ``parse_config`` adds them when another problem kept pydantic from
    running ``GatewayConfig``'s own checks (which it skips once any field is invalid)."""
    providers, models = data.get("providers"), data.get("models")
    if not isinstance(providers, dict) or not isinstance(models, dict):
        return []
    experiments = data.get("experiments")
    experiments = experiments if isinstance(experiments, dict) else {}
    lists = [(f"models.{public}", model.get("targets")) for public, model in models.items()
             if isinstance(model, dict)]
    lists += [(f"experiments.{name}.variants.{variant}", arm.get("targets"))
              for name, experiment in experiments.items() if isinstance(experiment, dict)
              and isinstance(experiment.get("variants"), dict)
              for variant, arm in experiment["variants"].items() if isinstance(arm, dict)]
    problems = [_no_provider(f"{where}.targets.{i}", target["provider"], providers)
                for where, targets in lists if isinstance(targets, list)
                for i, target in enumerate(targets) if isinstance(target, dict)
                and isinstance(target.get("provider"), str)
                and target["provider"] not in providers]
    problems += [_no_model(name, experiment["model"]) for name, experiment in experiments.items()
                 if isinstance(experiment, dict) and isinstance(experiment.get("model"), str)
                 and experiment["model"] not in models]
    return problems


_HOST = re.compile(r"[\w.-]+")
"""A host name (internationalised ones too); an IP address is checked as one."""


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an upstream's URL (``None``: nothing): an ``http`` or
    ``https`` scheme, a host and a port from 1 to 65535 are needed, and neither a
    ``user:password@`` nor a query string or fragment is taken (errors name the upstream by its
    URL; every provider appends its API's paths to it). The URL itself is not quoted: it may
    hold a credential."""
    bad_port = "not a valid URL (its port is not a number from 1 to 65535)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad IPv6 address
        return bad_port if "port" in str(exc).lower() else "not a valid URL (a bad host)"
    if parts.scheme not in ("http", "https"):
        return "not an http:// or https:// URL"
    if "@" in parts.netloc:
        return ("holds a user name or password (user:password@): a URL is shown in errors and "
                "logs, so credentials do not belong in it; send them as a header instead, "
                "e.g. headers: {Authorization: \"Basic ${PROXY_BASIC_AUTH}\"} (base64 of "
                "user:password)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return ("holds a query string or fragment (?...#...): the gateway appends each API's "
                "path to the URL, and a URL is shown in errors and logs, so a key does not "
                "belong in it; send it as a header instead, e.g. headers: {x-api-key: "
                "\"${UPSTREAM_KEY}\"}")
    host = parts.hostname or ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return "not a valid URL (a bad host)"
    elif not _HOST.fullmatch(host):
        return "not a valid URL (no host)" if not host else "not a valid URL (a bad host)"
    return bad_port if port == 0 else None


def _endpoints(serves: frozenset[str]) -> str:
    return ", ".join(text.split(" (")[0] for name, text in ENDPOINTS.items() if name in serves)


_REF = re.compile(r"\$\{(?:file:(?P<file>[^}]+)"
                  r"|(?P<env>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?)\}")
FILE_REF = re.compile(r"\$\{file:([^}]+)\}")
"""A ``${file:/path}`` reference (see the module docstring)."""
MAX_SECRET_FILE = 64 * 1024


MAX_DEPTH = 64
"""The deepest a config document nests (no setting is within 10 levels of it): deeper, or
an alias that contains itself (``a: &a [*a]``, which PyYAML builds as a list holding itself),
is refused rather than walked until the interpreter's recursion limit."""


def _interpolate(node: Any, env: Mapping[str, str], path: KeyPath, problems: list[str],
                 referenced: set[KeyPath]) -> Any:
    """``node`` with its references replaced; the paths of the strings that had one are added
    to ``referenced``. ``ConfigError`` for a document nested deeper than ``MAX_DEPTH``."""
    if len(path) > MAX_DEPTH and isinstance(node, (dict, list)):
        where = ".".join(part[:40] for part in path[:8])
        raise ConfigError(f"{where}...: nested more than {MAX_DEPTH} levels deep (an alias "
                          "that contains itself, such as 'a: &a [*a]'?)")
    if isinstance(node, dict):
        return {k: _interpolate(v, env, (*path, str(k)), problems, referenced)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, (*path, str(i)), problems, referenced)
                for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        where = ".".join(path)
        def repl(match: re.Match[str]) -> str:
            if match["file"] is not None:  # replaced once: its content is not interpolated
                try:
                    return read_secret_file(Path(match["file"]))
                except ConfigError as exc:
                    problems.append(f"{where}: {exc}")
                    return ""
            name, default = match["env"], match["default"]
            value = env.get(name)
            # ``:-`` as in sh and docker compose: the default also stands in for an empty value.
            if value:
                return value
            if default is not None:
                return default
            if value is not None:  # set but empty, without a default: validation judges it
                return value
            problems.append(f"{where}: environment variable {name} is not set")
            return ""

        if _REF.search(node):
            referenced.add(path)
        return _REF.sub(repl, node)
    return node


def read_secret_file(path: Path) -> str:
    """A ``${file:...}`` reference's value: the file's text without its trailing newline.
    ``ConfigError`` names the file, never its content."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"the file {path} is over {MAX_SECRET_FILE // 1024} KiB")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"the file {path} is not UTF-8 text") from None


def _format_errors(error: ValidationError) -> list[str]:
    out = []
    for item in error.errors():
        loc = _yaml_path(item["loc"])
        if item["type"] == "extra_forbidden":
            out.append(f"{loc}: unknown key")
        elif item["type"] == "union_tag_invalid":
            # pydantic's message quotes the tag, which may be a ${VAR} or ${file:} secret put
            # in the wrong place: the path and the types there are named, never the value.
            ctx = item.get("ctx", {})
            field = str(ctx.get("discriminator", "type")).strip("'")
            out.append(f"{loc}.{field}: unknown type; expected one of: "
                       f"{ctx.get('expected_tags', '')}")
        elif item["type"] == "value_error" and not loc:  # GatewayConfig's checks: a path a line
            error_text = str(item["ctx"].get("error", item["msg"])) if "ctx" in item \
                else item["msg"]
            out += error_text.splitlines()
        else:
            message = problem_message(item)
            out.append(f"{loc}: {message}" if loc else message)
    return out


def _yaml_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the YAML path a reader wrote: pydantic inserts the tag of a
    tagged union (a provider's ``type``, Azure's ``auth.type``) into it."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["providers"] and len(parts) > 2:
        del parts[2]
        if len(parts) > 3 and parts[2] == "auth":
            del parts[3]
    return ".".join(parts)


def _follows_from(line: str, unresolved: set[str]) -> bool:
    """Whether ``line`` is about a value whose ``${...}`` could not be resolved (it was
    validated as the empty string), or about the object holding it (a provider whose
    ``type`` was one, say): the reference's own problem says it all."""
    path = line.split(": ", 1)[0]
    return any(path == where or path.startswith(f"{where}.") or path == where.rpartition(".")[0]
               for where in unresolved)


def parse_config(raw: Any, env: Mapping[str, str]) -> GatewayConfig:
    """Validate an already-parsed YAML document, interpolating ``${ENV}`` and ``${file:...}``
    references first. ``ConfigError`` lists every problem found, one a line: a reference that
    cannot be resolved stands as the empty string while the rest is validated (what follows
    from that emptiness is not listed), and references between sections (targets naming
    providers, experiments naming models) are checked even when a field is invalid; the checks
    that need what they compare to be valid (targets sharing an endpoint, privacy entities,
    default token limits against the global cap) wait for it. ``env`` is also where settings
    left to an environment variable must find it (Azure workload identity's)."""
    if not isinstance(raw, dict):
        raise ConfigError("config: the document must be a mapping with 'providers' and 'models'")
    problems: list[str] = []
    referenced: set[KeyPath] = set()
    data = _interpolate(raw, env, (), problems, referenced)
    unresolved = {problem.split(": ", 1)[0] for problem in problems}
    try:
        # the environment, for settings that default to a variable read by a library (Azure
        # workload identity's): one that is unset is refused here rather than when built
        config = GatewayConfig.model_validate(data, context={"env": env})
    except ValidationError as exc:
        found = _format_errors(exc)
        found += [line for line in _references(data) if line not in found]
        problems += [line for line in found if not _follows_from(line, unresolved)]
    else:
        if not problems:
            config._referenced = frozenset(referenced)
            return config
    raise ConfigError("\n".join(problems))


def load_config(path: Path, env: Mapping[str, str]) -> GatewayConfig:
    """Read and validate a YAML config file (UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start} (line {line}); save the file as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, env)


_DEFAULT_ENV_PROVIDERS: dict[str, tuple[str, dict[str, str]]] = {
    # env var -> (provider name and type, public model -> target model)
    "OPENAI_API_KEY": ("openai", {
        "gpt-4o": "gpt-4o",
        "gpt-4o-mini": "gpt-4o-mini",
        "gpt-4.1": "gpt-4.1",
        "gpt-4.1-mini": "gpt-4.1-mini",
        "text-embedding-3-small": "text-embedding-3-small",
        "text-embedding-3-large": "text-embedding-3-large",
    }),
    "ANTHROPIC_API_KEY": ("anthropic", {
        "claude-sonnet-4": "claude-sonnet-4-20250514",
        "claude-3-5-haiku": "claude-3-5-haiku-latest",
    }),
}


def embedded_config(env: Mapping[str, str]) -> GatewayConfig:
    """The config used when none is given: the offline ``mock`` models, plus the public models
    of each provider whose API key is in the environment."""
    raw: dict[str, Any] = {
        "providers": {"mock": {"type": "mock"}},
        "models": {
            "mock-chat": {"targets": [{"provider": "mock", "model": "mock-chat"}]},
            "mock-embed": {"targets": [{"provider": "mock", "model": "mock-embed"}]},
        },
    }
    for var, (ptype, models) in _DEFAULT_ENV_PROVIDERS.items():
        if env.get(var):
            raw["providers"][ptype] = {"type": ptype, "api_key": "${" + var + "}"}
            for public, target in models.items():
                raw["models"][public] = {"targets": [{"provider": ptype, "model": target}]}
    return parse_config(raw, env)
