"""vLLM's server extras: ``/v1/models``, ``/health``, ``/version``, ``/tokenize``, ``/metrics``.

``/metrics`` uses vLLM's metric names and labels (``model_name``, ``engine="0"``), switching to the
pre-0.10 names (``vllm:gpu_cache_usage_perc``, ``vllm:gpu_prefix_cache_*``) for older versions.
``num_requests_running`` is the real in-flight generation count plus the admin-set value; the
other gauges are what ``POST /_sim/state`` set. With the engine on (``app.simulator.engine``),
running, waiting, KV-cache usage and the prefix-cache counters are the engine's (plus the
admin-set running and waiting counts).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import Request, SimError, send_bytes, send_json
from app.simulator.core import Route, Sim
from app.simulator.state import Histogram

VOCAB_SIZE = 128_000
# Token ids standing for a chat template's per-message markers (the 3 overhead tokens).
_TEMPLATE_IDS = (128_006, 128_007, 128_009)
_METRICS_TYPE = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


async def models(sim: Sim, req: Request, route: Route) -> None:
    """The served models, as vLLM lists them (with ``max_model_len``)."""
    names = sim.options.models or (sim.default_model,)
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": name,
         "parent": None, "max_model_len": sim.options.max_model_len, "permission": []}
        for name in names]
    await send_json(req.send, 200, orjson.dumps({"object": "list", "data": data}))


async def health(sim: Sim, req: Request, route: Route) -> None:
    """200 with an empty body; 503 once ``/_sim/state`` set ``healthy`` to false."""
    await send_bytes(req.send, 200 if sim.state.gauges.healthy else 503, b"", [])


async def version(sim: Sim, req: Request, route: Route) -> None:
    """``{"version": ...}``: which vLLM this process plays."""
    await send_json(req.send, 200, orjson.dumps({"version": sim.options.vllm_version}))


def token_ids(text: str) -> list[int]:
    """Deterministic ids, one per estimated token of ``text``."""
    return [zlib.crc32(piece.encode()) % VOCAB_SIZE for piece in content.split_tokens(text)
            if not piece.isspace()]


def prompt_token_ids(messages: list[Any]) -> list[int]:
    """A chat prompt's ids: each message's template markers, then its text's."""
    ids: list[int] = []
    for message in messages:
        if isinstance(message, dict):
            ids.extend(_TEMPLATE_IDS)
            ids.extend(token_ids(content.message_text(message)))
    return ids


async def tokenize(sim: Sim, req: Request, route: Route) -> None:
    """``{"model", "prompt"}`` or ``{"model", "messages"}`` -> ids, count and ``max_model_len``.

    The count agrees with the ``prompt_tokens`` the generation routes report for the same input.
    """
    body = req.json_object()
    sim.model(body.get("model"), route=route)
    ids: list[int] = []
    if isinstance(body.get("messages"), list):
        ids = prompt_token_ids(body["messages"])
    elif isinstance(body.get("prompt"), str):
        ids = token_ids(body["prompt"])
    else:
        raise SimError(400, "Either prompt (a string) or messages (a list) is required.")
    await send_json(req.send, 200, orjson.dumps(
        {"count": len(ids), "max_model_len": sim.options.max_model_len, "tokens": ids,
         "token_strs": None}))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, doc: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", *samples]


def render_metrics(sim: Sim) -> str:
    """The Prometheus text exposition of the vLLM metrics."""
    state, gauges = sim.state, sim.state.gauges
    labels = f'model_name="{_escape(sim.default_model)}",engine="0"'
    legacy = sim.dialect.legacy_metric_names
    cache_name = "vllm:gpu_cache_usage_perc" if legacy else "vllm:kv_cache_usage_perc"
    prefix = "vllm:gpu_prefix_cache" if legacy else "vllm:prefix_cache"
    lines: list[str] = []
    engine = sim.engine
    waiting = gauges.num_requests_waiting + (engine.waiting if engine else 0)
    kv_usage = engine.kv_usage if engine else gauges.kv_cache_usage_perc
    gauge_values = [
        ("vllm:num_requests_running", "Number of requests in model execution batches.",
         float((engine.running if engine else state.in_flight) + gauges.num_requests_running)),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
         float(waiting)),
        (cache_name, "KV-cache usage. 1 means 100 percent usage.", float(kv_usage)),
    ]
    for name, doc, value in gauge_values:
        lines += _family(name, "gauge", doc, [f"{name}{{{labels}}} {value}"])
    queries = engine.prefix_queries if engine else state.prefix_queries
    hits = engine.prefix_hits if engine else int(state.prefix_hits)
    counters = [
        (f"{prefix}_queries_total", "Prefix cache queries, in terms of number of queried tokens.",
         float(queries)),
        (f"{prefix}_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
         float(hits)),
        ("vllm:prompt_tokens_total", "Number of prefill tokens processed.",
         float(state.prompt_tokens)),
        ("vllm:generation_tokens_total", "Number of generation tokens processed.",
         float(state.generation_tokens)),
    ]
    for name, doc, value in counters:
        lines += _family(name, "counter", doc, [f"{name}{{{labels}}} {value}"])
    lines += _family("vllm:request_success_total", "counter",
                     "Count of successfully processed requests.",
                     [f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} '
                      f"{float(count)}" for reason, count in state.finished.items()])
    histograms: list[tuple[str, str, Histogram]] = [
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
         state.ttft),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
         state.itl),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
         state.e2e),
    ]
    for name, doc, histogram in histograms:
        lines += _family(name, "histogram", doc, histogram.lines(name, labels))
    return "\n".join(lines) + "\n"


async def metrics(sim: Sim, req: Request, route: Route) -> None:
    """``GET /metrics``."""
    await send_bytes(req.send, 200, render_metrics(sim).encode(), [_METRICS_TYPE])
