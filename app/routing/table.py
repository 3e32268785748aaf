"""The routing table: the config compiled into immutable routes (and the experiments that split
some of them), swapped whole on reload.

A public model is not declared for one endpoint: it serves every endpoint one of its targets can
serve (chat, completions, embeddings, streamed or not: ``app.providers.base.Capability``). A call
goes only to the targets that can serve it (``Route.serving``); the others are skipped as if
absent, so an Anthropic target falls back to an OpenAI one for chat while completions go to the
OpenAI one alone. A call no target can serve is a 400 ``unsupported_endpoint`` naming the model
and the endpoint. Targets that share no endpoint at all are refused when the config loads
(``app.config``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from app import errors
from app.config import GatewayConfig, ModelConfig, TargetConfig
from app.providers import serves as provider_serves
from app.providers.base import ENDPOINTS, Capability, Target
from app.routing.experiments import Experiment, Variant


@dataclass(frozen=True, slots=True)
class FailClosed:
    """What a call on a route a policy has confined answers when every target of it has failed
    for a reason of the target's own (down, overloaded, timed out, an answer it could not parse;
    not a 4xx the request caused): a 503 with this ``code`` and ``message``, in place of the last
    target's error, so the client knows nothing beyond the route was tried."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Route:
    """One public model: its targets in the order they are tried, and its limits."""

    name: str
    targets: tuple[Target, ...]
    max_tokens_cap: int | None
    owned_by: str
    created: int
    strategy: str = "ordered"
    """How its targets are ordered for each call (``app.routing.strategies``)."""
    fail_closed: FailClosed | None = None
    """Set by a policy that confines calls to these targets (``app.stages.privacy``)."""
    narrowed: dict[Capability, Route | None] = field(default_factory=dict, compare=False,
                                                   repr=False)
    """For each capability only some targets have, this route with just those (None: no
    target has it); a capability absent here is one every target has. Filled by ``_narrow``."""

    def serving(self, capability: Capability, *, endpoint: str | None = None) -> Route:
        """This route with only the targets that can serve ``capability``; ``InvalidRequest``
        (400, code ``unsupported_endpoint``) when none can, naming ``endpoint`` (what the
        client called, when it is not the capability's own: ``/v1/messages`` asks for chat)."""
        route = self.narrowed.get(capability, self)
        if route is None:
            raise unsupported_endpoint(self.name, endpoint or ENDPOINTS[capability])
        return route

    @property
    def windowed(self) -> bool:
        """Whether a target has a ``context_window`` (calls then estimate their prompt)."""
        return any(t.context_window is not None for t in self.targets)


def unsupported_endpoint(model: str, endpoint: str) -> errors.InvalidRequest:
    """The 400 for a call on ``model`` to ``endpoint`` (as ``ENDPOINTS`` names them), which
    none of its targets can serve."""
    return errors.InvalidRequest(
        f"The model '{model}' does not serve {endpoint}: none of its targets can.",
        param="model", code="unsupported_endpoint")


def _default(target: TargetConfig, model_default: int | None, cap: int | None,
             config: GatewayConfig) -> int | None:
    """The token limit a call that asks for none is sent to ``target`` with: the model's
    ``max_tokens_default``; else, where the model has a ``max_tokens_cap``, the cap, unless the
    provider has a default of its own (vLLM's 1024, Anthropic's 4096...) within it (a provider
    with none, such as OpenAI or Gemini, would generate up to the model's own maximum, past
    the cap); else ``None`` (the provider's)."""
    if model_default is not None or cap is None:
        return model_default
    own = getattr(config.providers[target.provider], "max_tokens_default", None)
    return None if isinstance(own, int) and own <= cap else cap


def _target(config: TargetConfig, max_tokens_default: int | None) -> Target:
    return Target(provider=config.provider, model=config.model, params=dict(config.params),
                  max_tokens_default=max_tokens_default, weight=config.weight,
                  context_window=config.context_window, timeout_s=config.timeout_s,
                  first_chunk_timeout_s=config.first_chunk_timeout_s)


def _narrow(route: Route, config: GatewayConfig) -> Route:
    """``route`` with its ``narrowed`` routes (a fresh mapping: ``replace`` shares it)."""
    route = replace(route, narrowed={})
    serves = [provider_serves(config.providers[t.provider]) for t in route.targets]
    for capability in ENDPOINTS:
        able = tuple(t for t, caps in zip(route.targets, serves, strict=True)
                     if capability in caps)
        if len(able) < len(route.targets):
            route.narrowed[capability] = replace(route, targets=able, narrowed={}) \
                if able else None
    return route


def narrowed_to(route: Route, targets: Sequence[Target], config: GatewayConfig, *,
                fail_closed: FailClosed | None = None) -> Route:
    """``route`` with only ``targets`` (some of its own, in its order), its per-capability
    narrowing recomputed; ``fail_closed``: what a call answers when they have all failed."""
    return _narrow(replace(route, targets=tuple(targets),
                           fail_closed=fail_closed or route.fail_closed), config)


def _route(base: Route, targets: Sequence[TargetConfig], strategy: str,
           model: ModelConfig, config: GatewayConfig) -> Route:
    """``base`` (the route of the public model ``model``) with other targets: an experiment's
    variant."""
    chosen = tuple(_target(t, _default(t, model.max_tokens_default, model.max_tokens_cap,
                                       config)) for t in targets)
    return _narrow(replace(base, strategy=strategy, targets=chosen), config)


class RoutingTable:
    """Immutable map of public model name to ``Route``."""

    def __init__(self, config: GatewayConfig, *, created: int | None = None,
                 previous: RoutingTable | None = None) -> None:
        """``created``: when the models were created (``/v1/models``), now if not given; a
        model ``previous`` (the table this one replaces on a reload) already serves keeps its
        time there, so a reload changes only the times of the models it adds."""
        created = int(time.time()) if created is None else created
        before = {} if previous is None else previous._routes
        routes: dict[str, Route] = {}
        for name, model in config.models.items():
            cap = model.max_tokens_cap
            targets = tuple(_target(t, _default(t, model.max_tokens_default, cap, config))
                            for t in model.targets)
            global_cap = config.limits.max_tokens
            routes[name] = _narrow(Route(
                name=name, targets=targets,
                max_tokens_cap=min(cap, global_cap) if cap else global_cap,
                owned_by=model.owned_by,
                created=before[name].created if name in before else created,
                strategy=model.strategy), config)
        self._routes: Mapping[str, Route] = MappingProxyType(routes)
        experiments: dict[str, Experiment] = {}
        for name, experiment in config.experiments.items():
            base = routes[experiment.model]
            arms = [Variant(name=variant, weight=arm.weight, shadow=arm.shadow, sample=arm.sample,
                            prompt=arm.prompt,
                            route=base if arm.targets is None else _route(
                                base, arm.targets, arm.strategy,
                                config.models[experiment.model], config))
                    for variant, arm in experiment.variants.items()]
            experiments[experiment.model] = Experiment(
                name=name, model=experiment.model, sticky=experiment.sticky,
                variants=tuple(v for v in arms if not v.shadow),
                shadows=tuple(v for v in arms if v.shadow))
        self._experiments: Mapping[str, Experiment] = MappingProxyType(experiments)

    def experiment_of(self, model: str) -> Experiment | None:
        """The experiment splitting ``model``'s calls, if one does."""
        return self._experiments.get(model)

    def serves(self, model: str) -> bool:
        """Whether ``model`` is one of this table's public models."""
        return model in self._routes

    def resolve(self, model: str) -> Route:
        """The route for a public model name; ``ModelNotFound`` (404) when there is none."""
        route = self._routes.get(model)
        if route is None:
            raise errors.ModelNotFound(model)
        return route

    def routes(self) -> list[Route]:
        return list(self._routes.values())
