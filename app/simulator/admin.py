"""Introspection and control under ``/_sim/`` (never counted in stats or the request log).

- ``POST /_sim/state``: set any of ``num_requests_waiting``, ``num_requests_running``,
  ``kv_cache_usage_perc``, ``prefix_cache_hit_rate`` (and ``healthy``, which ``/health`` reports);
  answers the full state.
- ``GET /_sim/stats``: request counts per path, stream outcomes, in-flight generations.
- ``GET /_sim/requests?limit=N``: the last N requests received (newest last; at most 200 kept),
  each ``{"path", "query", "headers", "body"}``.
- ``POST /_sim/reset``: forget stats, the request log, admin state and metrics.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.simulator.asgi import Request, SimError, decode_headers, send_json
from app.simulator.core import Route, Sim


async def set_state(sim: Sim, req: Request, route: Route) -> None:
    """Apply a partial state update; 400 naming the bad field."""
    try:
        sim.state.gauges.update(req.json_object())
    except ValueError as exc:
        raise SimError(400, str(exc)) from None
    await send_json(req.send, 200, orjson.dumps(sim.state.gauges.as_dict()))


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
    """Clear everything but the live in-flight count; restart the jitter sequence."""
    sim.state.reset()
    sim.latency.reseed(sim.options.seed)
    await send_json(req.send, 200, b'{"reset":true}')
