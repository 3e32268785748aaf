"""``POST /v1/embeddings`` (and Azure's deployment route): deterministic unit vectors.

Each input's vector comes from SHAKE-256 of its text (token-id inputs hash their decimal ids), so
equal inputs always embed equally and different ones are nearly orthogonal. ``dimensions`` sets
the length (default: the model's own, ``MODEL_DIMENSIONS``, else
``SimOptions.embedding_dimensions``; on vLLM's route a model without Matryoshka training
(``NO_MATRYOSHKA``) refuses ``dimensions`` with vLLM's 400; ``text-embedding-ada-002`` refuses
``dimensions`` with
OpenAI's 400, as it has a fixed size); OpenAI's own models (``OPENAI_MODELS``) also take OpenAI's
limits: ``dimensions`` up to the model's own size, at most ``OPENAI_INPUT_TOKENS`` tokens an
input and ``OPENAI_REQUEST_TOKENS`` in all, each refused with OpenAI's 400 in OpenAI's shape
(``invalid_request_error``, ``code`` null but ``max_tokens_per_request``), on the ``/v1`` route
too (whose other errors are vLLM's); ``encoding_format: "base64"`` sends
little-endian float32 bytes, as OpenAI does. Usage counts ``estimate_tokens`` per text input and
the id count per token-id input.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from functools import lru_cache
from typing import Any

import orjson

from app.simulator.asgi import Request, SimError, send_json
from app.simulator.core import Route, Sim, delay, faulted
from app.simulator.faults import read_knobs
from app.simulator.params import read_int
from app.usage import estimate_tokens

MAX_DIMENSIONS = 8192
MODEL_DIMENSIONS: dict[str, int] = {
    # OpenAI (and Azure OpenAI's deployments of them)
    "text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    # Cohere (v2 /embed)
    "embed-v4.0": 1536, "embed-english-v3.0": 1024, "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384, "embed-multilingual-light-v3.0": 384,
    # Google (Gemini API and Vertex AI)
    "gemini-embedding-001": 3072, "text-embedding-004": 768, "text-embedding-005": 768,
    "text-multilingual-embedding-002": 768, "embedding-001": 768,
    # Amazon Bedrock
    "amazon.titan-embed-text-v2:0": 1024, "amazon.titan-embed-text-v1": 1536,
    "cohere.embed-english-v3": 1024, "cohere.embed-multilingual-v3": 1024,
    "cohere.embed-v4:0": 1536,
}
"""Each known embedding model's vector length when a request does not set one, as its provider
documents it; any other model gets ``SimOptions.embedding_dimensions``."""
OPENAI_MODELS = frozenset({"text-embedding-3-small", "text-embedding-3-large",
                           "text-embedding-ada-002"})
"""OpenAI's embedding models, which answer OpenAI's limits and error shape."""
OPENAI_INPUT_TOKENS = 8192
"""The tokens OpenAI's embedding models read from one input (more is a 400)."""
OPENAI_REQUEST_TOKENS = 300_000
"""The tokens one OpenAI embeddings request may hold, its inputs summed."""
FIXED_DIMENSIONS = frozenset({"text-embedding-ada-002"})
"""OpenAI models that take no ``dimensions``."""
NO_MATRYOSHKA = ("BAAI/bge-",)
"""Model-name prefixes of open models without Matryoshka training, whose ``dimensions`` vLLM
refuses (its docs' example is ``BAAI/bge-m3``): vLLM's route answers them a 400."""


def dimensions_of(model: str, fallback: int) -> int:
    """The default vector length of ``model`` (``MODEL_DIMENSIONS``, else ``fallback``)."""
    return MODEL_DIMENSIONS.get(model, fallback)


def vector(text: str, dimensions: int) -> tuple[float, ...]:
    """The unit vector of ``text``: SHAKE-256 bytes read as uint16, centred, normalized
    (memoized for short texts)."""
    return _cached_vector(text, dimensions) if len(text) <= 4096 else _vector(text, dimensions)


@lru_cache(maxsize=4096)
def _cached_vector(text: str, dimensions: int) -> tuple[float, ...]:
    return _vector(text, dimensions)


def _vector(text: str, dimensions: int) -> tuple[float, ...]:
    raw = struct.unpack(f"<{dimensions}H", hashlib.shake_256(text.encode()).digest(2 * dimensions))
    centred = [value - 32767.5 for value in raw]
    norm = math.sqrt(sum(value * value for value in centred)) or 1.0
    return tuple(value / norm for value in centred)


def read_inputs(value: Any) -> list[str | list[int]]:
    """The inputs: a string, a list of strings, a list of token ids or a list of such lists."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [value]
        if all(isinstance(item, str) and item for item in value):
            return list(value)
        if all(isinstance(item, list) and item and all(isinstance(i, int) for i in item)
               for item in value):
            return list(value)
    raise SimError(400, "input must be a non-empty string, a list of non-empty strings, a list "
                   "of token ids or a list of token-id lists.", param="input")


def encode(vec: tuple[float, ...], encoding: str) -> list[float] | str:
    """The ``embedding`` field: floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    return list(vec)


async def embeddings(sim: Sim, req: Request, route: Route) -> None:
    """Validate, wait the time to first token, answer."""
    body = req.json_object()
    knobs = read_knobs(req)
    if await faulted(sim, req, knobs):
        return
    model = sim.model(body.get("model"), route=route)
    inputs = read_inputs(body.get("input"))
    dimensions = read_int(body, "dimensions", minimum=1)
    openai = model in OPENAI_MODELS
    if dimensions is not None and model in FIXED_DIMENSIONS:
        await _openai_refusal(req, "This model does not support specifying dimensions.")
        return
    if openai and dimensions is not None and dimensions > MODEL_DIMENSIONS[model]:
        await _openai_refusal(req, f"This model does not support specifying dimensions larger "
                                   f"than {MODEL_DIMENSIONS[model]}.", param="dimensions")
        return
    if dimensions is not None and route.dialect == "vllm" and model.startswith(NO_MATRYOSHKA):
        raise SimError(400, f'Model "{model}" does not support matryoshka representation, '
                       "changing output dimensions will lead to poor results.")
    dimensions = dimensions or dimensions_of(model, sim.options.embedding_dimensions)
    if dimensions > MAX_DIMENSIONS:
        raise SimError(400, f"dimensions must be at most {MAX_DIMENSIONS}.", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise SimError(400, "encoding_format must be 'float' or 'base64'.",
                       param="encoding_format")
    data: list[dict[str, Any]] = []
    tokens = 0
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            key, count = item, estimate_tokens(item)
        else:
            key, count = "ids:" + ",".join(map(str, item)), len(item)
        if openai and count > OPENAI_INPUT_TOKENS:
            await _openai_refusal(
                req, f"This model's maximum context length is {OPENAI_INPUT_TOKENS} tokens, "
                f"however you requested {count} tokens ({count} in your prompt; 0 for the "
                "completion). Please reduce your prompt; or completion length.")
            return
        tokens += count
        data.append({"object": "embedding", "index": index,
                     "embedding": encode(vector(key, dimensions), encoding)})
    if openai and tokens > OPENAI_REQUEST_TOKENS:
        await _openai_refusal(req, f"Requested {tokens} tokens, max {OPENAI_REQUEST_TOKENS} "
                                   "tokens per request", code="max_tokens_per_request")
        return
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps(
            {"object": "list", "data": data, "model": knobs.model or model,
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))


async def _openai_refusal(req: Request, message: str, *, param: str | None = None,
                          code: str | None = None) -> None:
    """OpenAI's 400 in OpenAI's shape, whichever dialect the route's other errors use."""
    await send_json(req.send, 400, orjson.dumps({"error": {
        "message": message, "type": "invalid_request_error", "param": param, "code": code}}))
