"""Client request shapes, in OpenAI's wire format, validated strictly.

Known fields are type-checked in pydantic's strict mode (``"5"`` is not a number, ``1.5`` is not an
integer), as OpenAI's own API does; unknown fields are kept and carried to OpenAI-compatible targets
(vLLM's ``top_k``, ``min_p``, ... live there). The raw JSON object travels beside the model so
that pass-through providers forward exactly what the client sent, less its top-level nulls: OpenAI's
spec makes every optional field nullable, null meaning absent, so ``app.api.wire.parse`` removes
them (``"stream": null`` is a non-streaming call) and no upstream ever sees one. A required field
the spec still lets be null says in ``NULL_MEANS`` what null stands for.

Counts are checked on the parsed JSON before pydantic validates it (``_refuse_counts``), each a
400 naming the parameter with OpenAI's code: validating costs CPU per item on the event loop
(an 8 MiB body of 200,000 messages took 1.7 s, 100,000 token-id prompts 3.8 s), so a count
past the limits below is refused before any item is validated.

(Over 400 lines: the request bodies of the three endpoints and the parts they share, one
pydantic model each; they are the OpenAI API's surface, read together.)
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from app import errors

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

_STRICT = ConfigDict(strict=True, extra="allow")


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = _STRICT
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(BaseModel):
    model_config = _STRICT
    name: str
    input: str


class CustomToolCall(BaseModel):
    """A call of a custom tool (OpenAI's ``ChatCompletionMessageCustomToolCallParam``): its
    ``input`` is free text, not JSON arguments."""

    model_config = _STRICT
    id: str
    type: Literal["custom"]
    custom: CustomCall


def _kind(custom: str, function: str) -> Any:
    """A discriminator of a tool (call) union: ``custom`` for ``type: "custom"``, else
    ``function`` (validated as a function one, so a missing ``type`` stays ``"function"`` and a
    wrong one says it should be ``'function'``). The tags are ``app.api.wire._TYPE_TAGS``: they
    are not field names, and an error's param leaves them out."""
    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return custom if kind == "custom" else function
    return Discriminator(tag)


AnyToolCall = Annotated[Annotated[ToolCall, Tag("function-call")]
                        | Annotated[CustomToolCall, Tag("custom-call")],
                        _kind("custom-call", "function-call")]


class Message(BaseModel):
    model_config = _STRICT
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[AnyToolCall] | None = None
    tool_call_id: str | None = None
    """Required on a ``tool`` message (``ChatRequest`` checks it, once for all messages)."""

    @field_validator("content")
    @classmethod
    def _parts_are_typed(
        cls, value: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type")
                if not isinstance(kind, str):
                    raise ValueError("each content part needs a string 'type'")
                if kind == "text" and not isinstance(part.get("text"), str):
                    raise ValueError("a 'text' content part needs a string 'text'")
                if kind == "image_url":
                    image = part.get("image_url")
                    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                        raise ValueError("an 'image_url' content part needs 'image_url.url'")
        return value

    def text(self) -> str:
        """The message's text, parts joined; images and other parts contribute nothing."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class FunctionDef(BaseModel):
    model_config = _STRICT
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: FunctionDef


class CustomDef(BaseModel):
    model_config = _STRICT
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    format: dict[str, Any] | None = None
    """``{"type": "text"}`` (the default) or ``{"type": "grammar", "grammar": {...}}``."""


class CustomTool(BaseModel):
    """OpenAI's custom tool (``ChatCompletionCustomToolParam``): called with free text (or text
    of a grammar), not JSON arguments. Only OpenAI-format targets that take them get them; a
    translating provider refuses them (``app.providers.refusals``)."""

    model_config = _STRICT
    type: Literal["custom"]
    custom: CustomDef


AnyTool = Annotated[Annotated[Tool, Tag("function-tool")]
                    | Annotated[CustomTool, Tag("custom-tool")],
                    _kind("custom-tool", "function-tool")]


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Stop = str | Annotated[list[str], Field(max_length=4)] | None
"""At most ``MAX_STOP`` strings, counted before validation (the ``_counts`` validators) so
the 400 has OpenAI's words and code; the ``max_length`` here is for the schema alone."""
LogitBias = dict[str, Annotated[float, Field(ge=-100, le=100)]]
"""Token id -> bias, each from -100 (never) to 100 (only), as OpenAI bounds them."""


def _no_empty_token_list(value: list[Any], name: str) -> None:
    """A list of token-id lists may hold no empty one (OpenAI's spec: ``minItems: 1``)."""
    if value and isinstance(value[0], int):
        return  # validated as one list of ids: not a loop over each of them
    for i, item in enumerate(value):
        if isinstance(item, list) and not item:
            raise ValueError(f"{name}[{i}] must not be an empty list of token ids")


# ---- Counts, refused before validation. Where OpenAI documents or answers a limit, it is
# OpenAI's; where it has none, the gateway's own bounds the CPU a request costs (measured with
# time.process_time around parse and validation of bodies from orjson: about 3 us a message,
# 10 us a tool call, 0.5 us a content part, 0.03 us a token id).

MAX_TOOLS = 128
"""``tools``: OpenAI's ("A max of 128 functions are supported", the ``tools`` description of its
OpenAPI spec, openai/openai-openapi; the deprecated ``functions`` has ``maxItems: 128``), which
it answers with ``array_above_max_length``, param ``tools``."""
MAX_STOP = 4
"""``stop``: OpenAI's ("Up to 4 sequences", its spec's ``maxItems: 4``), which it answers with
``array_above_max_length``, param ``stop``, as it does ``tools``."""
MAX_TOOL_CALLS = 128
"""``messages[i].tool_calls``: OpenAI's, as it answers it ("Invalid 'messages[2].tool_calls':
array too long. Expected an array with maximum length 128", openai/openai-dotnet#317)."""
MAX_ITEMS = 10_000
"""The gateway's own (OpenAI documents no count of messages; Anthropic documents 100,000):
messages, their content parts and tool calls together, at most this many (30 ms of validation
for 10,000 messages, 100 ms for 10,000 tool calls, where 200,000 messages took 1.7 s); also
the most ``prompt`` items of a completion."""
MAX_LOGIT_BIAS = 1024
"""``logit_bias`` entries: the gateway's own (OpenAI documents no count); a generous bound."""
MAX_INPUTS = 2048
"""Embedding ``input`` items: OpenAI's ("any array must be 2048 dimensions or less"; its spec's
``maxItems: 2048``)."""
MAX_INPUT_TOKEN_IDS = 300_000
"""Token ids summed across embedding inputs: OpenAI's ("a maximum of 300,000 tokens summed across
all inputs in a single request"), answered with code ``max_tokens_per_request``."""
MAX_PROMPT_TOKEN_IDS = 1_000_000
"""Token ids summed across completion prompts: the gateway's own (OpenAI documents none; its
completion models take at most 16k tokens), past the longest context windows served today."""


def too_long(param: str, length: int, limit: int) -> errors.InvalidRequest:
    """OpenAI's 400 for an array past its maximum length (its words and code)."""
    return errors.InvalidRequest(
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
        f"but got an array with length {length} instead.",
        param=param, code="array_above_max_length")


def _at_most(body: dict[str, Any], name: str, limit: int) -> None:
    value = body.get(name)
    if type(value) is list and len(value) > limit:
        raise too_long(name, len(value), limit)


def too_many_items(param: str, count: int) -> errors.InvalidRequest:
    """The 400 for a request past ``MAX_ITEMS`` (the gateway's count, in OpenAI's words)."""
    return errors.InvalidRequest(
        f"Invalid '{param}': too many items. Expected at most {MAX_ITEMS} messages, content "
        f"parts and tool calls in all, but got {count} instead.",
        param=param, code="array_above_max_length")


def _chat_counts(body: dict[str, Any]) -> None:
    """Raised from a ``mode="before"`` model validator: pydantic lets an exception other than
    ``ValueError`` and ``AssertionError`` out as it is, so the ``InvalidRequest`` reaches
    ``app.api.wire.parse``'s caller with its param and code (``tests/api/test_sizes.py`` pins
    it)."""
    _at_most(body, "tools", MAX_TOOLS)
    bias = body.get("logit_bias")
    if type(bias) is dict and len(bias) > MAX_LOGIT_BIAS:
        raise errors.InvalidRequest(
            f"Invalid 'logit_bias': too many properties. Expected an object with at most "
            f"{MAX_LOGIT_BIAS} properties, but got an object with {len(bias)} properties "
            "instead.", param="logit_bias", code="object_above_max_properties")
    messages = body.get("messages")
    if type(messages) is not list:
        return
    _at_most(body, "messages", MAX_ITEMS)
    items = len(messages)
    for i, message in enumerate(messages):
        if type(message) is not dict:
            continue
        calls = message.get("tool_calls")
        if type(calls) is list:
            if len(calls) > MAX_TOOL_CALLS:
                raise too_long(f"messages[{i}].tool_calls", len(calls), MAX_TOOL_CALLS)
            items += len(calls)
        content = message.get("content")
        if type(content) is list:
            items += len(content)
    if items > MAX_ITEMS:
        raise too_many_items("messages", items)


def _stream_options_need_stream(body: dict[str, Any]) -> None:
    """OpenAI's 400 for ``stream_options`` on a call that does not stream (``stream`` false or
    absent; a top-level null was removed before, ``app.api.wire.parse``). A ``stream`` of
    another type is left to its field's own check."""
    if "stream_options" in body and body.get("stream", False) is False:
        raise errors.InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options")


def _inputs_counts(body: dict[str, Any], name: str, *, items: int, token_ids: int) -> None:
    """At most ``items`` inputs (a list of token ids is one input) and ``token_ids`` token ids
    in all, in the field ``name`` (a completion's prompt, embedding inputs)."""
    value = body.get(name)
    if type(value) is not list or not value:
        return
    if type(value[0]) is int:
        count = len(value)
    else:
        if len(value) > items:
            raise too_long(name, len(value), items)
        count = sum(len(item) for item in value if type(item) is list)
    if count > token_ids:  # OpenAI's words and code for its embeddings' limit
        raise errors.InvalidRequest(
            f"Invalid '{name}': requested {count} tokens, max {token_ids} tokens per request.",
            param=name, code="max_tokens_per_request")


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``."""

    model_config = _STRICT
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[AnyTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _counts(cls, data: Any) -> Any:
        if type(data) is dict:
            _stream_options_need_stream(data)
            _at_most(data, "stop", MAX_STOP)
            _chat_counts(data)
        return data

    @field_validator("messages")
    @classmethod
    def _tool_results_name_their_call(cls, messages: list[Message]) -> list[Message]:
        """A ``tool`` message must say which tool call it answers, as OpenAI requires: a
        missing ``messages[i].tool_call_id``. Checked here in one loop, not by a validator of
        each message's (0.2 us a message, on every call). The nested ``ValidationError`` is
        merged into the request's with this field's location by pydantic-core (behaviour its
        docs do not promise: ``tests/api/test_refused_input.py`` names the path it must
        give)."""
        for i, message in enumerate(messages):
            if message.role == "tool" and message.tool_call_id is None:
                raise ValidationError.from_exception_data("Message", [InitErrorDetails(
                    type="missing", loc=(i, "tool_call_id"), input=message.model_dump())])
        return messages

    def token_limit(self) -> int | None:
        """The client's cap on generated tokens, whichever field it used (the smaller, when it
        sent both, as the native translations read them)."""
        if self.max_completion_tokens is not None and self.max_tokens is not None:
            return min(self.max_completion_tokens, self.max_tokens)
        return self.max_completion_tokens or self.max_tokens

    def wants_json(self) -> bool:
        """Whether the answer must be JSON (``response_format`` json_object or json_schema)."""
        return self.response_format is not None and self.response_format.type != "text"

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


Prompt = str | list[int] | list[str] | list[list[int]]
"""Token ids before strings: a strict union tries its members in order, and a list of strings
fails ``list[int]`` at its first item's type check as cheaply as a list of ids fails
``list[str]``; but 300,000 ids validated as ``list[str]`` first cost 120 ms, as ``list[int]`` 10
ms."""


class CompletionRequest(BaseModel):
    """``POST /v1/completions`` (legacy text completions)."""

    model_config = _STRICT
    NULL_MEANS: ClassVar[dict[str, Any]] = {"prompt": "<|endoftext|>"}
    """``prompt`` is required but nullable; the spec's default, the document separator, makes
    the model start a new document."""
    model: Annotated[str, Field(min_length=1)]
    prompt: Prompt
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    """0 is OpenAI's (its spec's minimum): with ``echo``, the prompt scored and nothing
    generated. Targets that cannot generate nothing refuse it (TGI)."""
    n: Annotated[int, Field(ge=1)] | None = None
    best_of: Annotated[int, Field(ge=0, le=20)] | None = None
    """OpenAI's bounds; at least ``n``, and 1 (or absent) when streaming (``_best_of``)."""
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop = None
    seed: int | None = None
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: LogitBias | None = None
    suffix: str | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _counts(cls, data: Any) -> Any:
        if type(data) is dict:
            _stream_options_need_stream(data)
            _at_most(data, "stop", MAX_STOP)
            _inputs_counts(data, "prompt", items=MAX_ITEMS, token_ids=MAX_PROMPT_TOKEN_IDS)
        return data

    @model_validator(mode="after")
    def _best_of(self) -> CompletionRequest:
        """OpenAI's rules: ``best_of`` candidates to pick ``n`` from, so at least ``n``; the
        best one is known only at the end, so results "cannot be streamed"."""
        if self.best_of is None:
            return self
        n = self.n or 1
        if self.best_of < n:
            raise errors.InvalidRequest(
                f"best_of must be greater than or equal to n, got best_of={self.best_of} and "
                f"n={n}.", param="best_of", code="invalid_value")
        if self.stream and self.best_of > 1:
            raise errors.InvalidRequest("best_of cannot be greater than 1 when streaming.",
                                        param="best_of", code="invalid_value")
        return self

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        if isinstance(value, list):
            _no_empty_token_list(value, "prompt")
        return value

    def prompt_texts(self) -> list[str]:
        """The prompt as strings (token-id prompts are rendered as their ids, for estimates)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        out: list[str] = []
        for item in self.prompt:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, int):
                return [" ".join(str(t) for t in self.prompt)]
            else:
                out.append(" ".join(str(t) for t in item))
        return out

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


EmbeddingInput = str | list[int] | list[str] | list[list[int]]
"""In ``Prompt``'s order, for the same reason."""


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = _STRICT
    model: Annotated[str, Field(min_length=1)]
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _counts(cls, data: Any) -> Any:
        if type(data) is dict:
            _inputs_counts(data, "input", items=MAX_INPUTS, token_ids=MAX_INPUT_TOKEN_IDS)
        return data

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, str):
            if not value:
                raise ValueError("input must not be an empty string")
        elif not value:
            raise ValueError("input must not be an empty list")
        elif isinstance(value[0], str) and not all(value):
            raise ValueError("input must not contain empty strings")
        else:
            _no_empty_token_list(value, "input")
        return value

    def count(self) -> int:
        """How many inputs there are (one string, or one list of token ids, is one)."""
        value = self.input
        return 1 if isinstance(value, str) or isinstance(value[0], int) else len(value)

    def texts(self) -> list[str]:
        """The inputs as strings (token-id inputs are rendered as their ids)."""
        if isinstance(self.input, str):
            return [self.input]
        out: list[str] = []
        for item in self.input:
            if isinstance(item, int):  # one prompt given as token ids
                return [" ".join(str(v) for v in self.input)]
            out.append(item if isinstance(item, str) else " ".join(str(t) for t in item))
        return out
