"""``POST /v1/embeddings`` (and Azure's deployment route): deterministic unit vectors.

Each input's vector comes from SHAKE-256 of its text (token-id inputs hash their decimal ids), so
equal inputs always embed equally and different ones are nearly orthogonal. ``dimensions`` sets
the length (default: the model's own, ``MODEL_DIMENSIONS``, else
``SimOptions.embedding_dimensions``; on vLLM's route a model without Matryoshka training
(``NO_MATRYOSHKA``) refuses ``dimensions`` with vLLM's 400; ``text-embedding-ada-002`` refuses
``dimensions`` with
OpenAI's 400, as it has a fixed size); ``encoding_format: "base64"`` sends
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
    if dimensions is not None and model in FIXED_DIMENSIONS:
        raise SimError(400, "This model does not support specifying dimensions.")
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
            key, tokens = item, tokens + estimate_tokens(item)
        else:
            key, tokens = "ids:" + ",".join(map(str, item)), tokens + len(item)
        data.append({"object": "embedding", "index": index,
                     "embedding": encode(vector(key, dimensions), encoding)})
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps(
            {"object": "list", "data": data, "model": knobs.model or model,
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
