"""``POST /v1/completions`` (and Azure's deployment route): OpenAI's legacy ``text_completion``.

``prompt`` may be a string, a list of strings, a list of token ids or a list of such lists; each
prompt gets ``n`` choices, indexed prompt-major. Prompt tokens are ``estimate_tokens(prompt)`` for
text (no per-message overhead: there is no chat template) and the id count for token ids.
``max_tokens: 0`` is taken with ``echo`` (the prompt, nothing generated, ``finish_reason``
``length``), as vLLM takes it; without ``echo`` it is vLLM's 400.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.chat import stop_reason as named_stop
from app.simulator.chat import usage
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.faults import Knobs
from app.simulator.params import Sampling, check_context, read_int, read_sampling, structured_text
from app.usage import estimate_tokens

_REFUSAL = tuple(content.split_tokens(content.REFUSAL))


def read_prompts(value: Any) -> list[str | list[int]]:
    """The prompts of a request, each a text or a list of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [value]
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, list) and item and all(isinstance(i, int) for i in item)
               for item in value):
            return list(value)
    raise SimError(400, "prompt must be a string, a list of strings, a list of token ids or a "
                   "list of token-id lists.", param="prompt")


def _answer(sim: Sim, body: dict[str, Any], prompt: str | list[int], index: int,
            sampling: Sampling, knobs: Knobs) -> Output:
    limit, stops = sampling.limit, sampling.stops
    if knobs.refusal:
        return content.shape(_REFUSAL, limit=limit, stops=stops)
    topic = content.topic_of(prompt) if isinstance(prompt, str) else ""
    text = structured_text(body, sim.dialect, topic=topic)
    if text is not None:
        return content.shape(content.split_tokens(text), limit=limit, stops=stops)
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return content.reply(topic, length, sampling.offset + index, limit, stops)


async def completions(sim: Sim, req: Request, route: Route) -> None:
    """Validate, then answer completely or as an event stream."""
    body = req.json_object()
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    model = sim.model(body.get("model"), route=route)
    prompts = read_prompts(body.get("prompt"))
    echo = body.get("echo") is True
    sampling = read_sampling(body, echo_only=echo, vllm=route.dialect == "vllm")
    sizes = [estimate_tokens(p) if isinstance(p, str) else len(p) for p in prompts]
    for size in sizes:
        check_context(size, sampling.limit, max_model_len=sim.options.max_model_len)
    top = read_int(body, "logprobs", minimum=0)
    results: list[tuple[str, Output]] = []
    for prompt in prompts:
        prefix = prompt if echo and isinstance(prompt, str) else ""
        results.extend((prefix, _answer(sim, body, prompt, len(results), sampling, knobs))
                       for _ in range(sampling.n))
    prompt_total = sum(sizes)
    cached = min(knobs.cache_read_tokens or 0, prompt_total)
    meta = {"id": sim.new_id("cmpl-"), "object": "text_completion",
            "created": int(time.time()), "model": knobs.model or model,
            "system_fingerprint": knobs.fingerprint}
    if sampling.stream:
        await stream(sim, req, _plan(meta, results, prompt=prompt_total, cached=cached,
                                     sampling=sampling, top=top,
                                     stop_reason=route.dialect == "vllm"), knobs, route=route)
        return
    completion = sum(output.tokens for _, output in results)
    finish = "length" if any(output.finish == "length" for _, output in results) else "stop"
    if await delay(sim, req, knobs, prompt=prompt_total, completion=completion, finish=finish):
        choices = [{"text": prefix + output.text, "index": index,
                    "logprobs": None if top is None else content.completion_logprobs(
                        output.pieces, top, start=len(prefix)),
                    "finish_reason": "length" if output.finish == "length" else "stop"}
                   for index, (prefix, output) in enumerate(results)]
        if route.dialect == "vllm":  # vLLM names the stop string that ended a choice
            for choice, (_, output) in zip(choices, results, strict=True):
                choice["stop_reason"] = named_stop(output)
        await send_json(req.send, 200, orjson.dumps(
            {**meta, "choices": choices, "usage": usage(prompt_total, completion, cached)}))


def _plan(meta: dict[str, Any], results: list[tuple[str, Output]], *, prompt: int, cached: int,
          sampling: Sampling, top: int | None, stop_reason: bool = False) -> StreamPlan:
    """Frames: echoed prompts (with the first token), one frame per piece per choice, a finish
    frame per choice (with vLLM's ``stop_reason`` when ``stop_reason``), the usage frame if
    asked, ``[DONE]``."""
    base = {**meta, "usage": None} if sampling.include_usage else meta

    def frame(index: int, text: str, finish: str | None = None, lp: Any = None,
              stopped: Output | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": lp, "finish_reason": finish}
        if stopped is not None:
            choice["stop_reason"] = named_stop(stopped)
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    head = [frame(index, prefix) for index, (prefix, _) in enumerate(results) if prefix]
    tokens: list[bytes] = []
    for position in range(max(output.tokens for _, output in results)):
        for index, (_, output) in enumerate(results):
            if position < output.tokens:
                piece = output.pieces[position]
                lp = None if top is None else content.completion_logprobs([piece], top)
                tokens.append(frame(index, piece, lp=lp))
    tail = [frame(index, "", "length" if output.finish == "length" else "stop",
                  stopped=output if stop_reason else None)
            for index, (_, output) in enumerate(results)]
    finishes = len(tail)
    if sampling.include_usage:
        completion = sum(output.tokens for _, output in results)
        tail.append(b"data: " + orjson.dumps(
            {**base, "choices": [], "usage": usage(prompt, completion, cached)}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    finish = "length" if any(output.finish == "length" for _, output in results) else "stop"
    return StreamPlan(tokens=tokens, tail=tail, prompt_tokens=prompt, finish=finish, head=head,
                      closing=tail[finishes:])
