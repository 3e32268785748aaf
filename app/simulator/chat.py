"""``POST /v1/chat/completions`` (and Azure's deployment route): OpenAI's chat completion objects.

(Over 400 lines: one route's selection, unary answer and stream plan, with the wire variants
of the servers that share it; each part reads the others' ``ToolCall`` and ``Wire``.)

Answer selection per choice, first match wins: ``X-Sim-Refusal`` (or a refusal drawn at the
admin-set ``refusal_rate``, see ``drift``) -> the refusal sentence; ``tools`` given, ``tool_choice``
not ``"none"`` and the last message not a tool result -> one ``tool_calls`` entry for the function
``tool_choice`` names, else (``"auto"``, ``"required"``, absent, ``allowed_tools``: among the
tools it lists) for the tool whose name and description share the most words with the last user
message, the first on a tie (``app.structured.pick_tool``), its ``arguments`` an instance of the
function's ``parameters`` schema (``app.structured.instance``); a custom tool (``{"type":
"custom", "custom": {"name": ...}}``, a choice naming it in the same shape) is called as OpenAI
calls one, ``{"type": "custom", "custom": {"name", "input"}}`` with free text as its ``input``
(``custom_input``; streamed: ``custom.input`` piece by piece); the same for the legacy
``functions`` (no ``tools``), chosen by ``function_call`` (``"none"``, ``"auto"``, ``{"name":
...}``) unless the last message is a ``function`` result, answered as OpenAI answered them:
``message.function_call`` (streamed: ``delta.function_call``, its ``name`` first, then
``arguments`` piece by piece) and ``finish_reason`` ``function_call``; structured output -> its
instance (JSON-object mode: ``{"reply": "Simulated reply to: ..."}``); otherwise the
deterministic reply.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.content import Output
from app.simulator.core import (
    Memo,
    Route,
    Sim,
    StreamPlan,
    delay,
    faulted,
    generation_knobs,
    stream,
)
from app.simulator.faults import NO_KNOBS, Knobs
from app.simulator.params import Sampling, check_context, read_int, read_sampling, structured_text
from app.simulator.schema import instance
from app.simulator.tools import matching
from app.simulator.vllm import prompt_token_ids

CUSTOM = "(custom)"
"""Set in the definition ``called_tool`` gives for a custom tool (no field of OpenAI's)."""
_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}
ANNOTATED_EVERY = 8
"""Text chunks per choice between two asynchronous filter annotations (``Wire.async_filter``)."""


@dataclass(frozen=True, slots=True)
class Wire:
    """What an OpenAI-compatible server's chat answers say otherwise than OpenAI's: each
    ``Output.finish``'s ``finish_reason`` (``finishes``), whether the text keeps the stop
    sequence that ended it (``keeps_stop``, ``content.keeping_stop``), and the content filter's
    verdicts it annotates answers with, as Azure OpenAI does (``prompt_filter``: the prompt's,
    as ``prompt_filter_results``; ``content_filter``: each choice's generated text's, as the
    choice's ``content_filter_results``; both None: no annotations). A stream then opens with
    the prompt's verdict alone, in a chunk that is no completion chunk (empty ``id``, ``model``
    and ``object``, ``created`` 0, no choices), sent as soon as the stream starts; the role and
    finish chunks carry an empty ``content_filter_results``, the text chunks the verdict.
    ``async_filter``: Azure's asynchronous content filter instead, in a stream: no chunk carries
    ``content_filter_results``; the verdicts come in annotation chunks of their own (empty
    ``id``, ``model`` and ``object``, ``created`` 0, one choice with ``content_filter_results``
    and ``content_filter_offsets`` and no ``delta``), one after every ``ANNOTATED_EVERY`` text
    chunks of a choice and one per choice after the last finish chunk.
    ``tgi``: the answer as TGI's router builds it (``huggingface``'s module docstring): an
    empty ``id``, a non-streamed tool call's id ``"0"`` and a streamed one's
    ``next_tool_call_id``, ``description: null`` in a called function, ``TGI_FINGERPRINT``
    unless one is set, and no ``refusal``, ``annotations`` or usage ``*_details``.
    ``stop_reason``: each choice's finish names what stopped it, as vLLM's does: the matched
    stop string when one ended the answer, else null (in a stream, on the finish chunk)."""

    finishes: Mapping[str, str]
    keeps_stop: bool = False
    prompt_filter: Mapping[str, Any] | None = field(default=None, hash=False)
    content_filter: Mapping[str, Any] | None = field(default=None, hash=False)
    async_filter: bool = False
    tgi: bool = False
    stop_reason: bool = False


OPENAI = Wire(_FINISH)
VLLM = Wire(_FINISH, stop_reason=True)
"""The OpenAI-compatible route as vLLM answers it (``stop_reason``)."""
_REFUSAL = tuple(content.split_tokens(content.REFUSAL))
_DONE = b"data: [DONE]\n\n"
MAX_TOP_LOGPROBS = 20
TGI_FINGERPRINT = "3.3.6-native"
"""TGI's ``system_fingerprint``: its version, then its docker label (``native`` without one)."""
MEMO_BODY_LIMIT = 16384  # larger bodies are rare in benchmarks and would pin memory


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call an answer makes (``arguments`` is the full JSON text)."""

    id: str
    name: str
    arguments: str
    legacy: bool = False
    """Called through the legacy ``functions`` (answered as ``function_call``)."""
    custom: bool = False
    """A custom tool's call (answered as ``custom: {name, input}``, ``arguments`` its input)."""


def called_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """The tool the answer calls (see the module docstring): a function's definition, or a
    custom tool's with ``CUSTOM`` set; else None."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        if choice in (None, "none", "auto"):
            return None
        raise SimError(400, "tool_choice is only allowed when tools are specified.",
                       param="tool_choice")
    functions: list[dict[str, Any]] = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        found = tool.get(kind) if isinstance(kind, str) and kind in ("function", "custom") \
            else None
        if not isinstance(found, dict) or not isinstance(found.get("name"), str):
            raise SimError(400, 'Each tool must be {"type": "function", "function": '
                           '{"name": ...}} or {"type": "custom", "custom": {"name": ...}}.',
                           param="tools")
        functions.append({**found, CUSTOM: True} if kind == "custom" else found)
    if choice == "none" or messages[-1].get("role") == "tool":
        return None
    if choice in (None, "auto", "required"):
        return _matching(functions, messages)
    kind = choice.get("type", "function") if isinstance(choice, dict) else None
    if kind == "allowed_tools":
        return _matching(_allowed(functions, choice.get("allowed_tools")), messages)
    if kind not in ("function", "custom"):
        raise SimError(400, "tool_choice must be 'none', 'auto', 'required', or an object of "
                       f"type 'function', 'custom' or 'allowed_tools' (got {kind or choice!r}).",
                       param="tool_choice")
    return _named([f for f in functions if bool(f.get(CUSTOM)) == (kind == "custom")],
                  _name(choice), param="tool_choice", among="tools")


def _name(choice: Any) -> Any:
    """The name in ``{"type": "function", "function": {"name": ...}}`` (or ``"custom"``'s
    same shape), else None."""
    kind = choice.get("type", "function") if isinstance(choice, dict) else None
    named = choice.get(kind) if isinstance(choice, dict) and kind in ("function", "custom") \
        else None
    return named.get("name") if isinstance(named, dict) else None


def _allowed(functions: list[dict[str, Any]], allowed: Any) -> list[dict[str, Any]]:
    """The functions OpenAI's ``allowed_tools`` tool choice lists (``{"mode": "auto" |
    "required", "tools": [{"type": "function", "function": {"name": ...}}, ...]}``)."""
    listed = allowed.get("tools") if isinstance(allowed, dict) and "mode" in allowed else None
    if not isinstance(listed, list) or not listed or allowed["mode"] not in ("auto", "required"):
        raise SimError(400, 'tool_choice.allowed_tools must be {"mode": "auto" or "required", '
                       '"tools": [...]}, with at least one tool.',
                       param="tool_choice.allowed_tools")
    return [_named(functions, _name(tool), param=f"tool_choice.allowed_tools.tools[{i}]",
                   among="tools") for i, tool in enumerate(listed)]


def custom_input(tool: dict[str, Any], messages: list[Any]) -> str:
    """A custom tool call's input: free text naming the tool and the last user message (a
    grammar ``format`` is not followed)."""
    return f"{tool['name']} input for: {content.last_user_text(messages).strip() or '(empty)'}"


def _matching(functions: list[dict[str, Any]], messages: list[Any]) -> dict[str, Any]:
    """The function whose name and description best match the last user message."""
    return matching(functions, content.last_user_text(messages))


def _named(functions: list[dict[str, Any]], wanted: Any, *, param: str,
           among: str) -> dict[str, Any]:
    """The function named ``wanted``; a 400 on ``param`` when ``among`` has none."""
    for function in functions:
        if function["name"] == wanted:
            return function
    raise SimError(400, f"{param} names a function that is not in {among}: {wanted!r}.",
                   param=param)


def called_function(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """The legacy function the answer calls (``functions`` and ``function_call``, without
    ``tools``), else None."""
    listed, choice = body.get("functions"), body.get("function_call")
    if body.get("tools") or not isinstance(listed, list) or not listed:
        return None
    functions: list[dict[str, Any]] = []
    for function in listed:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise SimError(400, 'Each function must be {"name": ...}.', param="functions")
        functions.append(function)
    if choice == "none" or messages[-1].get("role") == "function":
        return None
    if choice in (None, "auto"):
        return _matching(functions, messages)
    return _named(functions, choice.get("name") if isinstance(choice, dict) else None,
                  param="function_call", among="functions")


def answers(sim: Sim, body: dict[str, Any], messages: list[Any], sampling: Sampling,
            knobs: Knobs) -> list[tuple[Output, ToolCall | None]]:
    """The ``n`` answers of a chat request (see the module docstring for the selection)."""
    limit, stops = sampling.limit, sampling.stops
    if knobs.refusal:
        return [(content.shape(_REFUSAL, limit=limit, stops=stops), None)] * sampling.n
    function = called_tool(body, messages)
    legacy = function is None and (function := called_function(body, messages)) is not None
    if function is not None:
        custom = bool(function.get(CUSTOM))
        arguments = custom_input(function, messages) if custom \
            else orjson.dumps(instance(function.get("parameters") or {})).decode()
        out: list[tuple[Output, ToolCall | None]] = []
        for _ in range(sampling.n):
            shaped = content.shape(content.split_tokens(arguments), limit=limit, stops=(),
                                   natural="tool")
            out.append((shaped, ToolCall(sim.new_id("call_"), function["name"],
                                         shaped.text, legacy, custom)))
        return out
    topic = content.topic_of(content.last_user_text(messages))
    text = structured_text(body, sim.dialect, topic=topic)
    if text is not None:
        shaped = content.shape(content.split_tokens(text), limit=limit, stops=stops)
        return [(shaped, None)] * sampling.n
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return [(content.reply(topic, length, sampling.offset + i, limit, stops), None)
            for i in range(sampling.n)]


def usage(prompt: int, completion: int, cached: int, *, details: bool = True
          ) -> dict[str, Any]:
    """OpenAI's ``usage`` object (``details``: with its ``*_details``, which TGI never sends)."""
    if not details:
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def next_tool_call_id(messages: list[Any]) -> str:
    """The id TGI gives a streamed tool call: the highest numeric tool-call id of the
    conversation plus one, else a UUID."""
    numbers = [int(call["id"]) for message in messages
               for call in (message.get("tool_calls") or ()) if isinstance(call, dict)
               and isinstance(call.get("id"), str) and call["id"].isdigit()]
    return str(max(numbers) + 1) if numbers else str(uuid.uuid4())


def read_messages(body: dict[str, Any]) -> list[Any]:
    """``messages``: a non-empty list of objects with a role."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise SimError(400, "messages must be a non-empty list of objects with a role.",
                       param="messages")
    return messages


def read_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token to report (None: no ``logprobs`` at all)."""
    top = read_int(body, "top_logprobs", minimum=0) or 0
    if top > MAX_TOP_LOGPROBS:
        raise SimError(400, f"top_logprobs must be at most {MAX_TOP_LOGPROBS}.",
                       param="top_logprobs")
    return top if body.get("logprobs") is True else None


async def chat(sim: Sim, req: Request, route: Route, *, wire: Wire = OPENAI) -> None:
    """Validate, then answer completely or as an event stream (``wire``: the server's own
    ways, see ``Wire``).

    Fast path: with zero latency, no knobs (no header, no drift) and the same raw body as an
    earlier plain-text answer, the serialized answer is replayed with a fresh ``id`` and
    ``created`` (the answer is then a pure function of the body and the process's options).
    """
    knobs = generation_knobs(sim, req)
    if wire is OPENAI and route.dialect == "vllm":
        wire = VLLM
    memoizable = knobs is NO_KNOBS and sim.zero_latency and route.deployment is None \
        and wire in (OPENAI, VLLM)
    memo = sim.memo.get(req.body) if memoizable else None
    if memo is not None:
        await delay(sim, req, knobs, prompt=memo.prompt, completion=memo.completion,
                    finish=memo.finish)
        await send_json(req.send, 200, _envelope(sim) + memo.rest)
        return
    body = req.json_object()
    if await faulted(sim, req, knobs):
        return
    model = sim.model(body.get("model"), route=route)
    messages = read_messages(body)
    sampling = read_sampling(body, vllm=route.dialect == "vllm")
    prompt = content.prompt_tokens(messages)
    check_context(prompt, sampling.limit, max_model_len=sim.options.max_model_len)
    logprobs = read_logprobs(body)
    results = answers(sim, body, messages, sampling, knobs)
    if wire.keeps_stop:
        results = [(content.keeping_stop(output), call) for output, call in results]
    cached = min(knobs.cache_read_tokens or 0, prompt)
    model = knobs.model or model
    fingerprint = knobs.fingerprint
    if wire.tgi and fingerprint is None:
        fingerprint = TGI_FINGERPRINT
    ids = prompt_token_ids(messages) if sim.engine is not None else None
    if sampling.stream:
        plan = _plan(sim, model, fingerprint, results, prompt=prompt, cached=cached,
                     sampling=sampling, logprobs=logprobs, wire=wire,
                     tool_id=next_tool_call_id(messages) if wire.tgi else None)
        plan.prompt_ids = ids
        if knobs.role_early:  # the role chunks before the time to first token
            plan.preamble, plan.head = plan.preamble + plan.head, []
        if knobs.split_pair and plan.tokens:
            plan.tokens[1:1] = _split_pair(plan.tokens[0])
        await stream(sim, req, plan, knobs, route=route)
        return
    completion = sum(output.tokens for output, _ in results)
    finish = "length" if any(output.finish == "length" for output, _ in results) else "stop"
    if not await delay(sim, req, knobs, prompt=prompt, completion=completion, finish=finish,
                       prompt_ids=ids):
        return
    answer: dict[str, Any] = {"model": model, "choices": [
        _choice(i, output, call, logprobs, wire) for i, (output, call) in enumerate(results)],
        "usage": usage(prompt, completion, cached, details=not wire.tgi),
        "system_fingerprint": fingerprint}
    if wire.prompt_filter is not None:
        answer["prompt_filter_results"] = _prompt_filter_results(wire.prompt_filter)
    rest = orjson.dumps(answer)
    rest = rest[1:]  # without its "{": it follows the envelope's fields
    if memoizable and len(req.body) <= MEMO_BODY_LIMIT and not any(c for _, c in results):
        sim.remember(req.body, Memo(rest, prompt, completion, finish))
    await send_json(req.send, 200, _envelope(sim, tgi=wire.tgi) + rest)


def _split_pair(first: bytes) -> list[bytes]:
    """``X-Sim-Split-Pair``'s two chunks: the first text chunk's, each carrying one half of
    U+1F600's UTF-16 surrogate pair as its JSON escape (the standard library writes a lone
    surrogate so; orjson refuses to)."""
    chunk = orjson.loads(first.split(b"\n\n", 1)[0].removeprefix(b"data: "))
    frames = []
    for half in ("\ud83d", "\ude00"):
        chunk["choices"][0]["delta"] = {"content": half}
        frames.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    return frames


def _envelope(sim: Sim, *, tgi: bool = False) -> bytes:
    """The opening of a chat completion object: fresh ``id`` (TGI's: empty) and ``created``."""
    return b'{"id":"%s","object":"chat.completion","created":%d,' % (
        b"" if tgi else sim.new_id("chatcmpl-").encode(), int(time.time()))


def _choice(index: int, output: Output, call: ToolCall | None, top: int | None,
            wire: Wire) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if call else output.text}
    if not wire.tgi:
        message.update(refusal=None, annotations=[])
    if call is not None and call.legacy:
        message["function_call"] = {"name": call.name, "arguments": call.arguments}
    elif call is not None and call.custom:
        message["tool_calls"] = [{"id": call.id, "type": "custom",
                                  "custom": {"name": call.name, "input": call.arguments}}]
    elif call is not None and wire.tgi:
        message["tool_calls"] = [{"id": "0", "type": "function", "function": {
            "description": None, "name": call.name, "arguments": call.arguments}}]
    elif call is not None:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}]
    logprobs = None
    if top is not None:
        logprobs = {"content": content.chat_logprobs(output.pieces, top), "refusal": None}
    choice = {"index": index, "message": message, "logprobs": logprobs,
              "finish_reason": _finish(output, call, wire)}
    if wire.stop_reason:
        choice["stop_reason"] = stop_reason(output)
    if wire.content_filter is not None:
        choice["content_filter_results"] = wire.content_filter
    return choice


def stop_reason(output: Output) -> str | None:
    """vLLM's ``stop_reason``: the stop string that ended ``output``, else None."""
    return output.stop_sequence if output.finish == "stop_sequence" else None


def _prompt_filter_results(verdict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Azure's ``prompt_filter_results``: the one prompt's verdict."""
    return [{"prompt_index": 0, "content_filter_results": verdict}]


def _finish(output: Output, call: ToolCall | None, wire: Wire) -> str:
    """A choice's ``finish_reason``: ``function_call`` for a legacy call that was not cut."""
    finish = wire.finishes[output.finish]
    return "function_call" if call is not None and call.legacy and finish == "tool_calls" \
        else finish


def _plan(sim: Sim, model: str, fingerprint: str | None,
          results: list[tuple[Output, ToolCall | None]], *, prompt: int, cached: int,
          sampling: Sampling, logprobs: int | None, wire: Wire,
          tool_id: str | None = None) -> StreamPlan:
    """Frames: the prompt's filter verdict first where the wire gives one (``Wire``), a role
    delta per choice (with the first token), one frame per piece per choice (choices
    interleaved), a finish frame per choice, the usage frame if asked, ``[DONE]``.
    ``tool_id``: every tool call's id (TGI's), instead of the call's own."""
    base: dict[str, Any] = {"id": "" if wire.tgi else sim.new_id("chatcmpl-"),
                            "object": "chat.completion.chunk",
                            "created": int(time.time()), "model": model,
                            "system_fingerprint": fingerprint}
    if sampling.include_usage:
        base["usage"] = None

    verdict = None if wire.async_filter else wire.content_filter
    checked = [0] * len(results)  # characters of each choice the async filter has annotated
    pending = [0] * len(results)  # characters since, and text chunks since (``unchecked``)
    unchecked = [0] * len(results)

    def annotation(index: int) -> bytes:
        """The async filter's verdict on choice ``index``'s text since its last one."""
        start, end = checked[index], checked[index] + pending[index]
        checked[index], pending[index], unchecked[index] = end, 0, 0
        return b"data: " + orjson.dumps({"choices": [{
            "index": index, "finish_reason": None, "content_filter_results": wire.content_filter,
            "content_filter_offsets": {"check_offset": end, "start_offset": start,
                                       "end_offset": end}}],
            "created": 0, "id": "", "model": "", "object": ""}) + b"\n\n"

    def frame(index: int, delta: dict[str, Any], finish: str | None = None,
              lp: Any = None, *, text: bool = False, stopped: Output | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        if stopped is not None:
            choice["stop_reason"] = stop_reason(stopped)
        if verdict is not None:
            choice["content_filter_results"] = verdict if text else {}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    head: list[bytes] = []
    for index, (_, call) in enumerate(results):
        if call is None and wire.tgi:
            head.append(frame(index, {"role": "assistant", "content": ""}))
        elif call is None:
            head.append(frame(index, {"role": "assistant", "content": "", "refusal": None}))
        elif call.legacy:
            head.append(frame(index, {"role": "assistant", "content": None, "function_call": {
                "name": call.name, "arguments": ""}}))
        elif call.custom:
            head.append(frame(index, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call.id, "type": "custom",
                 "custom": {"name": call.name, "input": ""}}]}))
        else:
            named: dict[str, Any] = {"name": call.name, "arguments": ""}
            if wire.tgi:
                named = {"description": None, **named}
            head.append(frame(index, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": tool_id or call.id, "type": "function",
                 "function": named}]}))
    tokens: list[bytes] = []
    longest = max(output.tokens for output, _ in results)
    for position in range(longest):
        for index, (output, call) in enumerate(results):
            if position >= output.tokens:
                continue
            piece = output.pieces[position]
            delta = ({"content": piece} if call is None
                     else {"function_call": {"arguments": piece}} if call.legacy
                     else {"tool_calls": [{"index": 0, "custom": {"input": piece}}]} if call.custom
                     else {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            lp = None if logprobs is None else {
                "content": content.chat_logprobs([piece], logprobs), "refusal": None}
            tokens.append(frame(index, delta, lp=lp, text=True))
            if wire.async_filter:
                pending[index] += len(piece)
                unchecked[index] += 1
                if unchecked[index] == ANNOTATED_EVERY:  # rides on its text chunk's frame
                    tokens[-1] += annotation(index)
    tail = [frame(index, {}, _finish(output, call, wire),
                  stopped=output if wire.stop_reason else None)
            for index, (output, call) in enumerate(results)]
    if wire.async_filter:  # the last verdicts ride on the last finish frame
        tail[-1] += b"".join(annotation(index) for index in range(len(results)))
    finishes = len(tail)
    completion = sum(output.tokens for output, _ in results)
    if sampling.include_usage:
        last = {**base, "choices": [],
                "usage": usage(prompt, completion, cached, details=not wire.tgi)}
        tail.append(b"data: " + orjson.dumps(last) + b"\n\n")
    tail.append(_DONE)
    finish = "length" if any(o.finish == "length" for o, _ in results) else "stop"
    preamble = [] if wire.prompt_filter is None else [b"data: " + orjson.dumps({
        "choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": _prompt_filter_results(wire.prompt_filter)}) + b"\n\n"]
    return StreamPlan(tokens=tokens, tail=tail, prompt_tokens=prompt, finish=finish, head=head,
                      closing=tail[finishes:], preamble=preamble)
