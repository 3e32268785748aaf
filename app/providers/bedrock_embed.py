"""OpenAI embeddings -> Bedrock InvokeModel bodies for Amazon Titan Text Embeddings v2 and Cohere
Embed, and back. Pure; ``app.providers.bedrock`` sends the calls.

- Titan (model ids containing ``titan-embed-text``) embeds one text per call:
  ``{"inputText", "dimensions", "normalize"}`` -> ``{"embedding", "inputTextTokenCount"}``.
  Several inputs are sent as concurrent calls and rejoined in order, token counts summed.
  ``dimensions`` must be 256, 512 or 1024 (Titan's values); ``normalize`` is true unless the
  client's or target's ``normalize`` says otherwise. Titan v1 (``titan-embed-text-v1``) takes
  ``{"inputText"}`` alone: ``dimensions`` and ``normalize: true`` are refused for it.
- Cohere Embed (model ids containing ``cohere.embed``) takes ``{"texts", "input_type"}``, at
  most 96 texts a call (batches rejoined in order) -> ``{"embeddings": [[...]], ...}``; its
  answer body has no token count, Bedrock gives it in the ``X-Amzn-Bedrock-Input-Token-Count``
  header. ``input_type``: the client's field, else the target's params, else
  ``search_document``. ``dimensions`` becomes ``output_dimension`` for Cohere Embed v4 (model
  ids containing ``cohere.embed-v4``), which takes 256, 512, 1024 or 1536 (AWS's values; any
  other is a 400); for the others (v3, whose size is fixed) it is refused.
- Other embedding models (or an inference profile whose id names neither family) are refused
  with a 400 unless the target's params say ``embedding_format: titan`` or ``cohere``.
Token-id inputs are refused: both families embed text.
"""

from __future__ import annotations

from typing import Any, Literal

from app import errors
from app.providers.base import EmbeddingCall, Json, Target, text_inputs
from app.usage import Usage, estimate_tokens

COHERE_MAX_TEXTS = 96
TITAN_DIMENSIONS = (256, 512, 1024)
COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
Family = Literal["titan", "cohere"]
TARGET_ONLY = ("embedding_format",)
"""Target params that steer the translation and are not sent."""


def family(target: Target) -> Family:
    """Which body ``target``'s model takes."""
    chosen = target.params.get("embedding_format")
    if chosen in ("titan", "cohere"):
        return "titan" if chosen == "titan" else "cohere"
    model = target.model.lower()
    if "titan-embed-text" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    raise errors.InvalidRequest(
        f"Bedrock model {target.model!r} is neither Titan Text Embeddings nor Cohere Embed; "
        "set the target's params.embedding_format to 'titan' or 'cohere'", param="model")


def texts_of(call: EmbeddingCall) -> list[str]:
    """The inputs as texts (token-id inputs are a 400)."""
    return text_inputs(call, refusal="Bedrock embedding models embed text only; token-id "
                                     "inputs are not supported")


def _params(target: Target) -> Json:
    return {k: v for k, v in target.params.items() if k not in TARGET_ONLY}


def is_titan_v1(target: Target) -> bool:
    """Whether the target is Titan Embeddings G1 - Text (``amazon.titan-embed-text-v1``)."""
    return "titan-embed-text-v1" in target.model.lower()


def titan_bodies(call: EmbeddingCall, *, target: Target) -> list[Json]:
    """One InvokeModel body per text."""
    base = _params(target)
    if is_titan_v1(target):
        return _titan_v1_bodies(call, base)
    dimensions = call.request.dimensions or base.get("dimensions")
    if dimensions is not None and dimensions not in TITAN_DIMENSIONS:
        raise errors.InvalidRequest("Titan Text Embeddings v2 takes dimensions 256, 512 or "
                                    "1024", param="dimensions")
    normalize = call.body.get("normalize", base.get("normalize", True))
    if not isinstance(normalize, bool):
        raise errors.InvalidRequest("normalize must be a boolean", param="normalize")
    extra: Json = {"normalize": normalize}
    if dimensions is not None:
        extra["dimensions"] = dimensions
    return [{**base, **extra, "inputText": text} for text in texts_of(call)]


def _titan_v1_bodies(call: EmbeddingCall, base: Json) -> list[Json]:
    """Titan v1 takes ``inputText`` alone (AWS refuses any other key): its size is fixed (a
    ``dimensions`` is a 400) and it does not normalize (a ``normalize: true`` is a 400; false
    is what it does, so it is not sent)."""
    if call.request.dimensions is not None or base.get("dimensions") is not None:
        raise errors.InvalidRequest("Titan Text Embeddings v1 has a fixed size; dimensions can "
                                    "be chosen only for v2", param="dimensions")
    if call.body.get("normalize", base.get("normalize")) is True:
        raise errors.InvalidRequest("Titan Text Embeddings v1 does not normalize; normalize "
                                    "can be chosen only for v2", param="normalize")
    rest = {k: v for k, v in base.items() if k not in ("dimensions", "normalize")}
    return [{**rest, "inputText": text} for text in texts_of(call)]


def read_titan(answer: Any) -> tuple[list[float], int]:
    vector = answer.get("embedding") if isinstance(answer, dict) else None
    tokens = answer.get("inputTextTokenCount") if isinstance(answer, dict) else None
    if not isinstance(vector, list):
        raise errors.BadUpstreamResponse("Titan embedding answer has no embedding")
    return vector, tokens if isinstance(tokens, int) else 0


def titan_usage(body: Json, answer: tuple[Any, Any]) -> Usage:
    """The tokens one answered Titan call was billed (``fanout.in_order``'s ``usage``): its
    ``inputTextTokenCount``, else the text's estimate."""
    tokens = answer[0].get("inputTextTokenCount") if isinstance(answer[0], dict) else None
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
        return Usage(prompt_tokens=tokens)
    return Usage(prompt_tokens=estimate_tokens(str(body.get("inputText", ""))), estimated=True)


def cohere_usage(body: Json, answer: tuple[Any, Any]) -> Usage:
    """The tokens one answered Cohere Embed call was billed: Bedrock's
    ``X-Amzn-Bedrock-Input-Token-Count`` header, else the texts' estimate."""
    count = answer[1].get("X-Amzn-Bedrock-Input-Token-Count") if answer[1] is not None else None
    if isinstance(count, str) and count.isdigit():
        return Usage(prompt_tokens=int(count))
    texts = body.get("texts")
    return Usage(prompt_tokens=sum(estimate_tokens(str(t)) for t in texts)
                 if isinstance(texts, list) else 0, estimated=True)


def cohere_bodies(call: EmbeddingCall, *, target: Target) -> list[Json]:
    """One InvokeModel body per batch of at most 96 texts."""
    base = _params(target)
    dimensions = call.request.dimensions
    if dimensions is not None:
        if "cohere.embed-v4" not in target.model.lower():
            raise errors.InvalidRequest(
                "Cohere Embed v3 on Bedrock has a fixed size; dimensions can be chosen only "
                "for Cohere Embed v4 (model ids cohere.embed-v4*)", param="dimensions")
        if dimensions not in COHERE_V4_DIMENSIONS:
            raise errors.InvalidRequest("Cohere Embed v4 on Bedrock takes dimensions 256, 512, "
                                        "1024 or 1536", param="dimensions")
        base["output_dimension"] = dimensions
    input_type = call.body.get("input_type") or base.get("input_type", "search_document")
    if input_type not in COHERE_INPUT_TYPES:
        raise errors.InvalidRequest(f"input_type must be one of {', '.join(COHERE_INPUT_TYPES)}",
                                    param="input_type")
    texts = texts_of(call)
    return [{**base, "input_type": input_type, "texts": texts[i:i + COHERE_MAX_TEXTS]}
            for i in range(0, len(texts), COHERE_MAX_TEXTS)]


def read_cohere(answer: Any, *, expected: int) -> list[list[float]]:
    found = answer.get("embeddings") if isinstance(answer, dict) else None
    if isinstance(found, dict):  # asked with embedding_types: {"float": [...]}
        found = found.get("float")
    if not isinstance(found, list) or len(found) != expected \
            or not all(isinstance(v, list) for v in found):
        raise errors.BadUpstreamResponse(f"Cohere embed answer lacks {expected} embeddings")
    return found
