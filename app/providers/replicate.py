"""Replicate predictions behind the OpenAI-shaped chat seam (``type: replicate``).

A target's ``model`` says what to run:

- ``owner/name`` (an official model): ``POST /models/{owner}/{name}/predictions``;
- ``owner/name:version`` (a version of any model): ``POST /predictions`` with ``version``;
- ``deployments/owner/name`` (a deployment): ``POST /deployments/{owner}/{name}/predictions``.

The chat request becomes the prediction's ``input`` (``replicate_input``: the families and how a
conversation becomes a prompt). Which mapping a target gets: its entry under the provider's
``models`` (a ``family``, or an ``input_map`` plus fixed ``input`` values), else the family
inferred from the model's owner, else the provider's ``family``; a target with none of these is
refused (400, ``model``), as its input fields cannot be known.

Non-streamed chat creates the prediction with ``Prefer: wait=N`` (``wait_s``, at most 60 and at
most the time left), so a prediction that finishes in time comes back finished. One that does
not comes back ``starting``/``processing`` and is polled (``GET /predictions/{id}``) every
``poll_interval_s``, growing by half each time up to ``poll_max_interval_s``, until it is
``succeeded``, ``failed`` or ``canceled`` or the target's timeout is spent (504, and the
prediction is cancelled).

Streamed chat creates the prediction with ``"stream": true`` and reads ``urls.stream`` (SSE):
``output`` events are content deltas, ``error`` raises, ``done`` ends it (``{"reason": ...}``
raises). The stream carries no token counts, so after ``done`` the prediction is fetched once
more (polled if not yet final) for its ``metrics``: the final chunk carries that usage. The
target's timeout bounds the wait for each event, not the stream's length; the fetch after
``done`` and its polling get a timeout of their own, counted from ``done``. The token is sent
to the stream URL only on the base URL's host or under its parent domain.

A client that goes away (a closed stream, a cancelled call) or a timeout while the prediction
runs cancels it: ``POST /predictions/{id}/cancel``, sent from a task of its own so that the
cancellation of the call cannot interrupt it. A call abandoned while its creating request is
still held by ``Prefer: wait`` has no prediction id yet, so that prediction runs to its end.

The class has no text completions or embeddings, so the gateway never routes them here:
Replicate's predictions are per-model schemas, with no common completion or embedding shape.
Errors: see ``replicate_output``. The API token travels only in ``Authorization: Bearer`` and
is scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from app import errors
from app.providers.base import ChatCall, Json, ProviderBase, Result, Target
from app.providers.replicate_http import ReplicateUpstream
from app.providers.replicate_input import (
    CANONICAL,
    FAMILIES,
    Family,
    InputSpec,
    build_input,
    gpt_fields,
    infer_family,
)
from app.providers.replicate_output import (
    RUNNING,
    TERMINAL,
    StreamTranslator,
    map_error,
    prediction_error,
    read_usage,
    to_chat_completion,
)
from app.scrub import config_secrets

log = logging.getLogger(__name__)

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_MODEL = re.compile(rf"^(?P<owner>{_NAME})/(?P<name>{_NAME})(?::(?P<version>[A-Za-z0-9]+))?$")
_DEPLOYMENT = re.compile(rf"^deployments/(?P<owner>{_NAME})/(?P<name>{_NAME})$")
CANCEL_TIMEOUT_S = 10.0


class ModelInput(BaseModel):
    """How one target model takes a chat: a known ``family``, or an ``input_map`` (canonical
    name -> the model's input field; canonical names in ``replicate_input.CANONICAL``), plus
    fixed ``input`` values sent with every prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: Family | None = None
    input_map: dict[str, str] | None = None
    input: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_mapping(self) -> ModelInput:
        if (self.family is None) == (self.input_map is None):
            raise ValueError("give exactly one of 'family' and 'input_map'")
        if self.input_map is not None:
            unknown = sorted(set(self.input_map) - set(CANONICAL))
            if unknown:
                raise ValueError(f"input_map keys {unknown} are not among {list(CANONICAL)}")
            if ("prompt" in self.input_map) == ("messages" in self.input_map):
                raise ValueError("input_map needs exactly one of 'prompt' and 'messages'")
        return self


class ReplicateProvider(ProviderBase):
    type: Literal["replicate"]
    api_token: SecretStr | None = None
    base_url: str = "https://api.replicate.com/v1"
    family: Family | None = None
    """The family of targets neither listed in ``models`` nor inferable from their owner."""
    models: dict[str, ModelInput] = Field(default_factory=dict)
    """Per target ``model`` string: its family or input map."""
    wait_s: Annotated[int, Field(ge=1, le=60)] = 60
    """``Prefer: wait=N``: how long Replicate may hold the creating request."""
    poll_interval_s: Annotated[float, Field(gt=0)] = 0.5
    poll_max_interval_s: Annotated[float, Field(gt=0)] = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """Where a target's predictions are created, and the model's owner and name."""

    path: str
    owner: str
    name: str
    version: str | None = None


def parse_model(model: str) -> Route:
    """The creation route of a target ``model`` string (see the module docstring)."""
    found = _DEPLOYMENT.match(model)
    if found:
        owner, name = found["owner"], found["name"]
        return Route(f"/deployments/{owner}/{name}/predictions", owner, name)
    found = _MODEL.match(model)
    if found is None:
        raise errors.InvalidRequest(
            f"Replicate target model {model!r} is not 'owner/name', 'owner/name:version' or "
            "'deployments/owner/name'", param="model", code="invalid_model")
    owner, name, version = found["owner"], found["name"], found["version"]
    if version:
        return Route("/predictions", owner, name, version)
    return Route(f"/models/{owner}/{name}/predictions", owner, name)


class ReplicatePredictions:
    """Chat over Replicate predictions; see the module docstring."""

    def __init__(self, upstream: ReplicateUpstream, config: ReplicateProvider) -> None:
        self._upstream = upstream
        self._config = config
        self._timeout_s = config.timeout_s
        self._cancels: set[asyncio.Task[None]] = set()
        self._plans: dict[str, tuple[Route, InputSpec]] = {}
        """A target model -> its route and input spec, worked out once (bounded by the
        config's targets, the only models that reach the provider)."""
        self._prefer: dict[int, dict[str, str]] = {}
        """``Prefer: wait=N`` headers by N, built once."""

    def spec(self, model: str, route: Route) -> InputSpec:
        """How ``model`` takes a chat (config entry, owner's family, provider's family)."""
        entry = self._config.models.get(model)
        if entry is not None and entry.input_map is not None:
            return InputSpec(entry.input_map, None, entry.input)
        family = entry.family if entry is not None else None
        family = family or (None if route.path.startswith("/deployments/")
                            else infer_family(route.owner, route.name)) or self._config.family
        if family is None:
            raise errors.InvalidRequest(
                f"Replicate target {model!r} has no known input schema: give it a family or an "
                "input_map under the provider's 'models'", param="model", code="unknown_schema")
        fields = gpt_fields(route.name) if family == "gpt" and route.owner == "openai" \
            and not route.path.startswith("/deployments/") else FAMILIES[family]
        return InputSpec(fields, family, entry.input if entry is not None else {})

    def _prepare(self, call: ChatCall, target: Target, *, stream: bool
                 ) -> tuple[Route, Json, int | None]:
        plan = self._plans.get(target.model)
        if plan is None:
            route = parse_model(target.model)
            plan = self._plans[target.model] = (route, self.spec(target.model, route))
        route, spec = plan
        given = build_input(call.request, spec, params=target.params,
                            max_tokens_default=target.max_tokens_default)
        body: Json = {"input": given}
        if route.version is not None:
            body["version"] = route.version
        if stream:
            body["stream"] = True
        limit = call.request.token_limit() or target.max_tokens_default
        return route, body, limit

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        route, body, limit = self._prepare(call, target, stream=False)
        deadline = time.monotonic() + (target.timeout_s or self._timeout_s)
        wait = max(1, min(self._config.wait_s, int(deadline - time.monotonic())))
        prefer = self._prefer.get(wait)
        if prefer is None:
            prefer = self._prefer[wait] = {"Prefer": f"wait={wait}"}
        prediction = await self._upstream.call("POST", route.path, body,
                                               timeout_s=target.timeout_s, headers=prefer)
        prediction = await self._until_final(prediction, deadline)
        answer, usage = to_chat_completion(prediction, created=int(time.time()), limit=limit)
        return Result(body=answer, usage=usage)

    async def _until_final(self, prediction: Json, deadline: float) -> Json:
        """Poll ``prediction`` until it is final; cancel it when the wait ends otherwise."""
        ident = _prediction_id(prediction)
        interval = self._config.poll_interval_s
        final = False
        try:
            while prediction.get("status") in RUNNING:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.UpstreamTimeout(
                        f"Replicate prediction {ident} did not finish within the timeout")
                await asyncio.sleep(min(interval, left))
                interval = min(interval * 1.5, self._config.poll_max_interval_s)
                prediction = await self._upstream.call(
                    "GET", f"/predictions/{ident}",
                    timeout_s=deadline - time.monotonic(), deadline=True)
            final = prediction.get("status") in TERMINAL
        finally:
            if not final:
                self.cancel_later(ident)
        return prediction

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as ``output`` events arrive; the last carries usage (see the module
        docstring). Errors before the first event raise from the first ``__anext__``. Closing
        the generator before ``done`` cancels the prediction."""
        route, body, limit = self._prepare(call, target, stream=True)
        prediction = await self._upstream.call("POST", route.path, body,
                                               timeout_s=target.timeout_s)
        ident = _prediction_id(prediction)
        error = prediction_error(prediction) if prediction.get("status") in TERMINAL else None
        if error is not None:
            raise error
        urls = prediction.get("urls")
        url = urls.get("stream") if isinstance(urls, dict) else None
        if not isinstance(url, str):
            self.cancel_later(ident)
            raise errors.BadUpstreamResponse(
                f"Replicate gave prediction {ident} no stream URL: the model cannot stream")
        model = prediction.get("model")
        translator = StreamTranslator(prediction_id=ident, created=int(time.time()),
                                      model=model if isinstance(model, str) else target.model)
        events = self._upstream.events(url, timeout_s=target.timeout_s)
        opened = False
        try:
            async for event in events:
                chunks = translator.feed(event.event, event.data)
                if not opened:
                    opened = True
                    yield translator.first()
                for chunk in chunks:
                    yield chunk
                if translator.done:
                    break
        finally:
            await events.aclose()
            if not translator.done:
                self.cancel_later(ident)
        # A started stream's timeout bounds the silence between chunks, not its length, so
        # the fetch for usage gets a bound of its own (a stream may outlast timeout_s).
        settled = time.monotonic() + (target.timeout_s or self._timeout_s)
        final = await self._until_final(
            await self._upstream.call("GET", f"/predictions/{ident}",
                                      timeout_s=target.timeout_s),
            settled)
        for chunk in translator.finish(read_usage(final), limit):
            yield chunk

    def cancel_later(self, ident: str) -> None:
        """Cancel prediction ``ident`` from a task of its own (the caller may be being
        cancelled itself)."""
        task = asyncio.get_running_loop().create_task(self._cancel(ident))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel(self, ident: str) -> None:
        try:
            await self._upstream.call("POST", f"/predictions/{ident}/cancel",
                                      timeout_s=CANCEL_TIMEOUT_S)
        except errors.GatewayError as exc:
            log.warning("cancelling Replicate prediction %s failed: %s", ident, exc.message)

    async def aclose(self) -> None:
        """Let pending cancellations finish; the shared session belongs to the app."""
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)


def _prediction_id(prediction: Json) -> str:
    ident = prediction.get("id")
    if not isinstance(ident, str) or not ident:
        raise errors.BadUpstreamResponse("Replicate answered a prediction without an id")
    return ident


def replicate_headers(config: ReplicateProvider) -> dict[str, str]:
    """``Authorization: Bearer`` (when configured), then the config's own headers."""
    headers: dict[str, str] = {}
    if config.api_token is not None:
        headers["Authorization"] = f"Bearer {config.api_token.get_secret_value()}"
    return {**headers, **config.headers}


def build(config: ReplicateProvider, session: aiohttp.ClientSession) -> ReplicatePredictions:
    upstream = ReplicateUpstream(session, base_url=config.base_url,
                                 headers=replicate_headers(config), timeout_s=config.timeout_s,
                                 connect_timeout_s=config.connect_timeout_s,
                                 secrets=config_secrets([config]), error_mapper=map_error)
    return ReplicatePredictions(upstream, config)
