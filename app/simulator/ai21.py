"""``POST /studio/v1/chat/completions``: AI21 Studio's Jamba chat completions, complete and
streamed, so ``base_url = <simulator>/studio/v1`` plays AI21's API.

Requires ``Authorization: Bearer <key>`` (401 ``{"detail": ...}`` without; the wording is the
simulator's). Requests are validated as ``ai21_request`` describes (422, FastAPI's shape).
Answers are AI21's ``ChatCompletion``: ``{"id": "chat-...", "choices": [{"index", "message":
{"role", "content", "tool_calls"}, "logprobs", "finish_reason"}], "usage", "meta"}``, with no
``object``, ``created`` or ``model``; finish reasons ``stop``, ``length``, ``tool_calls``.

The answer is chosen as the OpenAI route chooses it (``app.simulator.chat.answers``), from the
fields AI21 defines: with ``tools`` (AI21 has no ``tool_choice``) a call to the tool that best
matches the last user message, unless the last message is a tool result; with
``response_format`` ``json_object`` the JSON reply; else the deterministic reply.

Streams are ``data:`` lines only (the ``ai21`` SDK refuses any other line): a first chunk whose
delta is ``{"role": "assistant"}``, then one chunk per token (``{"content": ...}``; for a tool
call first ``{"tool_calls": [{"id", "index", "type", "function": {"name"}}]}``, then
``{"tool_calls": [{"index", "function": {"arguments"}}]}``), a last chunk with the finish
reason and ``usage``, and ``data: [DONE]``. The per-request fault headers (``faults``) work as
on every route.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.simulator import content
from app.simulator.ai21_request import read_request
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.chat import ToolCall, answers
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.params import Sampling

ROUTE = Route("ai21")
PATH = "/studio/v1/chat/completions"
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}
_DONE = b"data: [DONE]\n\n"


def check_auth(headers: dict[str, str]) -> None:
    """AI21's bearer token."""
    bearer = headers.get("authorization", "")
    if not (bearer.startswith("Bearer ") and bearer[7:].strip()):
        raise SimError(401, "Forbidden: Bad or missing API token.")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


def _choice(index: int, output: Output, call: ToolCall | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if call else output.text,
                               "tool_calls": [_tool_call(call)] if call else None}
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": _FINISH[output.finish]}


async def chat_completions(sim: Sim, req: Request, route: Route) -> None:
    """Authenticate, apply the fault headers, validate, then answer completely or as a stream."""
    check_auth(req.headers)
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    request = read_request(req.json_object(), models=sim.models)
    sampling = Sampling(n=request.n, limit=request.max_tokens, stops=request.stops,
                        stream=request.stream, include_usage=True, offset=0)
    # Only the fields AI21 defines choose the answer (it has no tool_choice).
    fields = {"tools": request.tools, "response_format": request.response_format}
    results = answers(sim, fields, request.messages, sampling, knobs)
    prompt = content.prompt_tokens(request.messages)
    chat_id = sim.new_id("chat-")
    if request.stream:
        await stream(sim, req, _plan(chat_id, results, prompt), knobs, route=route)
        return
    completion = sum(output.tokens for output, _ in results)
    finish = "length" if any(output.finish == "length" for output, _ in results) else "stop"
    if not await delay(sim, req, knobs, prompt=prompt, completion=completion, finish=finish):
        return
    await send_json(req.send, 200, orjson.dumps({
        "id": chat_id,
        "choices": [_choice(i, output, call) for i, (output, call) in enumerate(results)],
        "usage": _usage(prompt, completion), "meta": {"requestDurationMillis": 1}}))


def _frame(chat_id: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, int] | None = None) -> bytes:
    chunk: dict[str, Any] = {"id": chat_id, "choices": [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _plan(chat_id: str, results: list[tuple[Output, ToolCall | None]], prompt: int
          ) -> StreamPlan:
    """One choice (AI21 streams only ``n: 1``): role, pieces, finish with usage, ``[DONE]``."""
    output, call = results[0]
    head = [_frame(chat_id, {"role": "assistant"})]
    if call is not None:
        head.append(_frame(chat_id, {"tool_calls": [
            {"id": call.id, "index": 0, "type": "function", "function": {"name": call.name}}]}))
        tokens = [_frame(chat_id, {"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                  for p in output.pieces]
    else:
        tokens = [_frame(chat_id, {"content": piece}) for piece in output.pieces]
    tail = [_frame(chat_id, {"content": ""}, _FINISH[output.finish],
                   _usage(prompt, output.tokens)), _DONE]
    return StreamPlan(tokens=tokens, tail=tail, prompt_tokens=prompt,
                      finish="length" if output.finish == "length" else "stop", head=head)
