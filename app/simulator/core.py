"""The simulator's shared context and the generation lifecycle every dialect goes through.

``Sim`` holds what one process plays (options, vLLM dialect, state, latency model, drift). The
helpers below apply the knobs, the latency model and the injected failures the same way for every
wire format: ``generation_knobs`` reads a request's knobs (headers, then the process-wide drift),
``delay`` serves complete answers, ``stream`` event streams, ``hang`` ``X-Sim-Hang``.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.simulator import aws_eventstream
from app.simulator.asgi import SSE_HEADERS, Request, SimError, Watcher
from app.simulator.drift import Drift
from app.simulator.engine import Engine
from app.simulator.errors import Dialect as ErrorDialect
from app.simulator.errors import error_body, stream_error_frames
from app.simulator.faults import (
    Knobs,
    Latency,
    injected_error,
    mangled,
    read_knobs,
    stream_failure,
)
from app.simulator.options import DEFAULT_MODEL, Dialect, SimOptions
from app.simulator.state import SimState

MEMO_SIZE = 1024
MID_STREAM_ERROR = "Simulated upstream failure in the middle of the stream."


class Sim:
    """One simulator process: options, the vLLM dialect they imply, state, latency model and the
    admin-set drift."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.dialect = Dialect.of(options.vllm_version)
        self.state = SimState()
        self.latency = Latency(options)
        self.drift = Drift(options)
        self.models = frozenset(options.models)
        self.default_model = options.models[0] if options.models else DEFAULT_MODEL
        self.engine = Engine(options.engine) if options.engine is not None else None
        self.zero_latency = options.ttft_ms <= 0 and options.tpot_ms <= 0 and self.engine is None
        # Serialized answers by raw request body, for the zero-latency chat fast path.
        self.memo: dict[bytes, Memo] = {}
        self._id_prefix = secrets.token_hex(6)
        self._id_counter = itertools.count()

    def new_id(self, prefix: str) -> str:
        """A unique id such as ``chatcmpl-<24 hex>`` (random per process, then a counter,
        cheaper than fresh randomness per request)."""
        return f"{prefix}{self._id_prefix}{next(self._id_counter):012x}"

    def model(self, requested: Any, *, route: Route) -> str:
        """The model a request names, or on Azure routes the model deployed there (a deployment
        not among ``models`` is a 404); 404 when not served."""
        if route.deployment is not None:
            if self.models and route.deployment not in self.models:
                raise SimError(404, "The API deployment for this resource does not exist. If you "
                               "created the deployment within the last 5 minutes, please wait a "
                               "moment and try again.", kind="invalid_request_error")
            return route.deployed_model or route.deployment
        if requested is None:
            return self.default_model
        if not isinstance(requested, str) or not requested:
            raise SimError(400, "model must be a non-empty string.", param="model")
        if self.models and requested not in self.models:
            if route.dialect == "anthropic":
                raise SimError(404, f"model: {requested}")
            raise SimError(404, f"The model `{requested}` does not exist.")
        return requested

    def remember(self, key: bytes, memo: Memo) -> None:
        """Keep ``memo`` for ``key`` (first in, first out beyond ``MEMO_SIZE`` entries)."""
        if len(self.memo) >= MEMO_SIZE:
            del self.memo[next(iter(self.memo))]
        self.memo[key] = memo

    def error_body(self, route: Route, err: SimError) -> bytes:
        """``err`` in the route's dialect."""
        return error_body(route.dialect, err, flat=self.dialect.flat_errors)


@dataclass(frozen=True, slots=True)
class Memo:
    """A complete answer to replay: the JSON after its ``id``/``created`` fields, and the
    numbers the metrics need."""

    rest: bytes
    prompt: int
    completion: int
    finish: str


@dataclass(frozen=True, slots=True)
class Route:
    """How a request was routed: the error dialect, and the Azure deployment when there is one
    with the model deployed there (which Azure's answers name, not the deployment)."""

    dialect: ErrorDialect = "vllm"
    deployment: str | None = None
    deployed_model: str | None = None
    in_payload_parts: bool = False
    """The stream travels in AWS event-stream ``PayloadPart`` events (a SageMaker container's),
    so an event-stream ``error`` message goes out beside them, not inside one."""


@dataclass(slots=True)
class StreamPlan:
    """A fully prepared event stream.

    ``preamble`` goes out right after the headers, ``head`` together with the first content frame
    (after the time to first token), ``tokens`` one frame per content chunk (``tpot`` apart),
    ``tail`` after the last. ``finish`` is vLLM's ``finished_reason`` (``stop`` or ``length``).
    ``closing`` is the end of ``tail`` without its finish frames (what ``X-Sim-Done-After``
    sends; empty where the dialect's end cannot go without them).
    """

    tokens: list[bytes]
    tail: list[bytes]
    prompt_tokens: int
    finish: str
    head: list[bytes] = field(default_factory=list)
    preamble: list[bytes] = field(default_factory=list)
    closing: list[bytes] = field(default_factory=list)
    prompt_ids: Sequence[int] | None = None
    """The prompt's token ids, for the engine's prefix cache (``None``: the engine is off)."""


def generation_knobs(sim: Sim, req: Request) -> Knobs:
    """A generation's knobs: its headers', with the process-wide drift filled in where the
    headers leave a field unset (``NO_KNOBS`` itself when neither sets anything)."""
    knobs = read_knobs(req)
    return sim.drift.apply(knobs) if sim.drift.active else knobs


def metric_reason(finish: str) -> str:
    """vLLM's ``finished_reason`` label for an ``Output.finish`` value."""
    return "length" if finish == "length" else "stop"


async def hang(sim: Sim, req: Request) -> None:
    """Answer nothing until the client disconnects (``X-Sim-Hang``)."""
    watcher = Watcher(req.receive)
    try:
        await watcher.until_gone()
    finally:
        watcher.close()
    sim.state.requests_cancelled += 1


async def delay(sim: Sim, req: Request, knobs: Knobs, *, prompt: int, completion: int,
                finish: str, prompt_ids: Sequence[int] | None = None) -> bool:
    """Wait as long as generating ``completion`` tokens takes and account the generation.

    False when the client disconnected meanwhile: send nothing then. With zero latency this
    neither sleeps nor starts a watcher (the benchmark fast path). With the engine on and
    ``prompt_ids`` given, the wait is the engine's (queue, prefill, decode).
    """
    if sim.engine is not None and prompt_ids is not None:
        async with sim.engine.generation(prompt_ids, completion) as (ttft, tpot):
            return await _generate(sim, req, ttft, tpot, prompt=prompt, completion=completion,
                                   finish=finish)
    if sim.latency.is_zero(knobs):
        return await _generate(sim, req, 0.0, 0.0, prompt=prompt, completion=completion,
                               finish=finish)
    return await _generate(sim, req, sim.latency.ttft(knobs), sim.latency.tpot(knobs),
                           prompt=prompt, completion=completion, finish=finish)


async def _generate(sim: Sim, req: Request, ttft: float, tpot: float, *, prompt: int,
                    completion: int, finish: str) -> bool:
    state = sim.state
    if ttft > 0 or tpot > 0:
        watcher = Watcher(req.receive)
        try:
            alive = await watcher.pause(ttft + tpot * max(completion - 1, 0))
        finally:
            watcher.close()
        if not alive:
            state.requests_cancelled += 1
            state.finish(prompt=prompt, completion=0, reason="abort", ttft=0.0,
                         e2e=time.perf_counter() - req.started, itl=0.0, itl_count=0)
            return False
    state.finish(prompt=prompt, completion=completion, reason=metric_reason(finish), ttft=ttft,
                 e2e=time.perf_counter() - req.started, itl=tpot,
                 itl_count=max(completion - 1, 0))
    return True


async def stream(sim: Sim, req: Request, plan: StreamPlan, knobs: Knobs, *,
                 route: Route) -> None:
    """Send ``plan`` as an event stream under the latency model and the injected faults.

    ``X-Sim-Cut-After: N`` returns after N content frames without finishing the response, so the
    server drops the connection; ``X-Sim-Error-After: N`` sends the dialect's error frames then
    ends the response. A fault asked for beyond the last content frame happens before the tail.
    A client disconnect stops generation and counts the stream as cancelled.
    """
    if sim.engine is not None and plan.prompt_ids is not None:
        async with sim.engine.generation(plan.prompt_ids, len(plan.tokens)) as (ttft, tpot):
            await _stream(sim, req, plan, knobs, route=route, timing=(ttft, tpot))
        return
    await _stream(sim, req, plan, knobs, route=route, timing=None)


async def _stream(sim: Sim, req: Request, plan: StreamPlan, knobs: Knobs, *, route: Route,
                  timing: tuple[float, float] | None) -> None:
    state, send = sim.state, req.send
    state.streams_started += 1
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    watcher = Watcher(req.receive)
    times: list[float] = []
    outcome = "cancelled"
    try:
        if plan.preamble:
            await send({"type": "http.response.body", "body": b"".join(plan.preamble),
                        "more_body": True})
        ttft = sim.latency.ttft(knobs) if timing is None else timing[0]
        if await watcher.pause(ttft):
            outcome = await _emit(sim, req, plan, knobs, watcher, times, route,
                                  None if timing is None else timing[1])
    finally:
        watcher.close()
        _account(sim, req, plan, outcome, times)


async def _emit(sim: Sim, req: Request, plan: StreamPlan, knobs: Knobs, watcher: Watcher,
                times: list[float], route: Route, tpot: float | None) -> str:
    send = req.send
    pending = b"".join(plan.head)
    for index, frame in enumerate(plan.tokens):
        if index == knobs.cut_after:
            return "faulted"
        if index == knobs.error_after:
            return await _error_frames(sim, req, route, pending, knobs)
        if index == knobs.end_after:
            await send({"type": "http.response.body", "body": pending})
            return "faulted"
        if index == knobs.done_after:
            await send({"type": "http.response.body", "body": pending + b"".join(plan.closing)})
            return "faulted"
        if index and not await watcher.pause(sim.latency.tpot(knobs) if tpot is None
                                             else tpot):
            return "cancelled"
        await send({"type": "http.response.body", "body": pending + frame if pending else frame,
                    "more_body": True})
        pending = b""
        times.append(time.perf_counter())
        if watcher.gone:
            return "cancelled"
    if knobs.cut_after is not None:
        return "faulted"
    if knobs.error_after is not None:
        return await _error_frames(sim, req, route, pending, knobs)
    await send({"type": "http.response.body", "body": pending + b"".join(plan.tail)})
    return "completed"


async def _error_frames(sim: Sim, req: Request, route: Route, pending: bytes,
                       knobs: Knobs) -> str:
    err = stream_failure(knobs, MID_STREAM_ERROR,
                         "overloaded_error" if route.dialect == "anthropic" else None)
    if knobs.aws_error_code is not None and route.in_payload_parts:
        if pending:
            await req.send({"type": "http.response.body", "body": pending, "more_body": True})
        await req.send({"type": "http.response.body", aws_eventstream.UNWRAPPED: True,
                        "body": aws_eventstream.error(knobs.aws_error_code, err.message)})
        return "faulted"
    if knobs.aws_error_code is not None and route.dialect in ("bedrock", "sagemaker"):
        frames = [aws_eventstream.error(knobs.aws_error_code, err.message)]
    else:
        frames = stream_error_frames(route.dialect, err, flat=sim.dialect.flat_errors)
    await req.send({"type": "http.response.body", "body": pending + b"".join(frames)})
    return "faulted"


def _account(sim: Sim, req: Request, plan: StreamPlan, outcome: str,
             times: list[float]) -> None:
    state = sim.state
    if outcome == "completed":
        state.streams_completed += 1
    elif outcome == "cancelled":
        state.streams_cancelled += 1
    else:
        state.streams_faulted += 1
    sent = len(times)
    ttft = times[0] - req.started if times else 0.0
    itl = (times[-1] - times[0]) / (sent - 1) if sent > 1 else 0.0
    state.finish(prompt=plan.prompt_tokens, completion=sent,
                 reason=plan.finish if outcome == "completed" else "abort", ttft=ttft,
                 e2e=time.perf_counter() - req.started, itl=itl, itl_count=max(sent - 1, 0))


async def faulted(sim: Sim, req: Request, knobs: Knobs) -> bool:
    """Apply the request's injected faults: raise its injected error, or hang until the client
    leaves (then True: the request is over). False when the request is to be answered."""
    injected = injected_error(knobs)
    if injected is not None:
        raise injected
    if knobs.hang:
        await hang(sim, req)
        return True
    req.send = mangled(knobs, req.send)  # X-Sim-Cut-Body, -Garbage, -Usage-Count
    return False
