"""Anthropic's Messages API coming in (``POST /v1/messages``): its requests as chat calls, the
gateway's answers as Anthropic messages. Pure functions, no I/O; streams are in
``app.inbound.anthropic_stream``.

A call to a target that speaks the Messages API natively (``type: anthropic``) is not translated:
the client's body goes on as it is (``app.providers.base.MessagesCall``) and the answer comes back
as it came. The translation here serves every other target, and the gateway's own books (usage,
cost, the call record, the pipeline's stages), which read the canonical form of every call.

What the translation to a chat call carries: ``system`` (a string or text blocks) as a system
message; text, image (base64 or URL) and PDF document (base64) blocks as content parts; a
text document as text; ``tool_use`` blocks as ``tool_calls``; ``tool_result`` blocks as ``tool``
messages (their text; placed before the rest of their turn, as OpenAI's order requires; one
with ``is_error: true`` has its text marked as a failure, which a target's translator turns
back into its own flag where its format has one: ``app.providers.tool_errors``);
``tools`` (custom ones) as functions; ``tool_choice`` (``auto``, ``any`` -> ``required``, ``tool``
-> the named function, ``none``; ``disable_parallel_tool_use`` -> ``parallel_tool_calls:
false``); ``max_tokens``, ``temperature``, ``top_p``, ``stop_sequences`` -> ``stop``,
``metadata.user_id`` -> ``user`` (more than ``MAX_CHAT_STOPS`` stop sequences, OpenAI's limit
for ``stop``, only for a native target). What Anthropic refuses as malformed is a 400 for every
target, naming the field: a source without its ``data`` (or ``url``), a base64 image of a media
type other than ``IMAGE_TYPES``, a ``tool_result`` block in an assistant turn.

What only a native target can serve (``Inbound.native_only``): server tools (a tool with a
``type`` other than ``custom``), blocks of other types (search results, server tool results,
images or documents by file id, PDFs by URL, documents of content blocks, images inside tool
results) and top-level fields outside the list above and the hints below. A call that uses them
goes to the model's native targets only; with none, it is a 400 naming the first such part (an
image's or a document's with its source type). In the chat call, which then serves only the
gateway's books, each such block of a user turn is a stand-in text part naming it (``[document
with a url source: for a native target]``), so that a turn of nothing else is still a turn.

Dropped for other targets, as hints whose absence cannot make an answer wrong: ``cache_control``
markers (on blocks, and the top-level one that asks Anthropic to place one itself), ``top_k``,
``thinking`` (the request for it, and earlier turns' thinking blocks, which only Anthropic can
verify), ``service_tier`` and ``speed`` (which capacity, how many tokens a second: the same
model's same answer), ``inference_geo`` (where Anthropic's own API runs the model; Anthropic
documents it as not applicable off that API, where the endpoint decides: here, which providers
a model's targets name, and the privacy policy's ``regions``), ``diagnostics`` (asks Anthropic
to explain a prompt-cache miss against an earlier message: nothing of the answer).

Answers: the chat completion's text, ``reasoning_content`` (as a ``thinking`` block, with an empty
signature: no other provider signs its reasoning) and ``tool_calls`` become content blocks;
``finish_reason`` becomes ``stop_reason`` (``stop`` -> ``end_turn``, or ``stop_sequence`` with
the string in ``stop_sequence`` when the choice names one of the request's in ``stop_reason``, as
vLLM does and the gateway's Cohere, TGI and Bedrock Converse translations do
(``app.providers.stops``): OpenAI's own ``stop`` cannot tell a stop sequence from the end of the
turn); usage splits prompt tokens into fresh, cache-read and cache-written input as Anthropic
counts them.

(Past 400 lines: the answers' part is a quarter of it, and small; the counts' check is a few
lines; the rest is one walk of the request, block by block.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app import errors
from app.inbound.anthropic_paths import Origin, Origins
from app.providers.base import Json
from app.providers.tool_errors import marked
from app.schemas import MAX_ITEMS, MAX_TOOLS
from app.usage import Usage

MAX_CHAT_STOPS = 4
"""The most stop sequences a chat call takes (OpenAI's limit for ``stop``, ``app.schemas``)."""
CHAT_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "metadata",
                         "stop_sequences", "stream", "temperature", "top_p", "tools",
                         "tool_choice"})
"""Top-level fields the translation carries."""
HINT_FIELDS = frozenset({"top_k", "thinking", "service_tier", "cache_control", "speed",
                         "inference_geo", "diagnostics"})
"""Top-level fields dropped for targets that do not speak the Messages API (the module
docstring says why each is a hint)."""

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 408: "timeout_error",
               413: "request_too_large", 429: "rate_limit_error", 499: "invalid_request_error",
               504: "timeout_error", 529: "overloaded_error"}
"""Anthropic's error type for each HTTP status (``api_error`` for the other 5xx)."""


@dataclass(slots=True)
class Inbound:
    """A Messages request read: the chat call's body, and where the request uses what only a
    native target can serve (parameter paths, each with what it is)."""

    body: Json
    native_only: list[str] = field(default_factory=list)
    origins: Origins = field(default_factory=Origins)
    """Where each chat message and tool came from (``anthropic_paths``)."""


def native_only_refused(native_only: Sequence[str], model: str) -> errors.InvalidRequest:
    """The 400 for a Messages call using ``native_only`` parts (what the translation to chat
    cannot carry) on a model none of whose targets speaks Messages natively: it names the
    first."""
    first = native_only[0]
    return errors.InvalidRequest(
        f"'{first}' can only be sent to a target that speaks Anthropic's Messages API "
        f"natively, and none of model '{model}'s targets does.",
        param=first.split(" (")[0], code="unsupported_parameter")


def structured_output(native: Json | None) -> bool:
    """Whether a ``/v1/messages`` body asks for structured output (``output_config.format``,
    or the beta's top-level ``output_format``: a JSON schema): its answer's text is then a JSON
    document, as a chat call's content is in JSON mode."""
    if native is None:
        return False
    config = native.get("output_config")
    for format_ in (config.get("format") if isinstance(config, dict) else None,
                    native.get("output_format")):
        if isinstance(format_, dict) and format_.get("type", "text") != "text":
            return True
    return False


def _bad(message: str, param: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param)


def _number(body: Json, name: str, low: float, high: float | None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low \
            or (high is not None and value > high):
        span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise _bad(f"{name}: must be a number {span}", name)
    return value


MAX_INTEGER = 2 ** 63
"""Past 64 bits the JSON parser reads an integer as a float (10**30 as 1e30)."""


def read_request(body: Json) -> Inbound:
    """The chat call of a Messages request; ``InvalidRequest`` (naming the parameter) for a
    request Anthropic itself would refuse as malformed."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required" if model is None else "model: must be a string",
                   "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        if isinstance(max_tokens, float) and max_tokens >= MAX_INTEGER:  # read as a float
            raise _bad("max_tokens: too large: must be an integer within the model's output "
                       "limit", "max_tokens")
        raise _bad("max_tokens: Field required" if max_tokens is None
                   else "max_tokens: must be an integer of at least 1", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: must be a boolean", "stream")
    inbound = Inbound(body={})
    native = inbound.native_only
    native.extend(f"{name} (not translatable)" for name in body
                  if name not in CHAT_FIELDS and name not in HINT_FIELDS)
    origins = inbound.origins
    messages = _system(body.get("system"))
    origins.messages.extend(Origin("system") for _ in messages)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages: must be a non-empty list", "messages")
    _counts(body, raw)
    last = len(raw) - 1
    for i, message in enumerate(raw):
        messages.extend(_turn(message, f"messages[{i}]", native, origins,
                              final=i == last))
    out: Json = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = _number(body, name, 0.0, high)
        if value is not None:
            out[name] = value
    _number(body, "top_k", 0, None)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences: must be a list of strings", "stop_sequences")
        if len(stops) > MAX_CHAT_STOPS:  # Anthropic takes more: a native target's call
            native.append(f"stop_sequences (more than {MAX_CHAT_STOPS}, a chat call's limit)")
            out["stop"] = stops[:MAX_CHAT_STOPS]
        elif stops:
            out["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _bad("metadata: must be an object", "metadata")
        user = metadata.get("user_id")
        if isinstance(user, str) and user:
            out["user"] = user
    tools = _tools(body.get("tools"), native, origins.tools)
    if tools:
        out["tools"] = tools
    _tool_choice(body.get("tool_choice"), out)
    inbound.body = out
    return inbound


def _counts(body: Json, turns: list[Any]) -> None:
    """The chat call's limits on counts (``app.schemas``: the gateway's ``MAX_ITEMS``, OpenAI's
    ``MAX_TOOLS``; Anthropic documents 100,000 messages and no count of tools), refused in the
    client's terms before the walk: the turns, their content blocks and a system prompt count
    one item each, as each becomes at most one message, content part or tool call."""
    tools = body.get("tools")
    if type(tools) is list and len(tools) > MAX_TOOLS:
        raise errors.InvalidRequest(f"tools: at most {MAX_TOOLS} tools (got {len(tools)})",
                                    param="tools", code="array_above_max_length")
    items = len(turns) + (body.get("system") is not None)
    if items <= MAX_ITEMS:
        for turn in turns:
            content = turn.get("content") if type(turn) is dict else None
            if type(content) is list:
                items += len(content)
    if items > MAX_ITEMS:
        raise errors.InvalidRequest(
            f"messages: at most {MAX_ITEMS} messages and content blocks in all, with the "
            f"system prompt (got {items})", param="messages", code="array_above_max_length")


def _system(system: Any) -> list[Json]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise _bad("system: must be a string or a list of text blocks", "system")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" \
                or not isinstance(block.get("text"), str):
            raise _bad(f"system[{i}]: must be a text block", f"system[{i}]")
        texts.append(block["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _blocks(message: Json, where: str, *, final: bool) -> list[Json]:
    content = message.get("content")
    if not content and isinstance(content, str | list) \
            and not (final and message.get("role") == "assistant"):
        # Anthropic's rule (a translated target would get the turn dropped, or a 400 naming
        # the translation's empty message list): only a final assistant turn (a prefill) may
        # be empty.
        raise _bad(f"{where}.content: all messages must have non-empty content except for "
                   "the optional final assistant message", f"{where}.content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(f"{where}.content: must be a string or a list of content blocks",
                   f"{where}.content")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(f"{where}.content[{j}]: must be a content block with a type",
                       f"{where}.content[{j}]")
    return content


def _turn(message: Any, where: str, native: list[str], origins: Origins, *,
          final: bool) -> list[Json]:
    """One Messages turn as chat messages (a user turn's tool results first, as ``tool``
    messages), their sources added to ``origins``."""
    if not isinstance(message, dict):
        raise _bad(f"{where}: must be an object", where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
    blocks = _blocks(message, where, final=final)
    if role == "assistant":
        calls: list[str] = []
        turn = _assistant(blocks, where, native, calls)
        origins.messages.append(Origin(where, tuple(calls)))
        return [turn]
    out: list[Json] = []
    parts: list[Json] = []
    paths: list[str] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "tool_result":
            out.append(_tool_result(block, at, native))
            origins.messages.append(Origin(at, tool=True))
            continue
        part = _user_part(block, at, native)
        if part is not None:
            parts.append(part)
            paths.append(at)
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
        origins.messages.append(Origin(where, tuple(paths)))
    return out


def _text_of(block: Json, at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{at}.text: must be a string", f"{at}.text")
    return text


def _source(block: Json, at: str) -> Json:
    source = block.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("type"), str):
        raise _bad(f"{at}.source: must be an object with a type", f"{at}.source")
    return source


IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
"""The media types of a base64 image Anthropic takes."""


def _field(source: Json, name: str, at: str) -> str:
    """A source's required string field (``data``, ``url``), else the 400 naming it."""
    value = source.get(name)
    if not isinstance(value, str):
        raise _bad(f"{at}.source.{name}: Field required" if value is None
                   else f"{at}.source.{name}: must be a string", f"{at}.source.{name}")
    return value


def _user_part(block: Json, at: str, native: list[str]) -> Json | None:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _text_of(block, at)}
    if kind == "image":
        source = _source(block, at)
        if source["type"] == "base64":
            data, media = _field(source, "data", at), source.get("media_type")
            if media not in IMAGE_TYPES:
                raise _bad(f"{at}.source.media_type: Field required" if media is None else
                           f"{at}.source.media_type: must be one of {', '.join(IMAGE_TYPES)}",
                           f"{at}.source.media_type")
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
        if source["type"] == "url":
            return {"type": "image_url", "image_url": {"url": _field(source, "url", at)}}
    elif kind == "document":
        source = _source(block, at)
        if source["type"] == "text":
            return {"type": "text", "text": _field(source, "data", at)}
        if source["type"] == "base64" and source.get("media_type") == "application/pdf":
            data = f"data:application/pdf;base64,{_field(source, 'data', at)}"
            return {"type": "file", "file": {"file_data": data,
                                             "filename": str(block.get("title") or "document.pdf")}}
    elif kind in ("thinking", "redacted_thinking"):
        return None
    what = kind
    if kind in ("image", "document"):
        what = f"{kind} with a {block['source']['type']} source"
    native.append(f"{at} ({what})")
    return {"type": "text", "text": f"[{what}: for a native target]"}


def _tool_result(block: Json, at: str, native: list[str]) -> Json:
    tool_id = block.get("tool_use_id")
    if not isinstance(tool_id, str) or not tool_id:
        raise _bad(f"{at}.tool_use_id: Field required", f"{at}.tool_use_id")
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            if isinstance(inner, dict) and inner.get("type") == "text":
                texts.append(_text_of(inner, f"{at}.content[{k}]"))
            else:
                kind = inner.get("type") if isinstance(inner, dict) else type(inner).__name__
                native.append(f"{at}.content[{k}] ({kind} in a tool result)")
        text = "\n\n".join(texts)
    else:
        raise _bad(f"{at}.content: must be a string or a list of blocks", f"{at}.content")
    if block.get("is_error") is True:
        text = marked(text)  # app.providers.tool_errors: the flag where a target has one
    return {"role": "tool", "tool_call_id": tool_id, "content": text}


def _assistant(blocks: list[Json], where: str, native: list[str], paths: list[str]) -> Json:
    """An assistant turn as a chat message (``paths``: its tool calls' blocks, added)."""
    texts: list[str] = []
    calls: list[Json] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_text_of(block, at))
        elif kind == "tool_use":
            name, tool_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(tool_id, str):
                raise _bad(f"{at}: a tool_use block needs an id and a name", at)
            calls.append({"id": tool_id, "type": "function", "function": {
                "name": name, "arguments": orjson.dumps(block.get("input") or {}).decode()}})
            paths.append(at)
        elif kind == "tool_result":
            raise _bad(f"{at}: tool_result blocks are only allowed in user turns", at)
        elif kind not in ("thinking", "redacted_thinking"):
            native.append(f"{at} ({kind})")
    message: Json = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any, native: list[str], indices: list[int]) -> list[Json]:
    """The custom tools as chat tools (``indices``: the client's index of each, added)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools: must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}]: must be an object", f"tools[{i}]")
        kind = tool.get("type", "custom")
        if kind != "custom":
            native.append(f"tools[{i}] ({kind})")
            continue
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{i}].name: Field required", f"tools[{i}].name")
        if not isinstance(schema, dict):
            raise _bad(f"tools[{i}].input_schema: Field required", f"tools[{i}].input_schema")
        function: Json = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
        indices.append(i)
    return out


def _tool_choice(choice: Any, out: Json) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("tool_choice: must be {type: auto|any|none} or {type: tool, name}",
                   "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and "tools" in out:
        out["parallel_tool_calls"] = False


def anthropic_usage(usage: Usage | None) -> Json:
    """A ``Usage`` counted as Anthropic counts it (input split into fresh, cache-read and
    cache-written tokens)."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    fresh = max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens)
    return {"input_tokens": fresh, "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens}


def tool_input(arguments: Any, *, cut: bool = False) -> Json:
    """A tool call's ``arguments`` (a JSON string) as a ``tool_use`` block's ``input``: an
    object; arguments that are not a JSON object are kept under ``"arguments"``, except those
    ``cut`` short by ``max_tokens`` (unfinished JSON): ``{}``, as Claude answers such a block
    and as the SDK reads the same call streamed (an agent could run the tool with an
    ``"arguments"`` key its schema does not have)."""
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {} if cut else {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def stop_reason(choice: Json, stops: Sequence[str]) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a choice's ``finish_reason`` (see
    the module docstring); ``stops``: the request's stop sequences."""
    finish = choice.get("finish_reason")
    reason = STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    said = choice.get("stop_reason")
    if reason == "end_turn" and isinstance(said, str) and said in stops:
        return "stop_sequence", said
    return reason, None


def to_message(body: Json, usage: Usage | None, *, model: str,
               stops: Sequence[str] = ()) -> Json:
    """A chat completion as an Anthropic ``message`` (its first choice); ``stops``: the
    request's stop sequences."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices \
        and isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: Json = found if isinstance(found, dict) else {}
    content: list[Json] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    stop, sequence = ("refusal", None) if refusal else stop_reason(choice, stops)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": str(call.get("id") or ""),
                            "name": str(function.get("name") or ""),
                            "input": tool_input(function.get("arguments"),
                                                cut=stop == "max_tokens")})
    return {"id": message_id(body.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop, "stop_sequence": sequence,
            "usage": anthropic_usage(usage)}


def message_id(upstream_id: Any) -> str:
    """An Anthropic-style message id (``msg_...``) from the upstream's completion id."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"
    return "msg_switchboard"


def error_body(exc: errors.GatewayError, *, request_id: str | None = None) -> Json:
    """A gateway error in Anthropic's shape (a refusal of a translated parameter naming the
    client's field too: ``TRANSLATED_PARAMS``), with Anthropic's top-level ``request_id`` when
    the error answers a call (``request_id``: its call id). The gateway's own 503 at its
    concurrency limit is
    ``overloaded_error``, Anthropic's type for its 529: the status stays 503, which load
    balancers and every HTTP client know (the anthropic SDK retries both alike). An upstream's
    529 (Anthropic's own among them) stays a 529 ``overloaded_error``."""
    status = exc.status_code
    if isinstance(exc, errors.Overloaded):
        kind = "overloaded_error"
    else:
        kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500
                                           else "invalid_request_error")
    message = exc.message
    sent = TRANSLATED_PARAMS.get(exc.param or "")
    if sent is not None:
        message = f"{sent} (sent to this target as {exc.param}): {message}"
    body: Json = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


TRANSLATED_PARAMS = {"parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
                     "stop": "stop_sequences", "user": "metadata.user_id"}
"""A chat call's parameter -> the Messages field it was translated from, where the names
differ: a target's refusal naming the chat call's is told to the client in its own terms."""
