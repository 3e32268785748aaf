"""``GET /metrics``: the Prometheus exposition (``app.metrics``).

Access: the metrics key (``SWITCHBOARD_METRICS_KEY``, for Prometheus) or the master key. With no
key configured at all the gateway serves loopback only (``Settings.check_exposure``) and
``/metrics`` is open to whoever can reach it there. Metrics are never left open on a network:
they name models, providers and spend.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import errors
from app.api.deps import SettingsDep
from app.api.incoming import Incoming
from app.resources import resources_of
from app.settings import Settings
from app.stages.authenticate import presented_key

router = APIRouter()


def may_read_metrics(headers: dict[str, str], settings: Settings) -> None:
    """Raise ``AuthenticationFailed`` unless the request may read the metrics."""
    keys = [k.get_secret_value().encode() for k in (settings.metrics_key, settings.master_key)
            if k is not None]
    if not keys:
        return
    presented = presented_key(headers)
    if presented is None:
        raise errors.AuthenticationFailed(
            "/metrics needs the metrics key or the master key, as 'Authorization: Bearer KEY'.",
            code="missing_api_key")
    # Compare against every key (no early exit), so timing tells nothing about which matched.
    matched = [hmac.compare_digest(presented.encode(), key) for key in keys]
    if not any(matched):
        raise errors.AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus text format, every worker's values merged."""
    may_read_metrics(Incoming.from_scope(request.scope, request.receive).headers, settings)
    runtime = resources_of(request).metrics
    if runtime is None:
        raise errors.NotFound("Metrics are off on this gateway (SWITCHBOARD_METRICS=false).",
                              code="metrics_disabled")
    return Response(runtime.exposition(), media_type=CONTENT_TYPE_LATEST)
