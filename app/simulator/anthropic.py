"""``POST /v1/messages``: Anthropic's Messages API, complete and streamed.

Requires a key, as ``x-api-key`` or (as current SDKs send it) ``Authorization: Bearer`` (401
``authentication_error`` without), and ``anthropic-version`` (400 without). The answer
is a ``tool_use`` block (``stop_reason`` ``tool_use``) when the request offers ``tools``: the tool
``tool_choice`` ``tool`` names, else (``any``, ``auto`` or no ``tool_choice``) the custom tool
(no ``type``, or ``custom``) best matching the last user message (``app.simulator.tools``), with
``input`` a minimal instance of its ``input_schema``; under ``auto`` a last message carrying a
``tool_result``, or tools that are all Anthropic's own (``web_search_20250305``...), are
answered in text, as is ``none``. Otherwise a ``text`` block,
holding a minimal instance of the schema (as JSON text) when ``output_config.format`` asks for
one (structured outputs: ``{"type": "json_schema", "schema": {...}}``).

Extended thinking (``thinking``: ``enabled`` with a ``budget_tokens`` of 1024 or more, below
``max_tokens``, or ``adaptive``) puts a ``thinking`` block before the answer, with a signature
tied to its text (streamed as ``thinking_delta`` pieces, then a ``signature_delta``), its tokens
counted in ``output_tokens``; as Claude without interleaved thinking, only at the start of an
assistant turn (not in the answer to tool results). As at Anthropic, with thinking on, the first
assistant message of the turn whose tool results follow must start with its thinking block, and
a thinking block sent back must carry its own signature (400 otherwise:
``anthropic_request.check_thinking``).

Prompt caching: when any system block, message block or tool carries ``cache_control``, the prompt
up to the last marked block is the cached prefix. ``X-Sim-Cache-Read-Tokens: N`` reports up to N
of it as ``cache_read_input_tokens`` and the rest as ``cache_creation_input_tokens``;
``input_tokens`` is the part after the prefix, so the three add up to the prompt. The writes are
split in ``cache_creation`` as the API does: ``ephemeral_1h_input_tokens`` up to the last block
marked ``ttl: 1h`` (reads come first), ``ephemeral_5m_input_tokens`` the rest.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.simulator import content
from app.simulator.anthropic_request import (
    MessagesRequest,
    only_tool_results,
    read_request,
    thinking_signature,
)
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.faults import Knobs
from app.simulator.schema import instance

_STOP_REASONS = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
                 "tool": "tool_use"}
_REFUSAL = tuple(content.split_tokens(content.REFUSAL))


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def check_headers(headers: dict[str, str]) -> None:
    """Anthropic's authentication and version headers."""
    bearer = headers.get("authorization", "")
    if not headers.get("x-api-key") and not (bearer.startswith("Bearer ") and bearer[7:].strip()):
        raise SimError(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        raise SimError(400, "anthropic-version: header is required")


def answer(sim: Sim, request: MessagesRequest,
           knobs: Knobs) -> tuple[Output, dict[str, Any] | None]:
    """The produced output, and the called tool when the answer is a ``tool_use`` block."""
    limit, stops = request.max_tokens, request.stop_sequences
    if knobs.refusal:
        return content.shape(_REFUSAL, limit=limit, stops=stops), None
    if request.tool is not None:
        schema = request.tool.get("input_schema") or {}
        arguments = orjson.dumps(instance(schema)).decode()
        return content.shape(content.split_tokens(arguments), limit=limit, stops=(),
                             natural="tool"), request.tool
    if request.schema is not None:
        text = orjson.dumps(instance(request.schema)).decode()
        return content.shape(content.split_tokens(text), limit=limit, stops=stops), None
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    topic = content.topic_of(content.last_user_text(request.messages))
    return content.reply(topic, length, 0, limit, stops), None


def thought(request: MessagesRequest) -> tuple[str, ...]:
    """The thinking shown before the answer when extended thinking is on (empty otherwise).
    As Claude without interleaved thinking, it thinks only at the start of an assistant turn:
    not when the last message is tool results (the turn goes on after its tool calls)."""
    if not request.thinks or (request.messages and only_tool_results(request.messages[-1])):
        return ()
    topic = content.topic_of(content.last_user_text(request.messages))
    return tuple(content.split_tokens(f"Considering how to answer: {topic}."))


def thinking_block(text: str) -> dict[str, Any]:
    """A complete answer's ``thinking`` block, signed."""
    return {"type": "thinking", "thinking": text, "signature": thinking_signature(text)}


def usage(request: MessagesRequest, knobs: Knobs, output_tokens: int) -> dict[str, Any]:
    """Anthropic's ``usage``; see the module docstring for the cache split."""
    read = min(knobs.cache_read_tokens or 0, request.cached_prefix)
    hour = max(0, request.hour_prefix - read)
    return {"input_tokens": request.prompt_tokens - request.cached_prefix,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": request.cached_prefix - read,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": request.cached_prefix - read - hour,
                               "ephemeral_1h_input_tokens": hour}}


async def messages(sim: Sim, req: Request, route: Route) -> None:
    """Validate, then answer completely or as an event stream."""
    check_headers(req.headers)
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    request = read_request(req.json_object())
    model = sim.model(request.model, route=route)
    await respond(sim, req, route, request, knobs, model=knobs.model or model)


async def respond(sim: Sim, req: Request, route: Route, request: MessagesRequest, knobs: Knobs,
                  *, model: str, ids: str = "") -> None:
    """Answer a validated request as ``model``, completely or as an event stream (mid-stream
    errors in ``route``'s dialect); ``ids`` goes after the ``msg_``/``toolu_`` of the ids."""
    output, tool = answer(sim, request, knobs)
    thinking = thought(request)
    tool_id = sim.new_id("toolu_" + ids) if tool is not None else ""
    message = {"id": sim.new_id("msg_" + ids), "type": "message", "role": "assistant",
               "model": model}
    if request.stream:
        await stream(sim, req, _plan(message, request, knobs, output, tool, tool_id, thinking),
                     knobs, route=route)
        return
    spent = output.tokens + len(thinking)
    if not await delay(sim, req, knobs, prompt=request.prompt_tokens, completion=spent,
                       finish=output.finish):
        return
    if tool is not None:
        complete = output.finish != "length"
        block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": tool["name"],
                                 "input": orjson.loads(output.text) if complete else {}}
    else:
        block = {"type": "text", "text": output.text}
    blocks = [block]
    if thinking:
        blocks.insert(0, thinking_block("".join(thinking)))
    await send_json(req.send, 200, orjson.dumps(
        {**message, "content": blocks, "stop_reason": _STOP_REASONS[output.finish],
         "stop_sequence": output.stop_sequence,
         "usage": usage(request, knobs, spent)}))


def _block_event(name: str, index: int, **fields: Any) -> bytes:
    return _event(name, {"type": name, "index": index, **fields})


def _plan(message: dict[str, Any], request: MessagesRequest, knobs: Knobs, output: Output,
          tool: dict[str, Any] | None, tool_id: str, thinking: tuple[str, ...]) -> StreamPlan:
    """``message_start`` at once; ``content_block_start`` and ``ping`` with the first token; a
    ``content_block_delta`` per piece (for a tool without parameters, one with an empty
    ``partial_json``, as Anthropic sends it); then ``content_block_stop``, ``message_delta`` and
    ``message_stop``. With ``thinking``, a ``thinking`` block comes first (index 0: its
    ``thinking_delta`` pieces, then its ``signature_delta``), the answer's block after it."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage(request, knobs, 0), "output_tokens": 1}}
    if tool is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": tool["name"],
                                 "input": {}}
        # Anthropic streams a tool without parameters as one empty partial_json, not "{" "}".
        pieces = [""] if output.text == "{}" else output.pieces
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in output.pieces]
    index = 1 if thinking else 0
    tail = [
        _block_event("content_block_stop", index),
        _event("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": _STOP_REASONS[output.finish],
                                           "stop_sequence": output.stop_sequence},
                                 "usage": {"output_tokens": output.tokens + len(thinking)}}),
        _event("message_stop", {"type": "message_stop"}),
    ]
    answer_start = _block_event("content_block_start", index, content_block=block)
    tokens = [_block_event("content_block_delta", index, delta=delta) for delta in deltas]
    head = [answer_start, _event("ping", {"type": "ping"})]
    if thinking:
        text = "".join(thinking)
        head = [_block_event("content_block_start", 0,
                             content_block={"type": "thinking", "thinking": "", "signature": ""}),
                _event("ping", {"type": "ping"})]
        opening = (_block_event("content_block_delta", 0, delta={
            "type": "signature_delta", "signature": thinking_signature(text)})
            + _block_event("content_block_stop", 0) + answer_start)
        tokens = [_block_event("content_block_delta", 0,
                               delta={"type": "thinking_delta", "thinking": piece})
                  for piece in thinking] + (
            [opening + tokens[0], *tokens[1:]] if tokens else [opening])
    return StreamPlan(
        preamble=[_event("message_start", {"type": "message_start", "message": start})],
        head=head, tokens=tokens, tail=tail, prompt_tokens=request.prompt_tokens,
        finish="length" if output.finish == "length" else "stop")
