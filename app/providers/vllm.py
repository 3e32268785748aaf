"""Self-hosted vLLM servers: the OpenAI wire format plus what vLLM needs to be used safely.

On top of the OpenAI-compatible provider, every outgoing chat or completion request:

- never carries ``best_of`` (rejected or removed by current vLLM);
- always carries ``max_tokens``: the client's ``max_completion_tokens``/``max_tokens`` (the
  smaller one when both are sent; a completion's 0, echo without generating, as it came), else
  the target's default (the model's ``max_tokens_default``, or its cap where the provider's
  default is above it: ``routing.table``), else for chat the provider's ``max_tokens_default``
  (vLLM's chat otherwise generates up to the context length) and for completions
  ``COMPLETION_DEFAULT``, the 16 that OpenAI's and vLLM's own completions default to;
- asks for usage in streams, and carries the client's vLLM extras (``top_k``, ``min_p``, ...) and
  the target's ``params`` as the OpenAI provider does;
- speaks the server's structured-output dialect. vLLM up to 0.11 reads ``guided_json`` /
  ``guided_regex`` / ``guided_choice`` / ``guided_grammar``; from 0.12 it reads
  ``structured_outputs: {json|regex|choice|grammar}``; each silently ignores the other's fields.
  Whatever the client sent is rewritten into the server's dialect, chosen by the provider's
  ``structured_output`` setting or, with ``auto``, by probing ``GET /version`` (at the server
  root) once per provider. A constraint the server's dialect cannot express is refused with a
  400 rather than dropped. ``response_format`` works on both and is left alone;
- sends ``top_p: 0`` as ``temperature: 0`` (greedy; vLLM takes only 0 < top_p <= 1) and
  refuses (400) ``n`` > 1 with greedy sampling and an empty stop string, which vLLM refuses
  (``vllm_sampling``);
- sends ``developer`` messages as ``system`` ones: vLLM's chat hands each role to the model's
  chat template as it is, and templates know ``system`` (Llama 3's renders a literal
  ``developer`` header, Qwen's drop or refuse the message; vLLM itself folds ``developer`` into
  ``system`` only on its Responses API; gpt-oss's template reads both alike);
- refuses (400, before sending) what vLLM cannot honour in a chat: custom tools and custom tool
  calls (vLLM's tools are functions only) and audio output or ``web_search_options``, which it
  would ignore (``app.providers.refusals``).

Errors in both vLLM body shapes (flat up to 0.10.0, nested from 0.10.1) are read by
``http.default_error``; mid-stream error frames by ``openai.check_stream_chunk``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field, SecretStr

from app import errors
from app.providers.base import Json, ProviderBase, Target, Trust, developer_as_system
from app.providers.http import Upstream
from app.providers.openai import OpenAICompatible, bearer
from app.providers.refusals import refuse_custom_payload, refuse_outputs

WHO = "vLLM servers"
COMPLETION_DEFAULT = 16
"""``max_tokens`` of a completion that names none (OpenAI's and vLLM's default)."""


class VllmProvider(ProviderBase):
    """A self-hosted vLLM OpenAI-compatible server."""

    type: Literal["vllm"]
    trust: Trust = "private"
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key: SecretStr | None = None
    max_tokens_default: Annotated[int, Field(ge=1)] = 1024
    """``max_tokens`` of a chat call that names none (completions: ``COMPLETION_DEFAULT``)."""
    structured_output: Literal["auto", "guided", "structured_outputs"] = "auto"
    metrics_interval_s: Annotated[float, Field(ge=0)] = 5.0
    """How often the gateway scrapes the server's ``/metrics`` (queue, KV cache, prefix hits);
    0 turns scraping off."""

Dialect = Literal["guided", "structured_outputs"]

# Old top-level field -> key inside ``structured_outputs``.
GUIDED_TO_STRUCTURED: dict[str, str] = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
    "guided_whitespace_pattern": "whitespace_pattern",
    "structural_tag": "structural_tag",
}
STRUCTURED_TO_GUIDED: dict[str, str] = {v: k for k, v in GUIDED_TO_STRUCTURED.items()}

PROBE_TIMEOUT_S = 10.0
"""A ``/version`` probe waits at most this long (less if the provider's timeout is shorter)."""

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)")


def dialect_for_version(version: str) -> Dialect | None:
    """The structured-output dialect of a vLLM version string; None if it can't be read."""
    match = _VERSION.match(version)
    if match is None:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    return "structured_outputs" if (major, minor) >= (0, 12) else "guided"


def to_structured_outputs(payload: Json) -> None:
    """Move the ``guided_*`` fields of ``payload`` into ``structured_outputs`` (in place).

    Keys already in the client's ``structured_outputs`` win over their ``guided_*`` twins. A
    ``structured_outputs`` that is not an object is left alone for the server to reject.
    """
    present = [name for name in GUIDED_TO_STRUCTURED if payload.get(name) is not None]
    if not present:
        return
    existing = payload.get("structured_outputs")
    if existing is not None and not isinstance(existing, dict):
        return
    merged: Json = {GUIDED_TO_STRUCTURED[name]: payload.pop(name) for name in present}
    merged.update(existing or {})
    payload["structured_outputs"] = merged


def to_guided(payload: Json) -> None:
    """Move ``structured_outputs`` into the ``guided_*`` fields of ``payload`` (in place).

    The client's own ``guided_*`` fields win over their twins. ``json_object: true`` becomes
    ``response_format: {"type": "json_object"}`` unless the client set a ``response_format``.
    Raises ``InvalidRequest`` for a key the old dialect has no field for, so that a constraint is
    never silently dropped. A ``structured_outputs`` that is not an object is left alone.
    """
    options = payload.get("structured_outputs")
    if not isinstance(options, dict):
        return
    for key in options:
        if key not in STRUCTURED_TO_GUIDED and key != "json_object":
            raise errors.InvalidRequest(
                f"structured_outputs.{key} is not supported by this vLLM server "
                "(it predates vLLM 0.12; use the guided_* fields it understands)",
                param=f"structured_outputs.{key}",
            )
    del payload["structured_outputs"]
    for key, value in options.items():
        if key == "json_object":
            if value and payload.get("response_format") is None:
                payload["response_format"] = {"type": "json_object"}
        elif value is not None:
            payload.setdefault(STRUCTURED_TO_GUIDED[key], value)


GREEDY_BELOW = 1e-5
"""vLLM's ``_SAMPLING_EPS``: a temperature below it samples greedily."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def vllm_sampling(payload: Json) -> None:
    """OpenAI-valid sampling that vLLM's ``SamplingParams`` refuses, as vLLM takes it or
    refused here (in place), so that the client gets a 400 naming its own field and another
    target may serve the call: ``top_p: 0`` (vLLM takes 0 < top_p <= 1, checked before a
    greedy temperature resets it) is sent as ``temperature: 0``, the greedy sampling it means;
    ``n`` > 1 with greedy sampling (vLLM: "n must be 1 when using greedy sampling") and an
    empty stop string (vLLM: "stop cannot contain an empty string") are refused."""
    top_p = _number(payload.get("top_p"))
    if top_p == 0:
        del payload["top_p"]
        payload["temperature"] = 0
    temperature, n = _number(payload.get("temperature")), payload.get("n")
    if temperature is not None and temperature < GREEDY_BELOW and isinstance(n, int) \
            and not isinstance(n, bool) and n > 1:
        raise errors.InvalidRequest(
            "vLLM samples greedily at temperature 0 (or top_p 0) and then makes one choice; "
            "n must be 1", param="n")
    stop = payload.get("stop")
    if stop == "" or (isinstance(stop, list) and "" in stop):
        raise errors.InvalidRequest("vLLM takes no empty stop sequence", param="stop")


class VersionProbe:
    """The structured-output dialect of one vLLM server, learnt from ``GET /version``.

    A success is cached for the provider's life. A failure is remembered for ``retry_after_s``
    (during which the dialect is unknown) and then probed again. Concurrent first callers share
    one probe.
    """

    def __init__(self, root: Upstream, *, retry_after_s: float) -> None:
        self._root = root
        self._retry_after_s = retry_after_s
        self._dialect: Dialect | None = None
        self._retry_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Dialect | None:
        """The dialect if known; never probes."""
        return self._dialect

    def _due(self) -> bool:
        return self._dialect is None and time.monotonic() >= self._retry_at

    async def resolve(self) -> Dialect | None:
        """The dialect, probing first if it is unknown and a probe is due; None if unknown."""
        if not self._due():
            return self._dialect
        async with self._lock:
            if self._due():
                self._dialect = await self._probe()
                if self._dialect is None:
                    self._retry_at = time.monotonic() + self._retry_after_s
        return self._dialect

    async def _probe(self) -> Dialect | None:
        try:
            body: Any = await self._root.get_json("/version")
        except errors.GatewayError:
            return None
        version = body.get("version") if isinstance(body, dict) else None
        return dialect_for_version(version) if isinstance(version, str) else None


class VllmServer(OpenAICompatible):
    """One vLLM server. ``dialect`` forces the structured-output dialect; None probes it."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        max_tokens_default: int,
        dialect: Dialect | None,
        probe: VersionProbe,
    ) -> None:
        super().__init__(upstream)
        self._max_tokens_default = max_tokens_default
        self._dialect = dialect
        self._probe = probe

    async def ready(self) -> None:
        """Learn the server's dialect first when it is probed for (once; see ``VersionProbe``)."""
        if self._dialect is None:
            await self._probe.resolve()

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        """The OpenAI preparation, then vLLM's: limit, no ``best_of``, the server's dialect."""
        payload = super().prepare(payload, target=target, stream=stream)
        if "messages" in payload:  # a chat: what vLLM would ignore or refuse, refused here
            refuse_custom_payload(payload, who=WHO)
            refuse_outputs(payload, who=WHO)
            payload["messages"] = developer_as_system(payload["messages"])
        payload.pop("best_of", None)
        vllm_sampling(payload)
        if not stream:
            # vLLM answers 400 to stream_options on a request that does not stream.
            payload.pop("stream_options", None)
        # vLLM reads one limit: the smaller one when the client sent both (each is a limit)
        limits = [n for n in (payload.pop("max_completion_tokens", None),
                              payload.get("max_tokens")) if isinstance(n, int)]
        if limits:
            payload["max_tokens"] = min(limits)
        else:  # a completion's body has a prompt, a chat's none
            fallback = COMPLETION_DEFAULT if "prompt" in payload else self._max_tokens_default
            payload["max_tokens"] = target.max_tokens_default or fallback
        dialect = self._dialect or self._probe.current
        if dialect == "structured_outputs":
            to_structured_outputs(payload)
        elif dialect == "guided":
            to_guided(payload)
        return payload


def server_root(base_url: str) -> str:
    """The server root of a vLLM ``base_url`` (``http://h:8000/v1`` -> ``http://h:8000``)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def build(
    config: VllmProvider, session: aiohttp.ClientSession, *, probe_retry_s: float = 30.0
) -> VllmServer:
    """A vLLM provider; ``probe_retry_s`` is how long a failed ``/version`` probe is trusted."""
    headers = {**bearer(config.api_key), **config.headers}
    upstream = Upstream.from_config(session, config, base_url=config.base_url, headers=headers)
    root = Upstream.from_config(session, config, base_url=server_root(config.base_url),
                                headers=headers,
                                timeout_s=min(config.timeout_s, PROBE_TIMEOUT_S))
    dialect: Dialect | None = (None if config.structured_output == "auto"
                               else config.structured_output)
    return VllmServer(upstream, max_tokens_default=config.max_tokens_default, dialect=dialect,
                      probe=VersionProbe(root, retry_after_s=probe_retry_s))
