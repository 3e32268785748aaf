"""The seam every provider implements, and the values that cross it.

Requests cross in the canonical (OpenAI-shaped) form: the validated request model plus the raw
JSON object the client sent. Responses come back OpenAI-shaped too: a ``chat.completion`` (or
``text_completion``, or embedding ``list``) dict with the call's ``Usage``; streams yield
``chat.completion.chunk`` dicts, the last of which carries ``usage`` when the provider reports it.
Translation to and from each upstream's native format, errors included, lives in the provider's
module and nowhere else.

A provider implements the capabilities it has, each a one-method protocol (``Chat``,
``StreamChat``, ``Complete``, ``StreamComplete``, ``Embed``) on top of ``Provider`` (``aclose``).
A provider that speaks Anthropic's Messages API natively also implements ``Messages`` and
``StreamMessages``: calls that come in on ``/v1/messages`` reach it untranslated (every other
provider gets them translated to a chat call).
A provider that obtains credentials while it runs (access tokens, AWS credentials from a role)
also implements ``MintsCredentials``, so that the gateway scrubs them from upstream errors.
What a provider type can do is known from its class before any instance exists
(``capabilities``), so the config is checked against it when it loads and the gateway never
hands a call to a target that cannot serve it (``app.routing.table.Route.serving``).

Each provider module also owns its config model, a subclass of ``ProviderBase``, the fields
every provider takes.

(Just past 400 lines: the seam's protocols and the values that cross it belong together; the
per-provider config check, ``target_problems``, joined them, and the message helpers several
translators share, ``merged_turns`` and ``developer_as_system``.)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from app import errors
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.usage import Usage

Json = dict[str, Any]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A duration in the config: positive and finite (``.inf`` made a deadline, a backoff or a
``Retry-After`` cap unbounded, and an upstream's ``Retry-After: 1e300`` parked a call)."""
Trust = Literal["private", "third_party"]
URL_FIELDS = ("base_url", "endpoint")
"""The provider settings that are an upstream's URL (``endpoint``: Azure OpenAI's)."""
EMPTY_SETTING = ("is empty (a ${VAR} set to the empty string, "
                 "or an empty ${file:...}, gives an empty value)")


def refuse_empty(value: Any, info: ValidationInfo) -> Any:
    """``value``, unless it is a text setting (a secret too) that is the empty string: an empty
    API key, API version or tenant id is never usable, and would otherwise only show as 401s or
    404s from the upstream. The values of mappings and lists (``headers``, Replicate's
    ``input``) may be empty; an empty URL gets its own check's message (``app.config``).
    A field validator of every provider setting, nested sections (Azure's ``auth``) included,
    so that it is reported beside the section's other problems."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text == "" and info.field_name not in URL_FIELDS:
        raise ValueError(EMPTY_SETTING)
    return value


class ProviderBase(BaseModel):
    """What every provider's config takes; each provider module subclasses it with its own
    ``type: Literal[...]`` and fields. Unknown keys are errors, as everywhere in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    """The registry key (``app.providers.PROVIDER_TYPES``); a subclass narrows it to a literal."""
    timeout_s: Seconds = 120.0
    """The longest a unary attempt waits for its whole answer, and a stream for each of its
    chunks once it has started (a target's own ``timeout_s`` overrides it)."""
    connect_timeout_s: Seconds = 5.0
    """The longest opening a connection (TCP and TLS) may take."""
    first_chunk_timeout_s: Seconds | None = None
    """The longest a stream attempt waits for its first chunk before the next target is tried
    (default: ``streaming.first_chunk_timeout_s``; a target's own overrides it)."""
    headers: dict[str, str] = Field(default_factory=dict)
    trust: Trust = "third_party"
    """``private``: self-hosted, inside the deployment's own boundary (vLLM, local and mock
    default to it); ``third_party``: a hosted API. The privacy stage routes and redacts by it
    (``app.stages.privacy``)."""
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Where the provider runs (free-form tag, e.g. ``eu``), for ``privacy.regions``."""

    _not_empty = field_validator("*")(refuse_empty)

    @field_validator(*URL_FIELDS, check_fields=False)
    @classmethod
    def _usable_url(cls, url: Any) -> Any:
        """An upstream URL's problem (``app.config.url_problem``), found beside the provider's
        other problems: a typo there would otherwise pass and turn every call into a 502."""
        from app.config import url_problem  # app.config imports this module

        if isinstance(url, str) and (problem := url_problem(url)) is not None:
            raise ValueError(problem)
        return url

    def offers(self) -> frozenset[Capability] | None:
        """The capabilities this configuration offers, where it offers fewer than its class
        implements (a provider type with several upstream APIs, each serving some endpoints);
        ``None``: all of them. Checked when the config loads, like the class's."""
        return None

    def target_problems(self, *, model: str, params: Mapping[str, Any]) -> list[str]:
        """What is wrong with a target of this provider (its upstream ``model`` and its
        ``params``), each a line starting with the field's path under the target
        (``params.provider: ...``): values every call to it would fail on, refused when the
        config loads (``app.config``). None by default."""
        return []


@dataclass(frozen=True, slots=True)
class Target:
    """One place a public model can be served: a provider and the model name it knows."""

    provider: str
    model: str
    params: Json = field(default_factory=dict)
    max_tokens_default: int | None = None
    weight: float = 1.0
    """Its share of first attempts under the ``weighted`` strategy."""
    context_window: int | None = None
    """The most prompt tokens it takes: a call estimated larger skips it (``None``: no limit)."""
    timeout_s: float | None = None
    """Its own answer / between-chunks timeout (``None``: the provider's ``timeout_s``)."""
    first_chunk_timeout_s: float | None = None
    """Its own first-chunk timeout for streams (``None``: the provider's, or the default)."""


@dataclass(slots=True)
class ChatCall:
    request: ChatRequest
    body: Json
    """The client's JSON object as sent (unknown fields included)."""


@dataclass(slots=True)
class CompletionCall:
    request: CompletionRequest
    body: Json


@dataclass(slots=True)
class EmbeddingCall:
    request: EmbeddingRequest
    body: Json


@dataclass(slots=True)
class MessagesCall:
    """A call that came in on Anthropic's Messages API (``/v1/messages``), for a provider that
    speaks it natively: ``body`` is the client's JSON object, sent on as it is (the target's
    model and params aside), so nothing the translation to OpenAI's form would lose (thinking
    signatures, cache control, server tools) is lost.

    ``betas``: the names the client's ``anthropic-beta`` header listed (files by id and several
    server tools need one); ``version``: its ``anthropic-version``. ``from_client`` reads both.
    """

    body: Json
    betas: tuple[str, ...] = ()
    version: str | None = None

    @classmethod
    def from_client(cls, body: Json, headers: Mapping[str, str]) -> MessagesCall:
        """The call, with the client's Anthropic headers checked: a beta name is letters,
        digits, ``.``, ``_`` and ``-`` (at most ``MAX_BETAS`` of them, comma-separated), a
        version a date (``2023-06-01``); anything else is a 400 naming the header."""
        betas: tuple[str, ...] = ()
        listed = headers.get("anthropic-beta")
        if listed is not None:
            betas = tuple(name.strip() for name in listed.split(",") if name.strip())
            if len(betas) > MAX_BETAS or not all(_BETA_NAME.fullmatch(n) for n in betas):
                raise errors.InvalidRequest(
                    f"anthropic-beta: expected at most {MAX_BETAS} comma-separated beta names "
                    "(letters, digits, '.', '_', '-')", param="anthropic-beta")
        version = headers.get("anthropic-version")
        if version is not None and not _VERSION.fullmatch(version.strip()):
            raise errors.InvalidRequest("anthropic-version: expected a date such as 2023-06-01",
                                        param="anthropic-version")
        return cls(body, betas=betas, version=None if version is None else version.strip())


MAX_BETAS = 32
_BETA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(slots=True)
class Result:
    """A finished non-streaming response: the OpenAI-shaped body and its usage (None when
    the upstream reported none; the gateway then estimates it). ``native``: the upstream's own
    answer, for a ``Messages`` call (the client gets it as it came)."""

    body: Json
    usage: Usage | None
    native: Json | None = None


NATIVE_EVENTS = "native_events"
"""The key under which a ``StreamMessages`` chunk carries the upstream's own stream events
(``(event name, JSON data)`` pairs) that led to it; the OpenAI-shaped rest of the chunk is what
the gateway accounts and the stages see."""

PROMPT_USAGE = "prompt_usage"
"""The key under which a stream chunk carries the prompt's usage an upstream reported before its
end (an OpenAI ``usage`` object: ``prompt_tokens`` and its cache breakdown; Anthropic's
``message_start``, the first of Gemini's ``usageMetadata`` naming the prompt's counts). The
gateway takes it off the chunk (no client sees it) and, when the stream ends without its final
usage (cut by the client or the upstream), accounts these counts with the completion estimated,
instead of estimating the prompt too."""


class OpeningHold:
    """Holds the chunks a stream's opening events lead to (a message's start, a ping, a content
    block's start, an OpenAI-type role chunk with empty content: events an upstream sends before
    its model has produced anything) until the first other event, then lets them out together
    with that event's, in order; from then on every chunk passes at once. The gateway counts a
    stream's first chunk as its first token (``Gateway._open``): the first-chunk timeout, the
    call's deadline and the call's TTFT then measure the model's first token, not an envelope
    sent before it."""

    def __init__(self, opening: frozenset[str]) -> None:
        self._opening = opening
        self._held: list[Json] | None = []
        """``None`` once released."""

    def release(self, kind: str | None, chunks: list[Json]) -> list[Json]:
        """The chunks to send now for one event of type ``kind`` that led to ``chunks``."""
        if self._held is None:
            return chunks
        self._held.extend(chunks)
        if kind in self._opening:
            return []
        out, self._held = self._held, None
        return out


def embeddings_result(vectors: list[Any], *, model: str, tokens: int,
                      estimated: bool = False) -> Result:
    """An OpenAI-shaped embedding ``list`` answer: one entry per vector (already encoded as the
    client asked), ``tokens`` the input tokens read (``estimated``: counted by the gateway,
    the upstream reporting none)."""
    data: list[Json] = [{"object": "embedding", "index": i, "embedding": vector}
                        for i, vector in enumerate(vectors)]
    body: Json = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Result(body=body, usage=Usage(prompt_tokens=tokens, estimated=estimated))


def text_inputs(call: EmbeddingCall, *, refusal: str) -> list[str]:
    """An embedding call's inputs as texts, for upstreams that embed text only: token-id inputs
    are a 400 (``refusal`` says why, naming the upstream)."""
    value = call.request.input
    if isinstance(value, str):
        return [value]
    texts = [item for item in value if isinstance(item, str)]
    if len(texts) != len(value):
        raise errors.InvalidRequest(refusal, param="input")
    return texts


def tool_arguments(raw: str, *, param: str) -> Json:
    """An OpenAI tool call's ``arguments`` string as the JSON object upstreams that take them
    structured want (empty: ``{}``); not JSON, or not an object, is a 400 naming ``param``."""
    try:
        arguments: Any = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.InvalidRequest("tool call arguments are not valid JSON",
                                    param=param) from None
    if not isinstance(arguments, dict):
        raise errors.InvalidRequest("tool call arguments must be a JSON object", param=param)
    return arguments


def developer_as_system(messages: Any) -> Any:
    """``developer`` messages as ``system`` ones (a new list): servers that hand each role to
    the model's chat template as it is (TGI, vLLM's chat) need it, as templates know ``system``
    (Llama 3's would render a literal ``developer`` header; Mistral's and Qwen's refuse any
    other role). The same list when it has none."""
    if not isinstance(messages, list) or not any(
            isinstance(m, dict) and m.get("role") == "developer" for m in messages):
        return messages
    return [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer"
            else m for m in messages]


def merged_turns(messages: list[tuple[int, str, list[Json]]], *, key: str, reply_role: str,
                 who: str) -> list[Json]:
    """Translated messages (their index, role and content) as the alternating turns ``who``
    takes: ``{"role", key}``, consecutive messages of one role in one turn.

    ``who`` refuses an empty message, so a turn with no content (every message in it empty) is
    left out and its neighbours, then of one role, join; as OpenAI-type targets take such a
    conversation, a fallback between them and ``who`` serves it either way. Except when the
    empty turn is the last one and not ``reply_role``'s (a trailing empty user message): left
    out, the conversation would end on the assistant's turn, which ``who`` reads as the start
    of its answer (a prefill), so it is a 400 naming that message's ``content``. No turn at
    all is a 400 on ``messages``."""
    turns: list[Json] = []
    firsts: list[int] = []
    for index, role, content in messages:
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(content)
        else:
            turns.append({"role": role, key: content})
            firsts.append(index)
    if turns and not turns[-1][key] and turns[-1]["role"] != reply_role:
        raise errors.InvalidRequest(
            f"{who} does not accept an empty last message: messages[{firsts[-1]}] has no "
            "content (without it the assistant's last turn would be read as the start of the "
            "answer)", param=f"messages[{firsts[-1]}].content")
    joined: list[Json] = []
    for turn in turns:
        if not turn[key]:
            continue
        if joined and joined[-1]["role"] == turn["role"]:
            joined[-1][key].extend(turn[key])
        else:
            joined.append(turn)
    if not joined:
        raise errors.InvalidRequest(
            f"{who} needs at least one user or assistant message with content",
            param="messages")
    return joined


@runtime_checkable
class Warmable(Protocol):
    """A provider with a slow first use (a model to load) that can be prepared at start-up."""

    async def warm(self) -> None: ...


@runtime_checkable
class MintsCredentials(Protocol):
    """A provider that obtains credentials while the gateway runs (an OAuth access token, AWS
    credentials from botocore's chain): the gateway scrubs the ones it may have sent lately from
    every upstream error, as it does the configured ones (``app.scrub``)."""

    def minted_credentials(self) -> tuple[str, ...]: ...


@runtime_checkable
class Provider(Protocol):
    """One upstream, whatever it can do. Its capability methods (below) raise only
    ``app.errors.GatewayError`` subclasses.

    Streams are async generators of OpenAI-shaped chunk dicts; closing the generator
    (``aclose``) must cancel the upstream request.
    """

    async def aclose(self) -> None: ...


@runtime_checkable
class Chat(Provider, Protocol):
    async def chat(self, call: ChatCall, *, target: Target) -> Result: ...


@runtime_checkable
class StreamChat(Provider, Protocol):
    def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]: ...


@runtime_checkable
class Complete(Provider, Protocol):
    async def complete(self, call: CompletionCall, *, target: Target) -> Result: ...


@runtime_checkable
class StreamComplete(Provider, Protocol):
    def stream_complete(self, call: CompletionCall, *, target: Target) -> AsyncIterator[Json]: ...


@runtime_checkable
class Embed(Provider, Protocol):
    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result: ...


@runtime_checkable
class Messages(Provider, Protocol):
    async def messages(self, call: MessagesCall, *, target: Target) -> Result: ...


@runtime_checkable
class StreamMessages(Provider, Protocol):
    def stream_messages(self, call: MessagesCall, *, target: Target) -> AsyncIterator[Json]: ...


Capability = Literal["chat", "stream_chat", "complete", "stream_complete", "embed", "messages",
                     "stream_messages"]
"""What a call asks of a target: the name of the method that serves it."""

PROTOCOLS: dict[Capability, type] = {
    "chat": Chat, "stream_chat": StreamChat, "complete": Complete,
    "stream_complete": StreamComplete, "embed": Embed, "messages": Messages,
    "stream_messages": StreamMessages,
}

ENDPOINTS: dict[Capability, str] = {
    "chat": "chat completions (/v1/chat/completions)",
    "stream_chat": "streamed chat completions (/v1/chat/completions with stream: true)",
    "complete": "text completions (/v1/completions)",
    "stream_complete": "streamed text completions (/v1/completions with stream: true)",
    "embed": "embeddings (/v1/embeddings)",
    "messages": "Anthropic messages natively (/v1/messages)",
    "stream_messages": "streamed Anthropic messages natively (/v1/messages with stream: true)",
}
"""How errors name each capability to a user."""


def capabilities(cls: type) -> frozenset[Capability]:
    """The capabilities a provider class implements (its methods, checked by name against the
    protocols; signatures are mypy's to check)."""
    return frozenset(name for name, protocol in PROTOCOLS.items() if issubclass(cls, protocol))
