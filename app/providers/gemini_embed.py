"""OpenAI embeddings request -> Gemini API ``batchEmbedContents`` and Vertex AI ``predict``
bodies, and back.

Pure functions, no I/O. The vectors come back as floats; OpenAI's ``encoding_format: base64``
(little-endian float32) is made here. The task type is the client's ``task_type`` (a request
extension field), else the target's ``params.taskType``, else the provider's ``task_type``;
``dimensions`` becomes ``outputDimensionality``.
"""

from __future__ import annotations

from typing import Any

from app import errors
from app.providers.base import EmbeddingCall, Json, Target, text_inputs
from app.usage import Usage, estimate_tokens, token_count

TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
              "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
"""The ``TaskType`` values of Google's embedding reference (``TASK_TYPE_UNSPECIFIED`` aside)."""

GEMINI_BATCH = 100
"""Requests per ``batchEmbedContents`` call (the API refuses larger batches)."""


def texts_of(call: EmbeddingCall) -> list[str]:
    """The inputs as texts (token-id inputs are a 400)."""
    return text_inputs(call, refusal="Google's embedding models embed text only; token-id "
                                     "inputs are not supported")


def task_type(call: EmbeddingCall, *, target: Target, default: str | None) -> str | None:
    chosen = call.body.get("task_type")
    if chosen is None:
        chosen = target.params.get("taskType", default)
    if chosen is not None and chosen not in TASK_TYPES:
        raise errors.InvalidRequest(f"task_type must be one of {', '.join(TASK_TYPES)}",
                                    param="task_type")
    return chosen if isinstance(chosen, str) else None


def _dimensions(call: EmbeddingCall, target: Target) -> Any:
    return call.request.dimensions or target.params.get("outputDimensionality")


def batch_embed_payloads(call: EmbeddingCall, *, target: Target, model_name: str,
                         default_task: str | None) -> list[Json]:
    """The ``batchEmbedContents`` bodies for ``call``, in order, ``GEMINI_BATCH`` texts each
    (``model_name``: ``models/{model}``, which each request must repeat)."""
    base: Json = {"model": model_name}
    chosen = task_type(call, target=target, default=default_task)
    if chosen is not None:
        base["taskType"] = chosen
    dimensions = _dimensions(call, target)
    if dimensions is not None:
        base["outputDimensionality"] = dimensions
    requests = [{**base, "content": {"parts": [{"text": text}]}} for text in texts_of(call)]
    return [{"requests": requests[start:start + GEMINI_BATCH]}
            for start in range(0, len(requests), GEMINI_BATCH)]


def read_batch_embed(answer: Json, *, expected: int) -> list[list[float]]:
    """The float vectors of one ``batchEmbedContents`` answer of ``expected`` texts."""
    embeddings = answer.get("embeddings")
    vectors = [e.get("values") for e in embeddings if isinstance(e, dict)] \
        if isinstance(embeddings, list) else []
    if len(vectors) != expected or not all(isinstance(v, list) for v in vectors):
        raise errors.BadUpstreamResponse(f"upstream embed answer lacks {expected} embeddings")
    return vectors  # type: ignore[return-value]  # checked: each is a list of numbers


def _batches(texts: list[str], *, batch: int, token_budget: int | None) -> list[list[str]]:
    """``texts`` cut into runs of at most ``batch`` texts whose estimated tokens add up to at
    most ``token_budget`` (a text over the budget alone goes in a run of its own)."""
    runs: list[list[str]] = []
    tokens = 0
    for text in texts:
        cost = estimate_tokens(text) if token_budget is not None else 0
        if not runs or len(runs[-1]) >= batch or (
                token_budget is not None and tokens + cost > token_budget):
            runs.append([])
            tokens = 0
        runs[-1].append(text)
        tokens += cost
    return runs


def predict_payloads(call: EmbeddingCall, *, target: Target, default_task: str | None,
                     batch: int, token_budget: int | None = None) -> list[Json]:
    """The Vertex ``predict`` bodies for ``call``: at most ``batch`` instances each, and, with
    a ``token_budget``, at most that many estimated tokens each."""
    chosen = task_type(call, target=target, default=default_task)
    parameters: Json = {}
    dimensions = _dimensions(call, target)
    if dimensions is not None:
        parameters["outputDimensionality"] = dimensions
    out = []
    for run in _batches(texts_of(call), batch=batch, token_budget=token_budget):
        instances: list[Json] = [{"content": text, **({"task_type": chosen} if chosen else {})}
                                 for text in run]
        body: Json = {"instances": instances}
        if parameters:
            body["parameters"] = parameters
        out.append(body)
    return out


def read_predict(answer: Json, *, expected: int) -> tuple[list[list[float]], int | None]:
    """The vectors of one Vertex ``predict`` answer and its token count (the sum of each
    prediction's ``statistics.token_count``; None when any lacks one, or has one that is not a
    ``token_count``: then estimated)."""
    predictions = answer.get("predictions")
    vectors: list[list[float]] = []
    tokens: int | None = 0
    for prediction in predictions if isinstance(predictions, list) else ():
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        values = embeddings.get("values") if isinstance(embeddings, dict) else None
        if not isinstance(values, list):
            break
        vectors.append(values)
        stats = embeddings.get("statistics") if isinstance(embeddings, dict) else None
        count = token_count(stats.get("token_count")) if isinstance(stats, dict) else None
        tokens = tokens + count if tokens is not None and count is not None else None
    if len(vectors) != expected:
        raise errors.BadUpstreamResponse(f"upstream predict answer lacks {expected} embeddings")
    return vectors, tokens


def estimated_usage(texts: list[str]) -> Usage:
    """The input tokens of ``texts``, estimated (``batchEmbedContents`` reports no usage)."""
    return Usage(prompt_tokens=sum(estimate_tokens(t) for t in texts), estimated=True)
