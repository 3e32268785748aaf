"""The admin API: the call log (``GET /admin/calls``, ``/admin/calls/{call_id}``,
``/admin/calllog``), spend (``GET /admin/spend``), drift (``GET /admin/drift``), the config
(``GET /admin/config``, ``POST /admin/config/reload``) and the routing state (``GET
/admin/routing``).

Access: the master key, or a virtual key marked admin (``app.api.deps.AdminDep``). In
loopback-only mode (no master key configured; the gateway then refuses to bind anything but a
loopback address, see ``Settings.check_exposure``) every caller is "anonymous", and the admin
routes are open to clients connecting from a loopback address and refused (403) to any other:
the machine's own users already own the gateway's data, nobody else does. A body is read only
once that access is granted (``app.api.guard``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors, experiments
from app.api.deps import AdminDep
from app.api.guard import GuardedRoute
from app.calllog import query, spend
from app.db.engine import DATABASE_ERRORS
from app.resources import resources_of
from app.routing.table import Route
from app.times import iso

router = APIRouter(prefix="/admin", tags=["admin"], route_class=GuardedRoute)


async def get_engine(request: Request) -> AsyncEngine:
    """The call log's engine, built in the app's lifespan."""
    engine = resources_of(request).engine
    if engine is None:
        raise errors.GatewayError("The call log database is not configured on this gateway.",
                                  status=503, code="call_log_unavailable")
    return engine


EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


def _moment(value: str | None, *, param: str) -> datetime | None:
    return None if value is None else query.parse_time(value, param=param)


@router.get("/calls")
async def list_calls(
    admin: AdminDep,
    engine: EngineDep,
    since: Annotated[str | None, Query(description=(
        "Earliest call (inclusive): ISO 8601 (naive = UTC) or an age such as 30m, 1h, 7d."))]
    = None,
    until: Annotated[str | None, Query(description=(
        "Latest call (exclusive): ISO 8601 or an age, as for since."))] = None,
    model: Annotated[str | None, Query(description="Public model name as clients send it.")]
    = None,
    provider: Annotated[str | None, Query(description="Provider name from the config.")] = None,
    status: Annotated[Literal["ok", "error", "cancelled"] | None, Query()] = None,
    # A Literal, as status is: a typo ("Master") is a 400 naming it, not an empty list that
    # reads as "no such calls".
    caller: Annotated[Literal["master", "key", "anonymous", "unauthenticated"] | None,
                      Query(description=(
        'Who called: "master", "key", "anonymous" (loopback-only mode, no key) or '
        '"unauthenticated" (refused at authentication: no key, or one unknown, revoked or '
        'expired).'))] = None,
    key_id: Annotated[str | None, Query(description="The virtual key's id.")] = None,
    team_id: Annotated[str | None, Query(description="The team's id.")] = None,
    request_id: Annotated[str | None, Query(description=(
        "The client's x-request-id (not unique: every call sent with it)."))] = None,
    config_version: Annotated[str | None, Query(description=(
        "The version of the config that served the call (GET /admin/config)."))] = None,
    experiment: Annotated[str | None, Query(description="An A/B experiment's name.")] = None,
    variant: Annotated[str | None, Query(description="One of its variants.")] = None,
    prompt_id: Annotated[str | None, Query(description=(
        "The prompt template the request rendered (/admin/prompts)."))] = None,
    prompt_version: Annotated[int | None, query.WholeNumber,
                              Query(description="That template's version.")] = None,
    limit: Annotated[int, query.WholeNumber, Query(ge=1, le=query.MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(description=(
        "next_cursor from the previous page."))] = None,
) -> dict[str, Any]:
    """Calls, newest first, one page at a time: pass ``next_cursor`` back as ``cursor`` until it
    is null. Rows have the ``calls`` table's columns; times are ISO 8601 UTC. A filter value the
    database cannot compare (a NUL character), longer than its column or out of range is a 400
    naming the filter."""
    rows, next_cursor = await query.list_calls(
        engine, since=_moment(since, param="since"), until=_moment(until, param="until"),
        model=model, provider=provider, status=status, caller=caller, key_id=key_id,
        team_id=team_id, request_id=request_id, config_version=config_version,
        experiment=experiment, variant=variant, prompt_id=prompt_id,
        prompt_version=prompt_version, limit=limit, cursor=cursor)
    return {"object": "list", "data": rows, "next_cursor": next_cursor}


@router.get("/spend")
async def get_spend(
    admin: AdminDep,
    engine: EngineDep,
    by: Annotated[spend.SpendBy, Query(description=(
        "Group by virtual key id, team id or public model."))],
    since: Annotated[str | None, Query(description=(
        "Earliest call (inclusive), as for /admin/calls; default: the start of the current "
        "month (UTC)."))] = None,
    until: Annotated[str | None, Query(description=(
        "Latest call (exclusive), as for since; default: now."))] = None,
    key_id: Annotated[str | None, Query(description="Only the calls of this virtual key.")]
    = None,
    team_id: Annotated[str | None, Query(description="Only the calls of this team's keys.")]
    = None,
    model: Annotated[str | None, Query(description=(
        "Only the calls for this public model."))] = None,
) -> dict[str, Any]:
    """Requests, tokens, cost (USD) and errors per group over the range, from the call log,
    costliest first, of the calls matching every filter given (``key_id``, ``team_id``,
    ``model``). Calls without a key (or team) form the group ``null``."""
    start = _moment(since, param="since") or spend.month_start()
    end = _moment(until, param="until")
    rows = await spend.spend(engine, by=by, since=start, until=end, key_id=key_id,
                             team_id=team_id, model=model)
    filters = {"key_id": key_id, "team_id": team_id, "model": model}
    return {"object": "list", "by": by, "since": iso(start),
            "until": None if end is None else iso(end),
            "filters": {name: value for name, value in filters.items() if value is not None},
            "data": rows}


@router.get("/calls/{call_id}")
async def get_call(call_id: str, admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    """One call by its call id (the ``x-switchboard-call-id`` the gateway answered with); 404 if
    unknown."""
    row = await query.get_call(engine, call_id)
    if row is None:
        raise errors.NotFound(f"No call with id '{call_id}' in the call log.",
                              param="call_id", code="call_not_found")
    return row


@router.get("/calllog")
async def call_log_status(admin: AdminDep, request: Request) -> dict[str, Any]:
    """The call-log writer's counters (``dropped`` must stay 0) and its buffer depth."""
    calllog = resources_of(request).calllog
    if calllog is None:
        raise errors.GatewayError("The call log is off on this gateway.", status=503,
                                  code="call_log_unavailable")
    writer = calllog.writer
    return {"buffered": writer.buffered, **asdict(writer.stats)}


@router.get("/drift")
async def drift_status(admin: AdminDep, request: Request) -> dict[str, Any]:
    """Drift per public model and provider: baseline, recent window, last scores, flags and the
    current upstream version; embedding drift when the local model is installed; the latest
    version-change events (this worker's view, as of its last finished call: like
    ``/metrics``, it first accounts the calls the recorder holds for its next flush)."""
    runtime = resources_of(request).metrics
    if runtime is None:  # drift is measured by the metrics runtime
        raise errors.GatewayError("Drift detection is off on this gateway: its metrics are "
                                  "(SWITCHBOARD_METRICS=false), and drift is measured with "
                                  "them.", status=503, code="drift_disabled")
    if runtime.drift is None:
        raise errors.GatewayError("Drift detection is off on this gateway (drift.enabled).",
                                  status=503, code="drift_disabled")
    runtime.flush()
    return {"targets": runtime.drift.status(),
            "embedding": runtime.embeddings.status() if runtime.embeddings else None,
            "events": list(runtime.drift.events)}


@router.get("/config")
async def config_status(admin: AdminDep, request: Request) -> dict[str, Any]:
    """The config serving this worker: its version (as in every call row and
    ``switchboard_config_info``), its public models and their targets, its providers (names and
    types, never a credential), how live reloads have gone (``app.reload``), and the replaced
    versions that calls (long streams) still run on."""
    resources = resources_of(request)
    snapshot = resources.gateway.snapshot
    reloader = resources.reloader
    state = reloader.state if reloader is not None else None
    return {
        "version": snapshot.version,
        "path": str(reloader.path) if reloader is not None else None,
        "live": reloader is not None,
        "poll_s": reloader.poll_s if reloader is not None else None,
        "loaded_at": iso(state.loaded_at) if state else None,
        "reloads": state.reloads if state else 0,
        "last_error": None if state is None or state.last_error is None else
        {"message": state.last_error, "at": iso(state.last_error_at)},
        "restart_needed": list(state.restart_needed) if state else [],
        "draining": [{"version": s.version, "calls": s.in_flight.calls}
                     for s in resources.gateway.draining],
        "models": {name: [f"{t.provider}/{t.model}" for t in model.targets]
                   for name, model in snapshot.config.models.items()},
        "providers": {name: provider.type for name, provider in snapshot.config.providers.items()},
    }


@router.post("/config/reload")
async def reload_config(admin: AdminDep, request: Request) -> dict[str, Any]:
    """Re-read the config file now (this worker, which then signals the supervisor's other
    workers under ``serve --workers N`` to reload too: ``app.reload``). An invalid file is a
    422 ``config_invalid`` (type ``invalid_request_error``) with every problem and its YAML
    path, and changes nothing; a gateway without a config file is a 409 ``no_config_file``.
    ``restart_needed``: as in ``GET /admin/config``."""
    reloader = resources_of(request).reloader
    if reloader is None:
        raise errors.Conflict(
            "This gateway serves the embedded default or a config given in code: there is no "
            "config file to reload (start it with SWITCHBOARD_CONFIG).", code="no_config_file")
    outcome = await reloader.reload(reason="POST /admin/config/reload", force=True)
    if outcome.error is not None:  # the file is the caller's to fix: invalid_request_error
        raise errors.InvalidRequest(
            f"The config file was not loaded; version {outcome.version} keeps serving.\n"
            f"{outcome.error}", status=422, code="config_invalid")
    return {"changed": outcome.changed, "version": outcome.version,
            "restart_needed": list(outcome.restart_needed)}


@router.get("/routing")
async def routing_status(admin: AdminDep, request: Request) -> dict[str, Any]:
    """Per public model: its strategy and, per target, its circuit breaker's state, the calls in
    flight from this worker and the moving average of its time to first byte (this worker's
    view; breakers are shared by every process through Redis when there is one); the same per
    variant of each experiment (``experiments``), since a variant's targets may be none of its
    model's (a breaker belongs to a target, shared by every model and variant listing it)."""
    gateway = resources_of(request).gateway
    router = gateway.router
    states = router.states

    def targets_of(route: Route) -> list[dict[str, Any]]:
        targets = []
        for target in route.targets:
            key = (target.provider, target.model)
            breaker = router.breakers.get(key)
            stats = states.by_target.get(key)
            targets.append({
                "provider": target.provider, "model": target.model, "weight": target.weight,
                "context_window": target.context_window,
                "state": breaker.state if breaker is not None else "closed",
                "consecutive_failures": breaker.consecutive if breaker is not None else 0,
                "cooldown_s": breaker.cooldown_s if breaker is not None else 0.0,
                "in_flight": stats.in_flight if stats is not None else 0,
                "first_byte_ms": None if stats is None or stats.ewma_ms is None
                else round(stats.ewma_ms, 1)})
        return targets

    models: dict[str, Any] = {}
    experiments_shown: dict[str, Any] = {}
    for route in gateway.table.routes():
        models[route.name] = {"strategy": route.strategy, "targets": targets_of(route)}
        experiment = gateway.table.experiment_of(route.name)
        if experiment is not None:
            experiments_shown[experiment.name] = {"model": experiment.model, "variants": {
                variant.name: {"shadow": variant.shadow, "strategy": variant.route.strategy,
                               "targets": targets_of(variant.route)}
                for variant in (*experiment.variants, *experiment.shadows)}}
    return {"version": gateway.snapshot.version, "models": models,
            "experiments": experiments_shown}


@router.get("/experiments/{name}")
async def experiment_report(name: str, admin: AdminDep, engine: EngineDep, request: Request,
                            since: Annotated[str | None, Query(description=(
                                "Earliest call (inclusive): ISO 8601 or an age such as 7d."
                            ))] = None,
                            control: Annotated[str | None, Query(description=(
                                "The variant the others are compared with (default: the "
                                "first listed in the config; none for an ended experiment)."
                            ))] = None) -> dict[str, Any]:
    """An A/B experiment's report: per variant, calls, error rate, latency, tokens, cost per
    call and feedback, with 95% confidence sequences that stay valid however often the report
    is read (``app.experiments``). An experiment no longer in the config serving now (ended)
    is reported from its calls in the call log (``"ended": true``)."""
    if control is not None:
        query.not_empty(control, param="control")
    config = resources_of(request).gateway.snapshot.config
    experiment = config.experiments.get(name)
    if experiment is None:  # read from the call log: a name its database can compare
        query.check_text(name, param="name", column="experiment")
    try:
        return await experiments.report_of(
            engine, name, None if experiment is None else list(experiment.variants),
            control=control, since=_moment(since, param="since"))
    except DATABASE_ERRORS:
        raise errors.GatewayError("The call log database is unreachable; retry shortly.",
                                  status=503, code="call_log_unavailable") from None
