"""Reading and validating OpenAI/vLLM sampling parameters, the way vLLM's server does.

Validation failures are 400s (vLLM turns its request-validation errors into 400, never 422).
Unknown fields (``top_k``, ``min_p``, ``repetition_penalty``...) are ignored, as vLLM ignores
them. Structured output follows the vLLM version being played: ``guided_*`` fields before 0.12,
``structured_outputs`` from 0.12, each silently ignored by the other; ``response_format`` always.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.simulator.asgi import SimError
from app.simulator.options import Dialect
from app.simulator.schema import grammar_sample, instance, regex_sample


@dataclass(frozen=True, slots=True)
class Sampling:
    """The generation controls of one OpenAI-style request."""

    n: int
    limit: int | None
    stops: tuple[str, ...]
    stream: bool
    include_usage: bool
    offset: int


def read_int(body: dict[str, Any], key: str, *, minimum: int) -> int | None:
    """``body[key]`` as an int >= ``minimum``; None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimError(400, f"{key} must be an integer, got {value!r}.", param=key)
    if value < minimum:
        raise SimError(400, f"{key} must be at least {minimum}, got {value}.", param=key)
    return value


def read_stops(value: Any, key: str) -> tuple[str, ...]:
    """A stop parameter (a string or a list of strings) as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise SimError(400, f"{key} must be a string or a list of strings.", param=key)


GREEDY_BELOW = 1e-5
"""vLLM's ``_SAMPLING_EPS``: a temperature below it samples greedily."""


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def check_vllm_sampling(body: dict[str, Any]) -> None:
    """What vLLM's ``SamplingParams._verify_args`` refuses though OpenAI's API takes it (400,
    vLLM's messages): ``top_p`` outside (0, 1] (0 too, checked before a greedy temperature
    resets it), an empty stop string, and ``n`` > 1 with a greedy temperature."""
    top_p = _number(body, "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise SimError(400, f"top_p must be in (0, 1], got {top_p}.", param="top_p")
    stop = body.get("stop")
    if stop == "" or (isinstance(stop, list) and "" in stop):
        raise SimError(400, "stop cannot contain an empty string.")
    temperature, n = _number(body, "temperature"), body.get("n")
    if temperature is not None and temperature < GREEDY_BELOW and isinstance(n, int) \
            and not isinstance(n, bool) and n > 1:
        raise SimError(400, f"n must be 1 when using greedy sampling, got {n}.")


def read_sampling(body: dict[str, Any], *, echo_only: bool = False,
                  vllm: bool = False) -> Sampling:
    """``n``, the token limit (``max_completion_tokens`` over ``max_tokens``), ``stop``,
    ``stream``/``stream_options`` and ``seed``. ``best_of`` is refused, as current vLLM does.
    ``echo_only``: ``max_tokens`` may be 0 (vLLM's completions with ``echo``: the prompt,
    nothing generated); elsewhere 0 is vLLM's 400. ``vllm``: vLLM's own sampling checks too
    (``check_vllm_sampling``), for the routes that play vLLM."""
    if vllm:
        check_vllm_sampling(body)
    if body.get("best_of") is not None:
        raise SimError(400, "best_of is not supported by this server; use n instead.",
                       param="best_of")
    limit = read_int(body, "max_completion_tokens", minimum=1)
    if limit is None:
        limit = read_int(body, "max_tokens", minimum=0 if echo_only else 1)
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise SimError(400, "stream_options must be an object.", param="stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SimError(400, "seed must be an integer.", param="seed")
    return Sampling(n=read_int(body, "n", minimum=1) or 1, limit=limit,
                    stops=read_stops(body.get("stop"), "stop"), stream=stream,
                    include_usage=stream and bool(options and options.get("include_usage")),
                    offset=seed or 0)


def check_context(prompt: int, limit: int | None, *, max_model_len: int) -> None:
    """vLLM's 400 when the prompt plus the completion budget exceeds the context length."""
    requested = prompt + (limit or 0)
    if requested > max_model_len:
        raise SimError(400, f"This model's maximum context length is {max_model_len} tokens. "
                       f"However, you requested {requested} tokens ({prompt} in the messages, "
                       f"{limit or 0} in the completion). Please reduce the length of the "
                       "messages or completion.")


def json_reply(topic: str) -> str:
    """The answer in JSON-object mode: ``{"reply": "Simulated reply to: <topic>"}``."""
    return orjson.dumps({"reply": f"Simulated reply to: {topic}" if topic
                         else "Simulated reply."}).decode()


def structured_text(body: dict[str, Any], dialect: Dialect, *, topic: str = "") -> str | None:
    """The constrained output a request asks for (None when unconstrained); ``topic`` is what a
    JSON-object answer's ``reply`` echoes."""
    if dialect.structured_outputs:
        spec = body.get("structured_outputs")
        if isinstance(spec, dict):
            found = _constrained({key: spec.get(key) for key in
                                  ("json", "regex", "choice", "grammar")})
            if found is not None:
                return found
            if spec.get("json_object"):
                return json_reply(topic)
    else:
        found = _constrained({key: body.get(f"guided_{key}") for key in
                              ("json", "regex", "choice", "grammar")})
        if found is not None:
            return found
    return _response_format(body.get("response_format"), topic)


def _constrained(spec: dict[str, Any]) -> str | None:
    schema = spec.get("json")
    if schema is not None:
        if isinstance(schema, str):
            try:
                schema = orjson.loads(schema)
            except orjson.JSONDecodeError:
                raise SimError(400, "The JSON schema is not valid JSON.") from None
        return orjson.dumps(instance(schema)).decode()
    if isinstance(spec.get("regex"), str):
        try:
            return regex_sample(spec["regex"])
        except (re.error, ValueError, RecursionError) as exc:
            raise SimError(400, f"Invalid regular expression: {exc}") from None
    choices = spec.get("choice")
    if isinstance(choices, list) and choices:
        return str(choices[0])
    if isinstance(spec.get("grammar"), str):
        return grammar_sample(spec["grammar"])
    return None


def _response_format(value: Any, topic: str) -> str | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind == "json_object":
        return json_reply(topic)
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(instance(schema if isinstance(schema, dict) else {})).decode()
    if kind not in (None, "text"):
        raise SimError(400, f"response_format type {kind!r} is not supported.",
                       param="response_format")
    return None
