"""Cohere's v2 API: ``POST /v2/chat`` (complete and streamed) and ``POST /v2/embed``.

Both require ``Authorization: Bearer <key>`` (401 ``no api key supplied`` without) and honour
the per-request fault headers (``app.simulator.faults``); errors use Cohere's ``{"id",
"message"}`` body. Requests are validated as ``cohere_request`` describes.

Chat: the answer is a tool call when the request offers ``tools`` (``message.tool_plan``, a
sentence, then one ``message.tool_calls`` entry whose ``arguments`` are a minimal instance of the
tool's ``parameters``; ``finish_reason`` ``TOOL_CALL``): to the tool best matching the last user
message (``app.simulator.tools``) under ``REQUIRED``, or with no ``tool_choice`` unless the last
message is a ``tool`` result; none under ``NONE``. JSON when ``response_format`` is
``json_object`` (an instance of its ``json_schema`` if given); otherwise the shared simulated
reply. Streams are SSE frames ``event: <type>`` + ``data: <JSON with the same type>``:
``message-start``, ``content-start``, one ``content-delta`` per token, ``content-end``,
``message-end`` (tool calls: ``tool-plan-delta``s, ``tool-call-start``, ``tool-call-delta``s,
``tool-call-end``). ``X-Sim-Error-After`` ends the stream with a ``message-end`` whose
``finish_reason`` is ``ERROR`` and whose ``error`` says why, as Cohere reports a failed
generation.

Usage: ``billed_units`` counts the prompt and answer as the shared contract does
(``app.simulator.content``); ``tokens`` adds ``PREAMBLE_TOKENS`` of input for the prompt
template Cohere wraps around every chat, which it does not bill, so the two differ as they do
at Cohere.

Embed: deterministic unit vectors (``app.simulator.embeddings.vector``) of
``output_dimension`` (refused, 400, for the v3 and older models, as Cohere takes it only for
embed-v4 and newer; default: the model's own, ``embeddings.MODEL_DIMENSIONS``, else
``--embedding-dimensions``), in every requested
``embedding_types`` encoding; ``meta.billed_units.input_tokens`` is the texts' estimate.
"""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.cohere_request import ChatRequest, read_chat, read_embed
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.embeddings import dimensions_of, vector
from app.simulator.faults import Knobs, read_knobs
from app.simulator.params import json_reply
from app.simulator.schema import instance
from app.usage import estimate_tokens

PREAMBLE_TOKENS = 64
_FINISH = {"stop": "COMPLETE", "stop_sequence": "STOP_SEQUENCE", "length": "MAX_TOKENS",
           "tool": "TOOL_CALL"}
_REFUSAL = tuple(content.split_tokens(content.REFUSAL))


def check_key(headers: dict[str, str]) -> None:
    """Cohere's bearer authentication."""
    value = headers.get("authorization", "")
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise SimError(401, "no api key supplied")


def _frame(payload: dict[str, Any]) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _usage(request: ChatRequest, completion: int) -> dict[str, Any]:
    return {"billed_units": {"input_tokens": request.prompt_tokens,
                             "output_tokens": completion},
            "tokens": {"input_tokens": request.prompt_tokens + PREAMBLE_TOKENS,
                       "output_tokens": completion}}


def _logprob(piece: str) -> dict[str, Any]:
    return {"text": piece, "token_ids": [zlib.crc32(piece.encode()) % 100_000],
            "logprobs": [content.logprob_of(piece)]}


def _answer(sim: Sim, request: ChatRequest, knobs: Knobs) -> tuple[Output, tuple[str, ...]]:
    """The produced output and, for a tool call, the tool plan's pieces."""
    limit, stops = request.max_tokens, request.stop_sequences
    if knobs.refusal:
        return content.shape(_REFUSAL, limit=limit, stops=stops), ()
    topic = content.topic_of(content.last_user_text(request.messages))
    if request.tool is not None:
        plan = tuple(content.split_tokens(f"I will use {request.tool['name']}."))
        arguments = orjson.dumps(instance(request.tool["parameters"])).decode()
        return content.shape(content.split_tokens(arguments), limit=limit, stops=(),
                             natural="tool"), plan
    if request.json_mode:
        text = orjson.dumps(instance(request.json_schema)).decode() \
            if request.json_schema is not None else json_reply(topic)
        return content.shape(content.split_tokens(text), limit=limit, stops=stops), ()
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return content.reply(topic, length, 0, limit, stops), ()


async def chat(sim: Sim, req: Request, route: Route) -> None:
    """Validate, then answer completely or as an event stream."""
    check_key(req.headers)
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    request = read_chat(req.json_object())
    sim.model(request.model, route=route)
    output, plan = _answer(sim, request, knobs)
    answer_id = str(uuid.uuid4())
    call_id = sim.new_id("call_") if request.tool is not None else ""
    completion = output.tokens + len(plan)
    if request.stream:
        await stream(sim, req, _plan(answer_id, request, output, plan, call_id), knobs,
                     route=route)
        return
    if not await delay(sim, req, knobs, prompt=request.prompt_tokens, completion=completion,
                       finish=output.finish):
        return
    message: dict[str, Any] = {"role": "assistant"}
    if request.tool is not None:
        message["tool_plan"] = "".join(plan)
        message["tool_calls"] = [{"id": call_id, "type": "function", "function": {
            "name": request.tool["name"], "arguments": output.text}}]
    else:
        message["content"] = [{"type": "text", "text": output.text}]
    body: dict[str, Any] = {"id": answer_id, "message": message,
                            "finish_reason": _FINISH[output.finish],
                            "usage": _usage(request, completion)}
    if request.logprobs and request.tool is None:
        body["logprobs"] = [_logprob(piece) for piece in output.pieces]
    await send_json(req.send, 200, orjson.dumps(body))


def _plan(answer_id: str, request: ChatRequest, output: Output, plan: tuple[str, ...],
          call_id: str) -> StreamPlan:
    """``message-start`` at once; the block's start with the first token; a delta per piece;
    then the block's end and ``message-end``."""
    start = _frame({"type": "message-start", "id": answer_id,
                    "delta": {"message": {"role": "assistant"}}})
    tool = request.tool
    if tool is not None:
        head = [_frame({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})
                for piece in plan]
        head.append(_frame({"type": "tool-call-start", "index": 0, "delta": {"message": {
            "tool_calls": {"id": call_id, "type": "function",
                           "function": {"name": tool["name"], "arguments": ""}}}}}))
        tokens = [_frame({"type": "tool-call-delta", "index": 0, "delta": {"message": {
            "tool_calls": {"function": {"arguments": piece}}}}}) for piece in output.pieces]
        end = _frame({"type": "tool-call-end", "index": 0})
    else:
        head = [_frame({"type": "content-start", "index": 0, "delta": {"message": {
            "content": {"type": "text", "text": ""}}}})]
        tokens = []
        for piece in output.pieces:
            event: dict[str, Any] = {"type": "content-delta", "index": 0,
                                     "delta": {"message": {"content": {"text": piece}}}}
            if request.logprobs:
                event["logprobs"] = _logprob(piece)
            tokens.append(_frame(event))
        end = _frame({"type": "content-end", "index": 0})
    finish = _frame({"type": "message-end", "id": answer_id, "delta": {
        "finish_reason": _FINISH[output.finish],
        "usage": _usage(request, output.tokens + len(plan))}})
    return StreamPlan(preamble=[start], head=head, tokens=tokens, tail=[end, finish],
                      prompt_tokens=request.prompt_tokens,
                      finish="length" if output.finish == "length" else "stop")


def _encode(vec: tuple[float, ...], kind: str) -> list[float] | list[int] | str:
    if kind == "float":
        return list(vec)
    if kind == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    if kind in ("int8", "uint8"):
        scale = 127 / (max(abs(v) for v in vec) or 1.0)
        shift = 128 if kind == "uint8" else 0
        return [round(v * scale) + shift for v in vec]
    packed = [sum(1 << (7 - bit) for bit in range(8) if i + bit < len(vec) and vec[i + bit] > 0)
              for i in range(0, len(vec), 8)]
    return packed if kind == "ubinary" else [b - 128 for b in packed]


async def embed(sim: Sim, req: Request, route: Route) -> None:
    """Validate, wait the time to first token, answer."""
    check_key(req.headers)
    knobs = read_knobs(req)
    if await faulted(sim, req, knobs):
        return
    request = read_embed(req.json_object())
    sim.model(request.model, route=route)
    dimensions = request.dimensions or dimensions_of(request.model,
                                                     sim.options.embedding_dimensions)
    vectors = [vector(text, dimensions) for text in request.texts]
    tokens = sum(estimate_tokens(text) for text in request.texts)
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps({
            "id": str(uuid.uuid4()), "texts": request.texts,
            "embeddings": {kind: [_encode(v, kind) for v in vectors]
                           for kind in request.embedding_types},
            "meta": {"api_version": {"version": "2"},
                     "billed_units": {"input_tokens": tokens}}}))
