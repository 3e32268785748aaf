"""Introspection and control under ``/_sim/`` (never counted in stats or the request log).

- ``POST /_sim/state``: set any of the vLLM gauges ``num_requests_waiting``,
  ``num_requests_running``, ``kv_cache_usage_perc``, ``prefix_cache_hit_rate`` (and ``healthy``,
  which ``/health`` reports) and of the drift fields that change how the model answers from now
  on: ``completion_tokens`` (int >= 1 or null), ``length_spread`` (0..1), ``refusal_rate`` (0..1),
  ``fingerprint`` (string or null), ``model`` (non-empty string or null); see ``drift``.
  A partial update, applied whole or not at all (400 naming the bad field); answers the full state.
- ``GET /_sim/stats``: request counts per path, stream outcomes, in-flight generations.
- ``GET /_sim/requests?limit=N``: the last N requests received (newest last; at most 200 kept),
  each ``{"path", "query", "headers", "body"}``.
- ``POST /_sim/reset``: forget stats, the request log, admin state (gauges and drift back to their
  defaults) and metrics; restart the jitter and drift draw sequences.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.simulator.asgi import Request, SimError, decode_headers, send_json
from app.simulator.core import Route, Sim
from app.simulator.drift import FIELDS as DRIFT_FIELDS
from app.simulator.state import GAUGE_CASTS

_STATE_FIELDS = sorted([*GAUGE_CASTS, *DRIFT_FIELDS])


def _state(sim: Sim) -> dict[str, Any]:
    return {**sim.state.gauges.as_dict(), **sim.drift.as_dict()}


async def set_state(sim: Sim, req: Request, route: Route) -> None:
    """Apply a partial update of gauges and drift (nothing when a field is bad: 400 naming it)."""
    values = req.json_object()
    for key in values:
        if key not in GAUGE_CASTS and key not in DRIFT_FIELDS:
            raise SimError(400, f"unknown field {key!r}; expected one of {_STATE_FIELDS}")
    try:
        gauges = sim.state.gauges.parse(
            {key: value for key, value in values.items() if key in GAUGE_CASTS})
        drift = sim.drift.parse(values)
    except ValueError as exc:
        raise SimError(400, str(exc)) from None
    sim.state.gauges.update(gauges)
    sim.drift.update(drift)
    await send_json(req.send, 200, orjson.dumps(_state(sim)))


async def stats(sim: Sim, req: Request, route: Route) -> None:
    """The traffic counters."""
    await send_json(req.send, 200, orjson.dumps(sim.state.stats()))


def _body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


async def requests(sim: Sim, req: Request, route: Route) -> None:
    """The tail of the request log, decoded (``body`` is null when absent or not JSON)."""
    log = list(sim.state.log)
    raw = req.query_param("limit")
    if raw is not None:
        if not raw.isdigit():
            raise SimError(400, "limit must be a non-negative integer.")
        log = log[len(log) - int(raw):] if int(raw) else []
    entries = [{"path": path, "query": query, "headers": decode_headers(headers),
                "body": _body(body)} for path, query, headers, body in log]
    await send_json(req.send, 200, orjson.dumps(entries))


async def reset(sim: Sim, req: Request, route: Route) -> None:
    """Clear everything but the live in-flight count; drift off; restart the jitter and drift
    draw sequences."""
    sim.state.reset()
    sim.latency.reseed(sim.options.seed)
    sim.drift.reset()
    await send_json(req.send, 200, b'{"reset":true}')
