"""OpenAI embeddings request -> Cohere Embed API v2 (``POST /v2/embed``) batches, and back.

Pure functions, no I/O; ``app.providers.cohere`` sends the batches. Cohere embeds at most 96
texts per call (``MAX_TEXTS``), so a larger input is split into batches in order and their
vectors are rejoined in the same order, their usage summed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from app import errors
from app.providers.base import EmbeddingCall, Json, Target, text_inputs
from app.providers.cohere_response import read_usage
from app.usage import Usage

MAX_TEXTS = 96
"""Cohere's per-call limit on ``texts`` (the API reference's ``maxItems``)."""

InputType = Literal["search_document", "search_query", "classification", "clustering"]
INPUT_TYPES: tuple[str, ...] = ("search_document", "search_query", "classification",
                                "clustering")
"""The ``input_type`` values for text (``image`` is for image inputs, which OpenAI's
embeddings API does not carry)."""

TRUNCATE = ("NONE", "START", "END")

_FIXED_SIZE = re.compile(r"embed-(?:english|multilingual)(?:-light)?-v[1-3]\b")
"""Cohere's Embed v3 (and older) model names: their vectors have one size, and
``output_dimension`` is "only available for embed-v4 and newer models" (Cohere's reference)."""


OUTPUT_DIMENSIONS = (256, 512, 1024, 1536)
"""The ``output_dimension`` values Cohere takes ("Possible values are 256, 512, 1024, and
1536", its reference)."""


def output_dimension_problem(dimensions: Any) -> str | None:
    """Why Cohere would refuse ``output_dimension`` ``dimensions`` (None: it takes it)."""
    if isinstance(dimensions, bool) or dimensions not in OUTPUT_DIMENSIONS:
        return f"must be one of {', '.join(map(str, OUTPUT_DIMENSIONS))} for Cohere"
    return None


def takes_output_dimension(model: str) -> bool:
    """Whether Cohere's ``model`` takes ``output_dimension`` (embed-v4.0 and newer; any model
    not named as a v1-v3 one, so that newer and fine-tuned models are not refused here)."""
    return _FIXED_SIZE.search(model) is None


def texts_of(call: EmbeddingCall) -> list[str]:
    """The inputs as texts (token-id inputs are a 400)."""
    return text_inputs(call, refusal="Cohere embeds text only; token-id inputs are not supported")


def _choose(call: EmbeddingCall, target: Target, key: str, default: Any) -> Any:
    """A Cohere embed option: the client's extension field, else the target's params, else
    ``default``."""
    if call.body.get(key) is not None:
        return call.body[key]
    return target.params.get(key, default)


def batch_payloads(call: EmbeddingCall, *, target: Target, input_type: str) -> list[Json]:
    """The ``POST /v2/embed`` payloads for ``call``, one per batch of at most ``MAX_TEXTS``.

    ``input_type``: the client's ``input_type`` (a request extension field), else the target's
    ``params``, else ``input_type`` (the provider's default). ``embedding_types`` is always
    ``["float"]``: OpenAI's base64 encoding is made here from the floats. ``dimensions``
    becomes ``output_dimension`` (a 400 naming ``dimensions`` for a v3 or older model, which
    does not take it: ``takes_output_dimension``, and for a size Cohere does not make:
    ``OUTPUT_DIMENSIONS``); a ``truncate`` from the client or the
    target is carried.
    """
    texts = texts_of(call)
    chosen = _choose(call, target, "input_type", input_type)
    if chosen not in INPUT_TYPES:
        raise errors.InvalidRequest(
            f"input_type must be one of {', '.join(INPUT_TYPES)}", param="input_type")
    base: Json = {"model": target.model, "input_type": chosen, "embedding_types": ["float"]}
    truncate = _choose(call, target, "truncate", None)
    if truncate is not None:
        if truncate not in TRUNCATE:
            raise errors.InvalidRequest(f"truncate must be one of {', '.join(TRUNCATE)}",
                                        param="truncate")
        base["truncate"] = truncate
    dimensions = call.request.dimensions or target.params.get("output_dimension")
    if dimensions is not None:
        if not takes_output_dimension(target.model):
            # A refusal before sending: another target of the model may serve it.
            raise errors.InvalidRequest(
                f"Cohere's {target.model} makes vectors of one size; dimensions can be chosen "
                "only for embed-v4.0 and newer", param="dimensions")
        problem = output_dimension_problem(dimensions)
        if problem is not None:
            raise errors.InvalidRequest(f"dimensions {problem}", param="dimensions")
        base["output_dimension"] = dimensions
    return [{**base, "texts": texts[start:start + MAX_TEXTS]}
            for start in range(0, len(texts), MAX_TEXTS)]


def read_batch(answer: Json, *, expected: int) -> tuple[list[list[float]], Usage | None]:
    """The float vectors and usage of one ``/v2/embed`` answer of ``expected`` texts."""
    embeddings = answer.get("embeddings")
    vectors = embeddings.get("float") if isinstance(embeddings, dict) else None
    if not isinstance(vectors, list) or len(vectors) != expected \
            or not all(isinstance(v, list) for v in vectors):
        raise errors.BadUpstreamResponse(
            f"upstream embed answer lacks {expected} float embeddings")
    return vectors, read_usage(answer.get("meta"))
