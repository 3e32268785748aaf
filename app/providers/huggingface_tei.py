"""Embeddings from Text Embeddings Inference (TEI), through its native ``POST /embed``.

``/embed`` takes ``inputs`` (a text or a list) and TEI's options ``normalize`` (default true),
``truncate``, ``truncation_direction`` (``left``/``right``), ``prompt_name`` (a key of the model's
sentence-transformers prompts, e.g. ``query``) and ``dimensions``; it answers a bare JSON array of
float vectors, in input order. What the gateway does around it:

- **Options**: the provider's settings, under the target's ``params``, under the client's own
  fields of the same names (the SDK's ``extra_body``, e.g. ``{"prompt_name": "query"}``), each
  checked (400 naming the field). OpenAI's ``dimensions`` is sent as TEI's ``dimensions``; a
  server that ignores it (TEI before it had the field) answers longer vectors, which is a 502
  rather than a silently wrong answer.
- **Inputs**: text only. Token-id inputs are refused (400): they are ids of the client's
  tokenizer, which mean nothing to the served model.
- **Batching**: TEI refuses a batch larger than its ``--max-client-batch-size`` (413; 32 by
  default). Inputs are sent in batches of the provider's ``max_client_batch_size``, concurrently,
  and joined in input order; one failed batch fails the call and cancels the others
  (``fanout.in_order``).
- **Encoding**: ``encoding_format: base64`` is done by the gateway, as OpenAI does it
  (little-endian float32).
- **Usage**: TEI reports no token counts in the body (only an ``x-compute-tokens`` header, which
  the shared HTTP client does not hand back), so ``prompt_tokens`` is ``estimate_tokens`` of the
  inputs and the usage is marked estimated.
"""

from __future__ import annotations

from typing import Any

from app import errors
from app.embeddings import encode_vector
from app.providers.base import EmbeddingCall, Json, Result, Target, embeddings_result, text_inputs
from app.providers.fanout import billed, in_order
from app.providers.http import Upstream
from app.usage import Usage, estimate_tokens

EMBED_PATH = "/embed"
OPTIONS = ("normalize", "truncate", "truncation_direction", "prompt_name")
DIRECTIONS = frozenset({"left", "right", "Left", "Right"})


def check_option(name: str, value: Any, *, param: str) -> None:
    """Raise ``InvalidRequest`` (naming ``param``) for a TEI option of the wrong type."""
    if name in ("normalize", "truncate"):
        ok = isinstance(value, bool)
    elif name == "truncation_direction":
        ok = value in DIRECTIONS
    else:
        ok = isinstance(value, str) and bool(value)
    if not ok:
        expected = {"normalize": "a boolean", "truncate": "a boolean",
                    "truncation_direction": "'left' or 'right'",
                    "prompt_name": "a non-empty string"}[name]
        raise errors.InvalidRequest(f"{name} must be {expected}", param=param)


def embed_options(defaults: Json, target: Target, body: Json) -> Json:
    """TEI's options for one call: provider defaults < target params < client fields."""
    options = dict(defaults)
    for name in OPTIONS:
        if name in target.params:
            options[name] = target.params[name]
        if body.get(name) is not None:
            check_option(name, body[name], param=name)
            options[name] = body[name]
    return options


def texts_of(call: EmbeddingCall) -> list[str]:
    """The inputs as texts (token-id inputs are a 400)."""
    return text_inputs(call, refusal="token-id inputs cannot be embedded by TEI (they are ids "
                                     "of another tokenizer); send text")


def read_vectors(answer: Any, count: int) -> list[list[float]]:
    """The vectors of one ``/embed`` answer, checked to be ``count`` lists of numbers."""
    if not isinstance(answer, list) or len(answer) != count or not all(
            isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)
            for v in answer):
        raise errors.BadUpstreamResponse(
            f"upstream /embed answer is not a list of {count} embedding vectors")
    return answer


class TeiEmbeddings:
    """One TEI server's ``/embed``; see the module docstring."""

    def __init__(self, upstream: Upstream, *, defaults: Json, batch_size: int) -> None:
        self._upstream = upstream
        self._defaults = defaults
        self._batch_size = batch_size

    async def _batch(self, texts: list[str], options: Json, target: Target
                     ) -> list[list[float]]:
        answer = await self._upstream.post(EMBED_PATH, {"inputs": texts, **options},
                                           timeout_s=target.timeout_s)
        return read_vectors(answer, len(texts))

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        texts = texts_of(call)
        options = embed_options(self._defaults, target, call.body)
        dimensions = call.request.dimensions
        if dimensions is not None:
            options["dimensions"] = dimensions
        size = self._batch_size
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        try:
            answers = await in_order(lambda batch: self._batch(batch, options, target),
                                     batches, usage=_estimated)
        except errors.UpstreamRejected as exc:
            # TEI's 422 for a size the model cannot make ("`dimensions` should be smaller than
            # the maximum embedding dimension.") names no param: it is the client's dimensions.
            if dimensions is not None and exc.param is None and "`dimensions`" in exc.message:
                exc.param = "dimensions"
            raise
        vectors = [v for batch in answers for v in batch]
        if dimensions is not None and any(len(v) != dimensions for v in vectors):
            ignored = errors.BadUpstreamResponse(
                f"upstream TEI ignored dimensions={dimensions} (it answered vectors of "
                f"{len(vectors[0])}); it may predate TEI's dimensions option")
            billed(ignored, _estimated(texts, None))  # every batch was answered
            raise ignored
        encoded = [encode_vector(v, call.request.encoding_format) for v in vectors]
        return embeddings_result(encoded, model=target.model,
                                 tokens=sum(estimate_tokens(t) for t in texts), estimated=True)


def _estimated(texts: list[str], _answer: object) -> Usage:
    """The estimated tokens of a batch TEI answered (``fanout.in_order``'s ``usage``)."""
    return Usage(prompt_tokens=sum(estimate_tokens(t) for t in texts), estimated=True)
