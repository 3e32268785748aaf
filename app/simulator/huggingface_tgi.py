"""TGI's native text-generation routes, as a Hugging Face Inference Endpoint at ``<sim>/tgi``.

- ``POST /tgi/generate``: ``{"inputs": str, "parameters": {...}}`` -> ``{"generated_text",
  "details"}`` (``details`` when ``parameters.details``: ``finish_reason`` ``length`` |
  ``eos_token`` | ``stop_sequence``, ``generated_tokens``, ``seed``, ``prefill`` (the prompt's
  tokens, when ``decoder_input_details``, else empty) and ``tokens``).
- ``POST /tgi/generate_stream``: server-sent ``data:{...}`` events shaped like TGI's
  ``StreamResponse``: one per token (``index``, ``token: {id, text, logprob, special}``,
  ``generated_text: null``, ``details: null``); the last also carries ``generated_text`` and, when
  ``details``, ``{finish_reason, generated_tokens, seed, input_length}``. No ``[DONE]``.
  ``decoder_input_details`` is answered, as TGI does, by a 200 stream of one error event.
- ``POST /tgi``: TGI's compatibility route (where ``huggingface_hub``'s ``InferenceClient`` posts
  ``text_generation``): ``stream: true`` streams as above, else the ``/generate`` answer wrapped in
  a one-element list.

A token is required (401 without). Parameters are validated as TGI's router does, with its
messages (422 ``validation``). The prompt is the estimate's pieces after a ``<s>`` BOS token; an
answer that ends naturally ends with the special ``</s>`` token (TGI counts it in
``generated_tokens``); one a stop sequence ended keeps the sequence at its end, as TGI's does.
``grammar`` (``json``/``json_object``/``json_schema``/``regex``) makes the
answer its instance; ``return_full_text`` prepends the prompt. The fault headers apply as on every
route.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import SSE_HEADERS, Request, SimError, send_json
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.faults import Knobs
from app.simulator.huggingface import check_token
from app.simulator.schema import instance, regex_sample

MAX_STOP_SEQUENCES = 4
BOS = {"id": 1, "text": "<s>", "logprob": None}
EOS = {"id": 2, "text": "</s>", "logprob": -0.0625, "special": True}
_FINISH = {"stop": "eos_token", "tool": "eos_token", "length": "length",
           "stop_sequence": "stop_sequence"}
_REFUSAL = tuple(content.split_tokens(content.REFUSAL))


def _invalid(message: str) -> SimError:
    return SimError(422, f"Input validation error: {message}", kind="validation")


def _number(parameters: dict[str, Any], key: str) -> float | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SimError(422, f"Failed to deserialize the JSON body into the target type: "
                       f"parameters.{key}: invalid type, expected a number", kind="validation")
    return float(value)


@dataclass(frozen=True, slots=True)
class Generate:
    """One validated generate request."""

    inputs: str
    parameters: dict[str, Any]
    limit: int | None
    stops: tuple[str, ...]
    seed: int | None
    details: bool
    prefill: bool


def read_generate(body: dict[str, Any]) -> Generate:
    """``inputs`` and ``parameters``, validated as TGI's router validates them."""
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise SimError(422, "Failed to deserialize the JSON body into the target type: inputs: "
                       "invalid type, expected a string", kind="validation")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise SimError(422, "Failed to deserialize the JSON body into the target type: "
                       "parameters: invalid type, expected struct GenerateParameters",
                       kind="validation")
    temperature, top_p = _number(parameters, "temperature"), _number(parameters, "top_p")
    if temperature is not None and temperature <= 0:
        raise _invalid("`temperature` must be strictly positive")
    if top_p is not None and not 0 < top_p < 1:
        raise _invalid("`top_p` must be > 0.0 and < 1.0")
    penalty = _number(parameters, "repetition_penalty")
    if penalty is not None and penalty <= 0:
        raise _invalid("`repetition_penalty` must be strictly positive")
    frequency = _number(parameters, "frequency_penalty")
    if frequency is not None and not -2 <= frequency <= 2:
        raise _invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    top_k = _number(parameters, "top_k")
    if top_k is not None and top_k <= 0:
        raise _invalid("`top_k` must be strictly positive")
    limit = _number(parameters, "max_new_tokens")
    if limit is not None and limit < 1:
        raise _invalid("`max_new_tokens` must be strictly positive")
    stops = parameters.get("stop") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise SimError(422, "Failed to deserialize the JSON body into the target type: "
                       "parameters.stop: invalid type, expected a sequence", kind="validation")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _invalid(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. "
                       f"Given: {len(stops)}")
    seed = parameters.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise SimError(422, "Failed to deserialize the JSON body into the target type: "
                       "parameters.seed: invalid value, expected u64", kind="validation")
    return Generate(inputs=inputs, parameters=parameters,
                    limit=None if limit is None else int(limit), stops=tuple(stops), seed=seed,
                    details=parameters.get("details") is True,
                    prefill=parameters.get("decoder_input_details") is True)


def _constrained(grammar: Any) -> str | None:
    if not isinstance(grammar, dict):
        return None
    kind, value = grammar.get("type"), grammar.get("value")
    if kind in ("json", "json_object") and isinstance(value, dict):
        return orjson.dumps(instance(value)).decode()
    if kind == "json_schema" and isinstance(value, dict):
        return orjson.dumps(instance(value.get("schema") or {})).decode()
    if kind == "regex" and isinstance(value, str):
        return regex_sample(value)
    raise _invalid("`grammar` must be a json, json_object, json_schema or regex grammar")


def answer(sim: Sim, request: Generate, knobs: Knobs) -> Output:
    """The produced output (refusal, grammar instance, or the deterministic reply)."""
    limit, stops = request.limit, request.stops
    if knobs.refusal:
        return content.keeping_stop(content.shape(_REFUSAL, limit=limit, stops=stops))
    text = _constrained(request.parameters.get("grammar"))
    if text is not None:
        return content.keeping_stop(
            content.shape(content.split_tokens(text), limit=limit, stops=stops))
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return content.keeping_stop(content.reply(content.topic_of(request.inputs), length,
                                              request.seed or 0, limit, stops))


def token(piece: str) -> dict[str, Any]:
    """TGI's ``Token`` for a piece of text (a stable id from its bytes)."""
    return {"id": 3 + zlib.crc32(piece.encode()) % 32000, "text": piece,
            "logprob": content.logprob_of(piece), "special": False}


def tokens_of(output: Output) -> list[dict[str, Any]]:
    """The generated tokens: the pieces, then ``</s>`` when the answer ended naturally."""
    found = [token(piece) for piece in output.pieces]
    return [*found, EOS] if _FINISH[output.finish] == "eos_token" else found


def prefill_of(inputs: str) -> list[dict[str, Any]]:
    """The prompt's tokens as TGI reports them: ``<s>``, then each piece with its logprob."""
    return [BOS, *({"id": t["id"], "text": t["text"], "logprob": t["logprob"]}
                   for t in map(token, content.split_tokens(inputs)))]


def _full_text(request: Generate, output: Output) -> str:
    full = request.parameters.get("return_full_text") is True
    return request.inputs + output.text if full else output.text


def _details(request: Generate, output: Output, generated: list[dict[str, Any]]
             ) -> dict[str, Any]:
    return {"finish_reason": _FINISH[output.finish], "generated_tokens": len(generated),
            "seed": request.seed,
            "prefill": prefill_of(request.inputs) if request.prefill else [],
            "tokens": generated}


async def _complete(sim: Sim, req: Request, request: Generate, knobs: Knobs, *,
                    listed: bool) -> None:
    output = answer(sim, request, knobs)
    generated = tokens_of(output)
    if not await delay(sim, req, knobs, prompt=len(prefill_of(request.inputs)),
                       completion=len(generated), finish=output.finish):
        return
    result: dict[str, Any] = {"generated_text": _full_text(request, output)}
    if request.details:
        result["details"] = _details(request, output, generated)
    await send_json(req.send, 200, orjson.dumps([result] if listed else result))


def _event(payload: dict[str, Any]) -> bytes:
    return b"data:" + orjson.dumps(payload) + b"\n\n"


async def _stream(sim: Sim, req: Request, route: Route, request: Generate, knobs: Knobs) -> None:
    if request.prefill:
        error = {"error": "Input validation error: `decoder_input_details` == true is not "
                 "supported when streaming tokens", "error_type": "validation"}
        await req.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await req.send({"type": "http.response.body", "body": _event(error)})
        return
    output = answer(sim, request, knobs)
    generated = tokens_of(output)
    prompt = len(prefill_of(request.inputs))
    events: list[dict[str, Any]] = [
        {"index": i + 1, "token": t, "generated_text": None, "details": None}
        for i, t in enumerate(generated)]
    last: dict[str, Any] = events[-1] if events else {
        "index": 1, "token": EOS, "generated_text": None, "details": None}
    last["generated_text"] = _full_text(request, output)
    if request.details:
        last["details"] = {"finish_reason": _FINISH[output.finish],
                           "generated_tokens": len(generated), "seed": request.seed,
                           "input_length": prompt}
    frames = [_event(e) for e in events] or [_event(last)]
    plan = StreamPlan(tokens=frames[:-1], tail=frames[-1:], prompt_tokens=prompt,
                      finish="length" if output.finish == "length" else "stop")
    await stream(sim, req, plan, knobs, route=route)


async def _serve(sim: Sim, req: Request, route: Route, *, streamed: bool | None) -> None:
    """Token, knobs and faults, validation, then the answer (``streamed`` None: as the body's
    ``stream`` says, the compatibility route)."""
    check_token(req.headers)
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    body = req.json_object()
    request = read_generate(body)
    if streamed is None:
        if body.get("stream") is True:
            await _stream(sim, req, route, request, knobs)
        else:
            await _complete(sim, req, request, knobs, listed=True)
    elif streamed:
        await _stream(sim, req, route, request, knobs)
    else:
        await _complete(sim, req, request, knobs, listed=False)


async def generate(sim: Sim, req: Request, route: Route) -> None:
    """``POST /tgi/generate``."""
    await _serve(sim, req, route, streamed=False)


async def generate_stream(sim: Sim, req: Request, route: Route) -> None:
    """``POST /tgi/generate_stream``."""
    await _serve(sim, req, route, streamed=True)


async def compat_generate(sim: Sim, req: Request, route: Route) -> None:
    """``POST /tgi``: TGI's compatibility route."""
    await _serve(sim, req, route, streamed=None)
