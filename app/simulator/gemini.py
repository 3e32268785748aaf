"""Google's Gemini API under ``/gemini/v1beta``: ``POST /models/{model}:generateContent``,
``:streamGenerateContent`` (``?alt=sse``), ``:batchEmbedContents``; the answer building is
shared with Vertex AI (``app.simulator.vertex``).

Authentication: ``x-goog-api-key`` (or the ``key`` query parameter, which Google also takes).
No key is Google's 403 ``PERMISSION_DENIED`` ("unregistered callers"); a key not shaped like
Google's (``AIza`` + 35 URL-safe characters, as ``API_KEY`` is) is the 400
``INVALID_ARGUMENT`` with an ``ErrorInfo`` reason ``API_KEY_INVALID``, as Google answers a
wrong key. Errors use Google's ``{"error": {"code", "message", "status"}}`` (``errors``); the
per-request fault headers (``faults``) are honoured. A model not in ``--model`` (when given) is
Google's 404 ``NOT_FOUND``. Requests are validated as ``gemini_request`` describes.

Answers: a ``functionCall`` part (``args`` a minimal instance of the declaration's schema,
``finishReason`` ``STOP``) when the request declares functions, to the one best matching the last
user text (among ``allowedFunctionNames`` when given; ``app.simulator.tools``), under
``functionCallingConfig.mode`` ``ANY``, or ``AUTO`` (the default) and ``VALIDATED`` unless the
last turn holds function responses; none under ``NONE``. JSON (an instance of
``responseJsonSchema`` / ``responseSchema``, else ``{"reply": ...}``) when ``responseMimeType``
is ``application/json``; otherwise the shared simulated reply, one per ``candidateCount``. A
``thinkingConfig`` with ``thinkingBudget`` > 0 or ``includeThoughts`` adds thinking
(``thoughtsTokenCount``; the thought itself as a ``thought: true`` part when
``includeThoughts``). Models named ``gemini-3*`` sign their answers and check the signatures
sent back, as ``gemini_signature`` describes, and give their function calls an ``id`` (Gemini
3 always does; not on Vertex, whose v1 API has no such field). ``X-Sim-Refusal`` is a
candidate stopped for ``SAFETY`` with no content; ``X-Sim-Cache-Read-Tokens: N`` reports up
to N prompt tokens as ``cachedContentTokenCount``.
Streams are SSE ``data:`` frames (CRLF-separated, as Google sends them), each a whole
``GenerateContentResponse`` holding the next piece of each candidate and a ``usageMetadata`` with
the prompt's counts (``promptTokenCount``, ``cachedContentTokenCount``, their details, and a
``totalTokenCount`` of the prompt alone); the last one carries the ``finishReason`` and the full
``usageMetadata``. ``X-Sim-Error-After`` sends a
``data: {"error": {...}}`` frame and ends the stream.

Embeddings: deterministic unit vectors (``embeddings.vector``) of ``outputDimensionality``
(default: the model's own, ``embeddings.MODEL_DIMENSIONS``, else ``--embedding-dimensions``; a
known model refuses one past its own, ``largest_output``), at most 100 requests a batch, each
naming the path's model.
"""

from __future__ import annotations

import re
from itertools import zip_longest
from typing import Any

import orjson

from app.simulator import content, gemini_signature
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.content import Output
from app.simulator.core import Route, Sim, StreamPlan, delay, faulted, generation_knobs, stream
from app.simulator.embeddings import MAX_DIMENSIONS, MODEL_DIMENSIONS, dimensions_of, vector
from app.simulator.errors import google_error
from app.simulator.faults import Knobs, read_knobs
from app.simulator.gemini_request import GenerateRequest, invalid, read_request
from app.simulator.params import json_reply
from app.simulator.schema import instance
from app.usage import estimate_tokens

PREFIX = "/gemini/v1beta/models/"
ROUTE = Route("google")
API_KEY = "AIzaSySimulatorTestKey0123456789abcdefg"
"""A key the simulator accepts (any key of the same shape is accepted)."""
_KEY_SHAPE = re.compile(r"^AIza[0-9A-Za-z_-]{35}$")
_FINISH = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
_SAFETY = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
            "blocked": True}]
METHODS = ("generateContent", "streamGenerateContent", "batchEmbedContents")

assert len(API_KEY) == 39 and _KEY_SHAPE.match(API_KEY)


def parse_path(path: str, prefix: str) -> tuple[str, str] | None:
    """(model, method) of ``{prefix}{model}:{method}``; None when the path is not one."""
    if not path.startswith(prefix):
        return None
    model, colon, method = path[len(prefix):].rpartition(":")
    if not colon or not model or "/" in model:
        return None
    return model, method


def check_key(req: Request) -> None:
    """The Gemini API's key check (see the module docstring)."""
    key = req.headers.get("x-goog-api-key") or req.query_param("key") or ""
    if not key:
        raise SimError(403, "Method doesn't allow unregistered callers (callers without "
                       "established identity). Please use API Key or other form of API "
                       "consumer identity to call this API.", kind="PERMISSION_DENIED")
    if not _KEY_SHAPE.match(key):
        raise SimError(400, "API key not valid. Please pass a valid API key.",
                       kind="API_KEY_INVALID")


def check_model(sim: Sim, model: str, method: str, *, name: str) -> None:
    """Google's 404 for a model the simulator does not serve (``name``: how it is named)."""
    if sim.models and model not in sim.models:
        raise SimError(404, f"{name} is not found for API version v1beta, or is not supported "
                       f"for {method}. Call ListModels to see the list of available models and "
                       "their supported methods.", kind="NOT_FOUND")


def _thought(request: GenerateRequest) -> tuple[str, ...]:
    thinks, _ = request.thinking
    if not thinks:
        return ()
    topic = request.topic
    return tuple(content.split_tokens(f"Considering how to answer: {topic}." if topic
                                      else "Considering how to answer."))


def _outputs(sim: Sim, request: GenerateRequest, knobs: Knobs) -> list[Output]:
    """One output per candidate."""
    limit, stops = request.limit, request.stops
    if request.tool is not None:
        schema = request.tool.get("parametersJsonSchema") or request.tool.get("parameters") \
            or {}
        arguments = orjson.dumps(instance(schema)).decode()
        return [content.shape(content.split_tokens(arguments), limit=None, stops=(),
                              natural="tool")] * request.candidates
    if request.json_mode:
        schema = request.json_schema
        text = orjson.dumps(instance(schema)).decode() if schema is not None \
            else json_reply(request.topic)
        return [content.shape(content.split_tokens(text), limit=limit, stops=stops)] \
            * request.candidates
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return [content.reply(request.topic, length, i * 7, limit, stops)
            for i in range(request.candidates)]


def usage(request: GenerateRequest, knobs: Knobs, candidates: int, thoughts: int
          ) -> dict[str, Any]:
    """``usageMetadata`` (thoughts counted apart from the candidates, as Google does)."""
    prompt = request.prompt_tokens
    out: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                           "totalTokenCount": prompt + candidates + thoughts,
                           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    cached = min(knobs.cache_read_tokens or 0, prompt)
    if cached:
        out["cachedContentTokenCount"] = cached
        out["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return out


class Answer:
    """One generateContent answer, complete or as a stream plan."""

    def __init__(self, sim: Sim, request: GenerateRequest, knobs: Knobs, *, model: str,
                 response_id: str, extra: dict[str, Any], signs: bool = False,
                 call_id: str | None = None) -> None:
        self.request = request
        self.signs = signs
        self.call_id = call_id
        self.knobs = knobs
        self.refused = knobs.refusal
        self.outputs = [] if self.refused else _outputs(sim, request, knobs)
        self.thought = () if self.refused else _thought(request)
        self.shows_thought = request.thinking[1]
        self.meta = {"modelVersion": model, "responseId": response_id, **extra}

    @property
    def completion(self) -> int:
        return sum(o.tokens for o in self.outputs)

    @property
    def thinking(self) -> int:
        return len(self.thought)

    def usage(self) -> dict[str, Any]:
        return usage(self.request, self.knobs, self.completion, self.thinking)

    def _parts(self, output: Output, *, with_thought: bool) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if with_thought and self.shows_thought and self.thought:
            parts.append({"text": "".join(self.thought), "thought": True})
        if self.request.tool is not None:
            complete = output.finish != "length"
            call: dict[str, Any] = {"name": self.request.tool["name"],
                                    "args": orjson.loads(output.text) if complete else {}}
            if self.call_id is not None:
                call = {"id": self.call_id, **call}
            parts.append({"functionCall": call})
        else:
            parts.append({"text": output.text})
        return self._signed(parts)

    def _signed(self, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``parts`` with Gemini 3's signature on the first function call, else the last part
        (``gemini_signature``); unchanged for other models."""
        if self.signs and parts:
            calls = [part for part in parts if "functionCall" in part]
            part = calls[0] if calls else parts[-1]
            part["thoughtSignature"] = gemini_signature.sign(part)
        return parts

    def body(self) -> dict[str, Any]:
        if self.refused:
            candidates: list[dict[str, Any]] = [{"finishReason": "SAFETY", "index": 0,
                                                 "safetyRatings": _SAFETY}]
        else:
            candidates = [{"content": {"parts": self._parts(o, with_thought=i == 0),
                                       "role": "model"},
                           "finishReason": _FINISH[o.finish], "index": i}
                          for i, o in enumerate(self.outputs)]
        return {"candidates": candidates, "usageMetadata": self.usage(), **self.meta}

    def _frame(self, candidates: list[dict[str, Any]], **rest: Any) -> bytes:
        return b"data: " + orjson.dumps({"candidates": candidates, **rest, **self.meta}) \
            + b"\r\n\r\n"

    def plan(self) -> StreamPlan:
        """The thought (if shown) and each candidate's pieces, a frame per piece, each with the
        prompt's counts; the last frame carries the finish reasons and the whole usage."""
        per_candidate: list[list[dict[str, Any]]] = []
        for i, output in enumerate(self.outputs):
            parts: list[dict[str, Any]] = []
            if i == 0 and self.shows_thought:
                parts.extend({"text": piece, "thought": True} for piece in self.thought)
            if self.request.tool is not None:
                parts.extend(self._parts(output, with_thought=False))
            else:
                parts.extend({"text": piece} for piece in output.pieces)
            per_candidate.append(parts)
        opening = {key: value for key, value in self.usage().items()
                   if key not in ("candidatesTokenCount", "thoughtsTokenCount")}
        opening["totalTokenCount"] = opening["promptTokenCount"]
        tokens = [self._frame([{"content": {"parts": [part], "role": "model"}, "index": i}
                               for i, part in enumerate(row) if part is not None],
                              usageMetadata=opening)
                  for row in zip_longest(*per_candidate)]
        if self.refused:
            last = [{"finishReason": "SAFETY", "index": 0, "safetyRatings": _SAFETY}]
        else:
            closing = [{"text": ""}] if self.request.tool is not None \
                else self._signed([{"text": ""}])
            last = [{"content": {"parts": closing, "role": "model"},
                     "finishReason": _FINISH[o.finish], "index": i}
                    for i, o in enumerate(self.outputs)]
        finish = "length" if any(o.finish == "length" for o in self.outputs) else "stop"
        return StreamPlan(tokens=tokens, tail=[self._frame(last, usageMetadata=self.usage())],
                          prompt_tokens=self.request.prompt_tokens, finish=finish)


async def generate(sim: Sim, req: Request, route: Route, *, model: str, streaming: bool,
                   extra: dict[str, Any] | None = None, call_ids: bool = True) -> None:
    """Validate a ``GenerateContentRequest`` (already authenticated), then answer it.
    ``call_ids``: the API has function call ids (the Gemini API: Gemini 3 models give every
    call one; Vertex's v1: none, and refused in requests)."""
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    if streaming and req.query_param("alt") != "sse":
        raise invalid("The simulator streams only as server-sent events: add ?alt=sse.")
    request = read_request(req.json_object(), call_ids=call_ids)
    signs = gemini_signature.signs(model)
    if signs:
        gemini_signature.check(request.contents)
    answer = Answer(sim, request, knobs, model=knobs.model or model,
                    response_id=sim.new_id(""), extra=extra or {}, signs=signs,
                    call_id=sim.new_id("fc-") if signs and call_ids else None)
    if streaming:
        await stream(sim, req, answer.plan(), knobs, route=route)
        return
    finish = "length" if any(o.finish == "length" for o in answer.outputs) else "stop"
    if await delay(sim, req, knobs, prompt=request.prompt_tokens,
                   completion=answer.completion + answer.thinking, finish=finish):
        await send_json(req.send, 200, orjson.dumps(answer.body()))


def largest_output(model: str) -> int:
    """The longest vector ``model`` makes: a Google model's own size (``outputDimensionality``
    only truncates it: gemini-embedding-001 supports up to 3072, text-embedding-005 768), else
    ``MAX_DIMENSIONS``."""
    return MODEL_DIMENSIONS.get(model, MAX_DIMENSIONS)


def _texts(request: Any, where: str) -> str:
    parts = (request.get("content") or {}).get("parts") if isinstance(request, dict) else None
    if not isinstance(parts, list) or not parts or \
            not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        raise invalid(f"* BatchEmbedContentsRequest.{where}.content: content must have text "
                      "parts.")
    return " ".join(p["text"] for p in parts)


async def batch_embed(sim: Sim, req: Request, route: Route, *, model: str) -> None:
    """``batchEmbedContents``: one vector per request, in order."""
    knobs = read_knobs(req)
    if await faulted(sim, req, knobs):
        return
    body = req.json_object()
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("* BatchEmbedContentsRequest.requests: requests must not be empty.")
    if len(requests) > 100:
        raise invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be in "
                      "one batch")
    vectors = []
    texts = []
    for i, item in enumerate(requests):
        where = f"requests[{i}]"
        if not isinstance(item, dict) or item.get("model") != f"models/{model}":
            raise invalid(f"* BatchEmbedContentsRequest.{where}.model: the model must be "
                          f"models/{model}, the model of the request.")
        dimensions = item.get("outputDimensionality") \
            or dimensions_of(model, sim.options.embedding_dimensions)
        most = largest_output(model)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= most:
            raise invalid(f"* BatchEmbedContentsRequest.{where}.output_dimensionality: must be "
                          f"between 1 and {most} for models/{model}")
        text = _texts(item, where)
        texts.append(text)
        vectors.append({"values": list(vector(text, dimensions))})
    tokens = sum(estimate_tokens(t) for t in texts)
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps({"embeddings": vectors}))


async def handle(sim: Sim, req: Request, route: Route) -> None:
    """Every ``/gemini/v1beta/models/{model}:{method}`` call."""
    try:
        await _serve(sim, req, route)
    except SimError as err:
        raise google_error(err) from None


async def _serve(sim: Sim, req: Request, route: Route) -> None:
    parsed = parse_path(req.path, PREFIX)
    if parsed is None or parsed[1] not in METHODS:
        raise SimError(404, f"Method not found: {req.path}", kind="NOT_FOUND")
    model, method = parsed
    check_key(req)
    check_model(sim, model, method, name=f"models/{model}")
    if method == "batchEmbedContents":
        await batch_embed(sim, req, route, model=model)
    else:
        await generate(sim, req, route, model=model,
                       streaming=method == "streamGenerateContent")


def match(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(PREFIX)
