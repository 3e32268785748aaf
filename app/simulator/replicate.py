"""Replicate's prediction API (``/v1/models/...``, ``/v1/deployments/...``, ``/v1/predictions``).

- ``POST /v1/models/{owner}/{name}/predictions``, ``POST /v1/deployments/{owner}/{name}/
  predictions``, ``POST /v1/predictions`` (with ``version``): create a prediction. Requires
  ``Authorization: Bearer <token>`` (401 without) and a JSON body with an ``input`` object (422
  otherwise); ``input`` needs a string ``prompt`` or a list ``messages``, and its token limit
  (``max_tokens``, ``max_new_tokens`` or ``max_completion_tokens``) must be a positive integer,
  at least the model's floor where its page gives one (``MIN_LIMITS``: 1024 for
  ``anthropic/claude-4-sonnet``) (422 naming the field); a ``reasoning_effort`` must be one of
  ``low``, ``medium``, ``high`` (the enum of OpenAI's reasoning models' pages: ``o1``,
  ``o4-mini``; 422 otherwise).
- ``GET /v1/predictions/{id}``: the prediction now; ``POST /v1/predictions/{id}/cancel``: cancel
  it (a running one ends ``canceled``).
- ``GET /v1/predictions/{id}/stream``: the stream URL (on Replicate a separate host): SSE
  ``output`` events, one token each, then ``done`` (``{}``, or ``{"reason": "canceled"}``); an
  ``error`` event (``{"detail"}``) then ``done`` ``{"reason": "error"}`` when it fails.

A prediction runs for the latency model's time to generate its answer (``X-Sim-TTFT-Ms`` /
``X-Sim-TPOT-Ms`` or the process options); ``X-Sim-Replicate-Duration-Ms: N`` sets it directly.
It is ``processing`` (its ``output`` the tokens produced so far) until then, ``succeeded``
after. ``Prefer: wait`` / ``wait=N`` holds the creating request until the prediction finishes
or N seconds (60 at most) pass; ``X-Sim-Replicate-Wait-Ms: N`` caps that hold at N ms, so a
test can take the polling path without waiting seconds. ``X-Sim-Replicate-Settle-Ms: N`` makes
``GET /v1/predictions/{id}`` show the prediction N ms late (``processing`` for N ms after its
stream sent ``done``), so a test can make the fetch after ``done`` poll.
``X-Sim-Replicate-Fail: 1`` makes the prediction end ``failed`` (with an ``error``);
``X-Sim-Error-After: N`` fails it after N tokens. ``X-Sim-Cut-After: N`` (``X-Sim-End-After: N``)
on the creation makes its stream drop the connection (end cleanly) after N ``output`` events,
without ``done``.
``X-Return-Error`` and ``X-Sim-Hang`` apply to creation. Token counts are the simulator's usual
(``content``): ``metrics.input_token_count`` counts the prompt, system prompt and messages.
Errors are problem details: ``{"title", "detail", "status"}``.

(Past 400 lines: one prediction's life, created, polled, streamed and cancelled, over one
``Store``; each route reads and moves the same ``Prediction``.)
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import SSE_HEADERS, Request, SimError, Watcher, send_json
from app.simulator.core import Route, Sim, faulted, generation_knobs
from app.simulator.faults import Knobs

PREFIX = "/v1/"
ROUTE = Route("replicate")
MAX_KEPT = 1000
_LIMIT_FIELDS = ("max_tokens", "max_new_tokens", "max_completion_tokens")
REASONING_EFFORTS = ("low", "medium", "high")
MIN_LIMITS = {"anthropic/claude-4-sonnet": 1024}
"""Official models whose token limit has a floor above 1, as their Replicate API pages give it
(claude-4-sonnet: ``max_tokens`` "Min: 1024"; claude-4.5-haiku's is 1)."""
_VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
_FAILURE = "CUDA out of memory (simulated prediction failure)"


@dataclass(slots=True)
class Prediction:
    """One prediction: what it was asked, what it will produce and when."""

    id: str
    model: str
    version: str
    input: dict[str, Any]
    pieces: tuple[str, ...]
    prompt_tokens: int
    created: float
    duration: float
    base: str
    stream: bool
    fail_after: int | None = None
    canceled_at: float | None = None
    settle: float = 0.0
    """How many seconds behind the stream ``GET /v1/predictions/{id}`` shows it."""
    cut_after: int | None = None
    """The creation's ``X-Sim-Cut-After``: its stream drops the connection after N outputs."""
    end_after: int | None = None
    """The creation's ``X-Sim-End-After``: its stream ends cleanly after N outputs, no
    ``done``."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def produced(self, now: float) -> int:
        """Tokens produced by ``now``."""
        if self.duration <= 0:
            count = len(self.pieces)
        else:
            count = int(len(self.pieces) * min(1.0, (now - self.created) / self.duration))
        if self.fail_after is not None:
            count = min(count, self.fail_after)
        if self.canceled_at is not None:
            count = min(count, self.produced_at(self.canceled_at))
        return count

    def produced_at(self, when: float) -> int:
        if self.duration <= 0:
            return len(self.pieces)
        return int(len(self.pieces) * min(1.0, (when - self.created) / self.duration))

    def ends(self) -> float:
        """When it finishes (or fails) unless cancelled first."""
        if self.fail_after is not None and self.pieces:
            return self.created + self.duration * min(1.0, self.fail_after / len(self.pieces))
        return self.created + self.duration

    def status(self, now: float) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if now < self.ends():
            return "processing"
        return "failed" if self.fail_after is not None else "succeeded"

    def body(self, now: float) -> dict[str, Any]:
        """The prediction object, as Replicate shapes it."""
        status = self.status(now)
        finished = status in ("succeeded", "failed", "canceled")
        count = self.produced(now)
        urls = {"get": f"{self.base}/v1/predictions/{self.id}",
                "cancel": f"{self.base}/v1/predictions/{self.id}/cancel"}
        if self.stream:
            urls["stream"] = f"{self.base}/v1/predictions/{self.id}/stream"
        end = self.canceled_at if self.canceled_at is not None else self.ends()
        metrics: dict[str, Any] = {}
        if finished:
            metrics = {"predict_time": round(end - self.created, 6),
                       "input_token_count": self.prompt_tokens, "output_token_count": count}
        return {
            "id": self.id, "model": self.model, "version": self.version, "input": self.input,
            "logs": "", "output": list(self.pieces[:count]) if count or finished else None,
            "data_removed": False,
            "error": _FAILURE if status == "failed" else None, "status": status,
            "created_at": _iso(self.created), "started_at": _iso(self.created),
            "completed_at": _iso(end) if finished else None,
            "urls": urls, "metrics": metrics,
        }


_CLOCK_OFFSET = time.time() - time.monotonic()


def _iso(monotonic: float) -> str:
    return datetime.fromtimestamp(monotonic + _CLOCK_OFFSET, UTC).isoformat().replace(
        "+00:00", "Z")


class Store:
    """The predictions of one simulator (the newest ``MAX_KEPT``)."""

    def __init__(self) -> None:
        self.predictions: OrderedDict[str, Prediction] = OrderedDict()

    def add(self, prediction: Prediction) -> None:
        if len(self.predictions) >= MAX_KEPT:
            self.predictions.popitem(last=False)
        self.predictions[prediction.id] = prediction

    def get(self, ident: str) -> Prediction:
        found = self.predictions.get(ident)
        if found is None:
            raise SimError(404, "The requested resource could not be found.", kind="Not found")
        return found


_STORES: weakref.WeakKeyDictionary[Sim, Store] = weakref.WeakKeyDictionary()


def store_of(sim: Sim) -> Store:
    found = _STORES.get(sim)
    if found is None:
        found = _STORES[sim] = Store()
    return found


def match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The operation and path parameters of a Replicate route, or None."""
    parts = path.removeprefix(PREFIX).split("/") if path.startswith(PREFIX) else []
    if method == "POST" and len(parts) == 4 and parts[0] in ("models", "deployments") \
            and parts[3] == "predictions" and all(parts[1:3]):
        return "create", {"kind": parts[0], "owner": parts[1], "name": parts[2]}
    if parts[:1] != ["predictions"]:
        return None
    if method == "POST" and len(parts) == 1:
        return "create", {"kind": "version"}
    if method == "GET" and len(parts) == 2 and parts[1]:
        return "get", {"id": parts[1]}
    if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
        return "cancel", {"id": parts[1]}
    if method == "GET" and len(parts) == 3 and parts[2] == "stream":
        return "stream", {"id": parts[1]}
    return None


def check_auth(headers: dict[str, str]) -> None:
    bearer = headers.get("authorization", "")
    if not (bearer.startswith("Bearer ") and bearer[7:].strip()):
        raise SimError(401, "You did not pass a valid authentication token",
                       kind="Unauthenticated")


def _invalid(detail: str) -> SimError:
    return SimError(422, detail, kind="Input validation failed")


def _read_input(body: dict[str, Any], *, minimum: int = 1) -> dict[str, Any]:
    """The prediction's ``input``, validated; ``minimum``: the model's floor for its token
    limit."""
    given = body.get("input")
    if not isinstance(given, dict):
        raise _invalid("- input: input is required and must be an object")
    prompt, messages = given.get("prompt"), given.get("messages")
    if not isinstance(prompt, str) and not isinstance(messages, list):
        raise _invalid("- input: prompt is required")
    for name in _LIMIT_FIELDS:
        value = given.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < minimum):
            raise _invalid(f"- input.{name}: Must be greater than or equal to {minimum}")
    effort = given.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _invalid("- input.reasoning_effort: input.reasoning_effort must be one of the "
                       "following: " + ", ".join(f'"{e}"' for e in REASONING_EFFORTS))
    return given


def _prompt_tokens(given: dict[str, Any]) -> int:
    total = 0
    for name in ("prompt", "system_prompt"):
        value = given.get(name)
        if isinstance(value, str) and value:
            total += content.count_tokens(value) + content.MESSAGE_OVERHEAD_TOKENS
    messages = given.get("messages")
    if isinstance(messages, list):
        total += content.prompt_tokens(messages)
    return total


def _topic(given: dict[str, Any]) -> str:
    messages = given.get("messages")
    if isinstance(messages, list) and messages:
        return content.topic_of(content.last_user_text(messages))
    prompt = given.get("prompt")
    return content.topic_of(prompt.rsplit("User:", 1)[-1] if isinstance(prompt, str) else "")


def _output(sim: Sim, given: dict[str, Any], knobs: Knobs) -> content.Output:
    limit = next((given[n] for n in _LIMIT_FIELDS if isinstance(given.get(n), int)), None)
    stops_raw = given.get("stop_sequences")
    stops = tuple(s for s in stops_raw.split(",") if s) if isinstance(stops_raw, str) else ()
    length = knobs.completion_tokens
    if length is None:
        length = sim.options.default_completion_tokens
    return content.reply(_topic(given), length, 0, limit, stops)


def _duration(sim: Sim, req: Request, knobs: Knobs, tokens: int) -> float:
    raw = req.headers.get("x-sim-replicate-duration-ms")
    if raw is not None:
        try:
            return max(0.0, float(raw)) / 1000
        except ValueError:
            raise SimError(400, f"X-Sim-Replicate-Duration-Ms must be a number, got {raw!r}.") \
                from None
    return sim.latency.ttft(knobs) + sim.latency.tpot(knobs) * max(tokens - 1, 0)


def _settle(req: Request) -> float:
    raw = req.headers.get("x-sim-replicate-settle-ms")
    if raw is None:
        return 0.0
    try:
        return max(0.0, float(raw)) / 1000
    except ValueError:
        raise SimError(400, f"X-Sim-Replicate-Settle-Ms must be a number, got {raw!r}.") \
            from None


def _prefer_wait(req: Request) -> float | None:
    """Seconds ``Prefer: wait[=N]`` asks to hold the request (capped by the test knob)."""
    prefer = req.headers.get("prefer", "").strip()
    if not prefer.startswith("wait"):
        return None
    _, _, raw = prefer.partition("=")
    try:
        seconds = min(60.0, float(raw)) if raw else 60.0
    except ValueError:
        raise _invalid(f"Prefer header {prefer!r} is not 'wait' or 'wait=N'") from None
    cap = req.headers.get("x-sim-replicate-wait-ms")
    if cap is not None:
        try:
            seconds = min(seconds, max(0.0, float(cap)) / 1000)
        except ValueError:
            raise SimError(400, f"X-Sim-Replicate-Wait-Ms must be a number, got {cap!r}.") \
                from None
    return seconds


def _model(sim: Sim, params: dict[str, str], body: dict[str, Any]) -> tuple[str, str]:
    if params["kind"] == "version":
        version = body.get("version")
        if not isinstance(version, str) or not version:
            raise _invalid("- version: version is required")
        model, _, ident = version.rpartition(":")
        return (model or "replicate/sim-model"), ident
    return f"{params['owner']}/{params['name']}", _VERSION


async def handle(sim: Sim, req: Request, route: Route) -> None:
    """Dispatch one Replicate request (the app routes here by ``match``)."""
    found = match(req.method, req.path)
    if found is None:
        raise SimError(404, "The requested resource could not be found.", kind="Not found")
    operation, params = found
    check_auth(req.headers)
    if operation == "create":
        await _create(sim, req, params)
    elif operation == "get":
        prediction = store_of(sim).get(params["id"])
        seen = max(prediction.created, time.monotonic() - prediction.settle)
        await send_json(req.send, 200, orjson.dumps(prediction.body(seen)))
    elif operation == "cancel":
        prediction = store_of(sim).get(params["id"])
        now = time.monotonic()
        if prediction.status(now) == "processing":
            prediction.canceled_at = now
            prediction.done.set()
            sim.state.requests_cancelled += 1
        await send_json(req.send, 200, orjson.dumps(prediction.body(now)))
    else:
        await _stream(sim, req, store_of(sim).get(params["id"]))


async def _create(sim: Sim, req: Request, params: dict[str, str]) -> None:
    knobs = generation_knobs(sim, req)
    if await faulted(sim, req, knobs):
        return
    body = req.json_object()
    model, version = _model(sim, params, body)
    official = params["kind"] == "models"  # a deployment's name is its owner's choice
    given = _read_input(body, minimum=MIN_LIMITS.get(model, 1) if official else 1)
    output = _output(sim, given, knobs)
    fail_after = knobs.error_after
    if fail_after is None and req.headers.get("x-sim-replicate-fail", "") in ("1", "true"):
        fail_after = 0
    host = req.headers.get("host", "127.0.0.1")
    prediction = Prediction(
        id=sim.new_id("r"), model=model, version=version, input=given,
        pieces=output.pieces, prompt_tokens=_prompt_tokens(given), created=time.monotonic(),
        duration=_duration(sim, req, knobs, output.tokens), base=f"http://{host}",
        stream=body.get("stream") is True, fail_after=fail_after, settle=_settle(req),
        cut_after=knobs.cut_after, end_after=knobs.end_after)
    store_of(sim).add(prediction)
    if prediction.ends() > prediction.created:
        asyncio.get_running_loop().call_at(prediction.ends(), prediction.done.set)
    else:  # finished as it started: nothing to wait for (and no tasks spent on it)
        prediction.done.set()
    wait = _prefer_wait(req)
    if wait is not None and wait > 0 and not prediction.done.is_set():
        watcher = Watcher(req.receive)
        try:
            waiter = asyncio.ensure_future(prediction.done.wait())
            await asyncio.wait((waiter, asyncio.ensure_future(watcher.until_gone())),
                               timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            watcher.close()
    await send_json(req.send, 201, orjson.dumps(prediction.body(time.monotonic())))


def _event(name: str, data: str, ident: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\nid: {ident}\n{lines}\n".encode()


async def _stream(sim: Sim, req: Request, prediction: Prediction) -> None:
    """Send the prediction's tokens as they are produced, then ``done``."""
    if not prediction.stream:
        raise SimError(404, "This prediction was not created with stream: true",
                       kind="Not found")
    state = sim.state
    state.streams_started += 1
    await req.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    watcher = Watcher(req.receive)
    sent, stamp = 0, int(time.time())
    limit = prediction.cut_after if prediction.cut_after is not None else prediction.end_after
    try:
        while True:
            now = time.monotonic()
            count = prediction.produced(now)
            if limit is not None:
                count = min(count, limit)
            frames = [_event("output", piece, f"{stamp}:{sent + i}")
                      for i, piece in enumerate(prediction.pieces[sent:count])]
            sent = max(sent, count)
            status = prediction.status(now)
            if limit is not None and (sent >= limit or status != "processing"):
                # X-Sim-Cut-After: the connection drops (the response never completes);
                # X-Sim-End-After: the response ends cleanly; neither sends ``done``.
                await req.send({"type": "http.response.body", "body": b"".join(frames),
                                "more_body": prediction.cut_after is not None})
                state.streams_faulted += 1
                return
            if status != "processing":
                frames += _ending(prediction, status, f"{stamp}:{sent}")
                await req.send({"type": "http.response.body", "body": b"".join(frames)})
                state.streams_completed += status == "succeeded"
                state.streams_faulted += status != "succeeded"
                return
            if frames:
                await req.send({"type": "http.response.body", "body": b"".join(frames),
                                "more_body": True})
            step = prediction.duration / max(len(prediction.pieces), 1)
            if not await watcher.pause(max(step, 0.001)):
                state.streams_cancelled += 1
                return
    finally:
        watcher.close()


def _ending(prediction: Prediction, status: str, ident: str) -> list[bytes]:
    if status == "failed":
        return [_event("error", orjson.dumps({"detail": _FAILURE}).decode(), ident),
                _event("done", '{"reason":"error"}', ident)]
    if status == "canceled":
        return [_event("done", '{"reason":"canceled"}', ident)]
    return [_event("done", "{}", ident)]
