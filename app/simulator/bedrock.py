"""The Amazon Bedrock runtime under ``/bedrock``: ``POST /bedrock/model/{modelId}/converse``,
``/converse-stream``, ``/invoke`` and ``/invoke-with-response-stream``.

Every request is checked as AWS checks it (``aws_auth``: SigV4 for service ``bedrock``, or the
test Bedrock API key as ``Authorization: Bearer``). Errors are ``{"message"}`` with the type in
``x-amzn-ErrorType``; inside a started stream, an ``exception`` event-stream message
(``internalServerException`` for an injected mid-stream failure), or with
``X-Sim-Aws-Error-Code`` the framing's own ``error`` message (``faults``).

- Converse answers ``output.message`` (a ``toolUse`` block, ``stopReason`` ``tool_use``, when
  ``toolConfig`` offers tools: the one ``toolChoice.tool`` names, else the best match for the
  last user text (``app.simulator.tools``) under ``any``, or ``auto`` (the default) unless the
  last message carries a ``toolResult``; the JSON instance of the schema when ``outputConfig``
  asks for one; else text), ``stopReason``,
  ``usage`` and ``metrics``. ``cachePoint`` blocks mark a cached prefix:
  ``X-Sim-Cache-Read-Tokens: N`` reports up to N of it as ``cacheReadInputTokens``, the rest
  as ``cacheWriteInputTokens``; ``inputTokens`` is the part after it.
- ConverseStream sends ``messageStart``, (``contentBlockStart`` for a tool), one
  ``contentBlockDelta`` per token, ``contentBlockStop``, ``messageStop`` and ``metadata``,
  framed as ``application/vnd.amazon.eventstream`` with their CRCs.
- ``additionalModelResponseFieldPaths`` returns, in the answer's (and ``messageStop``'s)
  ``additionalModelResponseFields``, the fields of the model's own response it points to that
  the response has: a Claude model's ``/stop_sequence`` (the sequence that ended the answer, or
  null); other models' responses have none of them, and Converse ignores such paths.
- Claude's thinking (``additionalModelRequestFields.thinking``, ``enabled`` or ``adaptive``)
  puts a ``reasoningContent`` block before the answer (``reasoningText`` with its text and a
  signature; streamed as ``reasoningContent`` text deltas, then the signature, at block index
  0) and counts its tokens in ``outputTokens``: Converse's usage has no field of its own for
  them, and they are billed as output.
- InvokeModel takes the model's own body, chosen by the model id: Titan Text Embeddings v2
  (``inputText``, ``dimensions``, ``normalize``; 1024 numbers unless ``dimensions`` says) and
  v1 (``inputText`` only; 1536 numbers), at most ``TITAN_MAX_TOKENS`` tokens a text (more is
  AWS's 400 ``Too many input tokens``), Cohere Embed (``texts`` up to 96, ``input_type``; the
  model's own length, ``embeddings.MODEL_DIMENSIONS``, else 1024, or for Embed v4 its
  ``output_dimension``, 256, 512, 1024 or 1536, which v3 refuses; token count in
  ``X-Amzn-Bedrock-Input-Token-Count``) and Anthropic's
  Messages body (``anthropic_version: bedrock-2023-05-31``, no ``model``), answered as the
  Anthropic dialect answers; with a response stream, each Anthropic event travels base64 in a
  ``chunk`` event, the last with ``amazon-bedrock-invocationMetrics``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import MutableMapping
from typing import Any

import orjson

from app.simulator import anthropic, content
from app.simulator import aws_eventstream as es
from app.simulator.anthropic_request import read_request
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.aws_auth import ERROR_TYPES, aws_error_headers, segment, verify
from app.simulator.bedrock_request import ConverseRequest, fail, read_converse
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.embeddings import dimensions_of, vector
from app.simulator.faults import Knobs
from app.simulator.schema import instance

PREFIX = "/bedrock/model/"
ROUTE = Route("bedrock")
OPERATIONS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
ANTHROPIC_VERSION = "bedrock-2023-05-31"
_STOP = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
         "tool": "tool_use"}
TITAN_MAX_TOKENS = 8192
"""The input tokens Titan Text Embeddings reads from one text (v1 and v2: 8k)."""
TITAN_DIMENSIONS = (256, 512, 1024)
COHERE_DIMENSIONS = 1024
COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
REASONING_SIGNATURE = "c2ltdWxhdGVkIHJlYXNvbmluZyBzaWduYXR1cmU="
"""The signature closing every simulated reasoning block (opaque to the gateway)."""


def parse_path(path: str) -> tuple[str, str] | None:
    """(model id, operation) of a ``/bedrock/model/{modelId}/{operation}`` path."""
    if not path.startswith(PREFIX):
        return None
    model, _, operation = path[len(PREFIX):].rpartition("/")
    return (model, operation) if model and operation in OPERATIONS else None


async def handle(sim: Sim, req: Request, route: Route) -> None:
    """Authenticate, then serve the operation; errors get their AWS type header."""
    parsed = parse_path(req.path)
    assert parsed is not None  # routed here only when it parses
    model, operation = parsed
    try:
        verify(req, service="bedrock", bearer_ok=True,
               encoded_path=f"{PREFIX}{segment(model)}/{operation}")
        knobs = generation_knobs(sim, req)
        if await faulted(sim, req, knobs):
            return
        body = req.json_object()
        if operation.startswith("converse"):
            await _converse(sim, req, model, body, knobs, streamed=operation != "converse")
        else:
            await _invoke(sim, req, model, body, knobs,
                          streamed=operation == "invoke-with-response-stream")
    except SimError as err:
        raise aws_error_headers(err, types=ERROR_TYPES, namespace="com.amazon.bedrock") from None


def _eventstream(req: Request) -> None:
    """Answer the stream as ``application/vnd.amazon.eventstream`` (``core.stream`` starts
    every stream with SSE headers)."""
    send = req.send

    async def relabel(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": es.HEADERS}
        await send(message)

    req.send = relabel


def _usage(request: ConverseRequest, knobs: Knobs, output_tokens: int) -> dict[str, Any]:
    read = min(knobs.cache_read_tokens or 0, request.cached_prefix)
    fresh = request.prompt_tokens - request.cached_prefix
    usage = {"inputTokens": fresh, "outputTokens": output_tokens}
    if request.cached_prefix:
        usage["cacheReadInputTokens"] = read
        usage["cacheWriteInputTokens"] = request.cached_prefix - read
    usage["totalTokens"] = request.prompt_tokens + output_tokens
    return usage


def _output(sim: Sim, request: ConverseRequest, knobs: Knobs) -> content.Output:
    limit, stops = request.max_tokens, request.stop_sequences
    if request.tool is not None or request.schema is not None:
        schema = request.schema if request.tool is None \
            else request.tool["inputSchema"]["json"]
        text = orjson.dumps(instance(schema)).decode()
        return content.shape(content.split_tokens(text), limit=limit, stops=(),
                             natural="tool" if request.tool is not None else "stop")
    if knobs.refusal:
        return content.shape(content.split_tokens(content.REFUSAL), limit=limit, stops=stops)
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    topic = content.topic_of(content.last_user_text(request.messages))
    return content.reply(topic, length, 0, limit, stops)


def _response_fields(model: str, request: ConverseRequest, output: content.Output
                     ) -> dict[str, Any]:
    """The ``additionalModelResponseFields`` entry for an answer (empty: none asked for, or
    none the model's response has)."""
    lowered = model.lower()
    if "/stop_sequence" not in request.response_paths or not (
            "anthropic" in lowered or "claude" in lowered):
        return {}
    return {"additionalModelResponseFields": {"stop_sequence": output.stop_sequence}}


def _thought(request: ConverseRequest) -> tuple[str, ...]:
    """The reasoning Claude shows when thinking is on (empty otherwise)."""
    if not request.thinks:
        return ()
    topic = content.topic_of(content.last_user_text(request.messages))
    return tuple(content.split_tokens(f"Considering how to answer: {topic}."))


async def _converse(sim: Sim, req: Request, model: str, body: dict[str, Any], knobs: Knobs,
                    *, streamed: bool) -> None:
    sim.model(model, route=ROUTE)
    request = read_converse(body)
    output = _output(sim, request, knobs)
    thought = _thought(request)
    tool_id = f"tooluse_{uuid.uuid4().hex[:22]}" if request.tool is not None else ""
    if streamed:
        _eventstream(req)
        await stream(sim, req, _converse_plan(request, knobs, output, tool_id, thought,
                                              _response_fields(model, request, output)),
                     knobs, route=ROUTE)
        return
    spent = output.tokens + len(thought)
    if not await delay(sim, req, knobs, prompt=request.prompt_tokens, completion=spent,
                       finish=output.finish):
        return
    if request.tool is not None:
        done = output.finish != "length"
        block: dict[str, Any] = {"toolUse": {"toolUseId": tool_id, "name": request.tool["name"],
                                             "input": orjson.loads(output.text) if done else {}}}
    else:
        block = {"text": output.text}
    blocks = [block]
    if thought:
        blocks.insert(0, {"reasoningContent": {"reasoningText": {
            "text": "".join(thought), "signature": REASONING_SIGNATURE}}})
    await send_json(req.send, 200, orjson.dumps({
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": _STOP[output.finish], **_response_fields(model, request, output),
        "usage": _usage(request, knobs, spent), "metrics": {"latencyMs": 1}}))


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return es.event("contentBlockDelta", orjson.dumps({"delta": delta,
                                                       "contentBlockIndex": index}))


def _stop(index: int) -> bytes:
    return es.event("contentBlockStop", orjson.dumps({"contentBlockIndex": index}))


def _converse_plan(request: ConverseRequest, knobs: Knobs, output: content.Output,
                   tool_id: str, thought: tuple[str, ...], fields: dict[str, Any]
                   ) -> StreamPlan:
    """The events of a ConverseStream answer: the reasoning block first (index 0) when thinking
    is on, closed by its signature, then the text or tool block; ``fields`` go on
    ``messageStop`` (``_response_fields``)."""
    reasoning = [_delta(0, {"reasoningContent": {"text": piece}}) for piece in thought]
    index, opening = 0, b""
    if thought:
        index = 1
        opening = _delta(0, {"reasoningContent": {"signature": REASONING_SIGNATURE}}) + _stop(0)
    if request.tool is not None:
        start: dict[str, Any] = {"toolUse": {"toolUseId": tool_id,
                                             "name": request.tool["name"]}}
        opening += es.event("contentBlockStart", orjson.dumps(
            {"start": start, "contentBlockIndex": index}))
        deltas: list[dict[str, Any]] = [{"toolUse": {"input": piece}}
                                        for piece in output.pieces]
    else:
        deltas = [{"text": piece} for piece in output.pieces]
    answer = [_delta(index, delta) for delta in deltas]
    if answer:
        answer[0] = opening + answer[0]
    elif opening:
        answer = [opening]
    spent = output.tokens + len(thought)
    tail = [_stop(index),
            es.event("messageStop", orjson.dumps({"stopReason": _STOP[output.finish],
                                                  **fields})),
            es.event("metadata", orjson.dumps({"usage": _usage(request, knobs, spent),
                                               "metrics": {"latencyMs": 1}}))]
    return StreamPlan(
        preamble=[es.event("messageStart", b'{"role":"assistant"}')],
        tokens=reasoning + answer, tail=tail, prompt_tokens=request.prompt_tokens,
        finish="length" if output.finish == "length" else "stop")


async def _invoke(sim: Sim, req: Request, model: str, body: dict[str, Any], knobs: Knobs, *,
                  streamed: bool) -> None:
    sim.model(model, route=ROUTE)
    lowered = model.lower()
    if "anthropic" in lowered:
        await _claude(sim, req, model, body, knobs, streamed=streamed)
    elif streamed:
        raise fail(f"The model {model} does not support response streaming on InvokeModel.")
    elif "titan-embed-text" in lowered:
        await _titan(sim, req, model, body, knobs)
    elif "cohere.embed" in lowered:
        await _cohere(sim, req, model, body, knobs)
    else:
        raise fail(f"The provided model identifier is invalid: {model}")


async def _titan(sim: Sim, req: Request, model: str, body: dict[str, Any],
                 knobs: Knobs) -> None:
    """Titan Text Embeddings: v2 takes ``dimensions`` (256, 512 or 1024, the default),
    ``normalize`` and ``embeddingTypes``; v1 only ``inputText``, and answers 1536 numbers."""
    text = body.get("inputText")
    v1 = model.startswith("amazon.titan-embed-text-v1")
    known = {"inputText"} if v1 else {"inputText", "dimensions", "normalize", "embeddingTypes"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise fail(f"Malformed input request: extraneous key [{unknown[0]}] is not permitted, "
                   "please reformat your input and try again.")
    if not isinstance(text, str) or not text:
        raise fail("Malformed input request: #: required key [inputText] not found, please "
                   "reformat your input and try again.")
    dimensions = body.get("dimensions", dimensions_of(model, 1536 if v1 else 1024))
    if not v1 and dimensions not in TITAN_DIMENSIONS:
        raise fail("Malformed input request: #/dimensions: " + str(dimensions) + " is not a "
                   "valid enum value, please reformat your input and try again.")
    tokens = content.count_tokens(text)
    if tokens > TITAN_MAX_TOKENS:
        raise fail(f"400 Bad Request: Too many input tokens. Max input tokens: "
                   f"{TITAN_MAX_TOKENS}, request input token count: {tokens} ")
    if not await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        return
    floats = list(vector(text, dimensions))
    await send_json(req.send, 200, orjson.dumps({
        "embedding": floats, "embeddingsByType": {"float": floats},
        "inputTextTokenCount": tokens}))


async def _cohere(sim: Sim, req: Request, model: str, body: dict[str, Any],
                  knobs: Knobs) -> None:
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or len(texts) > 96 \
            or not all(isinstance(t, str) for t in texts):
        raise fail("Malformed input request: #/texts: expected 1 to 96 strings, please "
                   "reformat your input and try again.")
    if body.get("input_type") not in ("search_document", "search_query", "classification",
                                      "clustering"):
        raise fail("Malformed input request: #: required key [input_type] not found, please "
                   "reformat your input and try again.")
    dimensions = _cohere_dimensions(model, body)
    tokens = sum(content.count_tokens(t) for t in texts)
    if not await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        return
    await send_json(req.send, 200, orjson.dumps({
        "embeddings": [list(vector(t, dimensions)) for t in texts],
        "id": str(uuid.uuid4()), "response_type": "embeddings_floats", "texts": texts}),
        [(b"x-amzn-bedrock-input-token-count", str(tokens).encode())])


def _cohere_dimensions(model: str, body: dict[str, Any]) -> int:
    """The vector length: Embed v4's ``output_dimension`` (256, 512, 1024 or 1536), else the
    model's own; v3 has no ``output_dimension``."""
    if "output_dimension" not in body:
        return dimensions_of(model, COHERE_DIMENSIONS)
    chosen = body["output_dimension"]
    if "cohere.embed-v4" not in model.lower():
        raise fail("Malformed input request: extraneous key [output_dimension] is not "
                   "permitted, please reformat your input and try again.")
    if isinstance(chosen, bool) or chosen not in COHERE_V4_DIMENSIONS:
        raise fail("Malformed input request: #/output_dimension: " + str(chosen) + " is not a "
                   "valid enum value, please reformat your input and try again.")
    return int(chosen)


async def _claude(sim: Sim, req: Request, model: str, body: dict[str, Any], knobs: Knobs, *,
                  streamed: bool) -> None:
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        raise fail(f"anthropic_version: must be {ANTHROPIC_VERSION}")
    for key in ("model", "stream"):
        if key in body:
            raise fail(f"Malformed input request: extraneous key [{key}] is not permitted, "
                       "please reformat your input and try again.")
    request = read_request({**body, "model": model, "stream": streamed})
    output, tool = anthropic.answer(sim, request, knobs)
    thinking = anthropic.thought(request)
    tool_id = sim.new_id("toolu_bdrk_") if tool is not None else ""
    message = {"id": sim.new_id("msg_bdrk_"), "type": "message", "role": "assistant",
               "model": model}
    if not streamed:
        spent = output.tokens + len(thinking)
        if not await delay(sim, req, knobs, prompt=request.prompt_tokens,
                           completion=spent, finish=output.finish):
            return
        if tool is not None:
            block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": tool["name"],
                                     "input": orjson.loads(output.text)
                                     if output.finish != "length" else {}}
        else:
            block = {"type": "text", "text": output.text}
        blocks = [block]
        if thinking:
            blocks.insert(0, anthropic.thinking_block("".join(thinking)))
        await send_json(req.send, 200, orjson.dumps({
            **message, "content": blocks, "stop_reason": _STOP[output.finish],
            "stop_sequence": output.stop_sequence,
            "usage": anthropic.usage(request, knobs, spent)}))
        return
    # The Anthropic dialect's own plan, one definition of its event sequence, re-framed.
    plan = anthropic._plan(message, request, knobs, output, tool, tool_id, thinking)
    metrics = {"inputTokenCount": request.prompt_tokens,
               "outputTokenCount": output.tokens + len(thinking),
               "invocationLatency": 1, "firstByteLatency": 1}
    plan.preamble = [_chunk(f) for f in plan.preamble]
    plan.head = [_chunk(f) for f in plan.head if not f.startswith(b"event: ping")]
    # A token frame may hold several events (a thinking block's end, the answer's start).
    plan.tokens = [b"".join(_chunk(e) for e in f.split(b"\n\n") if e) for f in plan.tokens]
    plan.tail = [_chunk(f, metrics if f.startswith(b"event: message_stop") else None)
                 for f in plan.tail]
    _eventstream(req)
    await stream(sim, req, plan, knobs, route=ROUTE)


def _chunk(frame: bytes, metrics: dict[str, Any] | None = None) -> bytes:
    """An Anthropic SSE frame as a Bedrock ``chunk`` event (its JSON, base64 in ``bytes``)."""
    data = frame.split(b"\ndata: ", 1)[1].rstrip(b"\n")
    if metrics is not None:
        data = orjson.dumps({**orjson.loads(data), "amazon-bedrock-invocationMetrics": metrics})
    return es.event("chunk", orjson.dumps({"bytes": base64.b64encode(data).decode()}))
