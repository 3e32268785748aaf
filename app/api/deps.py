"""Request-scoped dependencies of the routes that are not model calls (model calls go through
``app.api.calls.serve_call``): the gateway, the settings, the authenticated caller, the admin
API's caller, and the refusal of query parameters a route does not take
(``refuse_unknown_query``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app import errors
from app.api.incoming import Incoming
from app.gateway import Gateway
from app.pipeline import Caller
from app.resources import resources_of
from app.settings import Settings, is_loopback


async def get_gateway(request: Request) -> Gateway:
    return resources_of(request).gateway


async def get_settings(request: Request) -> Settings:
    return resources_of(request).settings


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_caller(request: Request) -> Caller:
    """The caller of a request that is not a model call (the pipeline's authentication)."""
    headers = Incoming.from_scope(request.scope, request.receive).headers
    return await resources_of(request).authenticator.identify(headers)


CallerDep = Annotated[Caller, Depends(require_caller)]


async def require_admin(request: Request, caller: CallerDep) -> Caller:
    """The caller, when it may use the admin API (``check_admin``). ``AuthenticationFailed``
    (401) for a missing or wrong key, ``PermissionDenied`` (403) for any other caller; then,
    for an admin, 400 ``unknown_parameter`` for a query parameter the route does not take
    (every admin route takes this dependency, so none silently ignores a filter it was sent)."""
    check_admin(caller, client=None if request.client is None else request.client.host)
    refuse_unknown_query(request)
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


def check_admin(caller: Caller, *, client: str | None) -> None:
    """Nothing when ``caller``, connecting from the address ``client``, may use the admin API:
    the master key, a virtual key marked admin, or "anonymous" from loopback in loopback-only
    mode; else ``PermissionDenied`` (403 ``admin_only``)."""
    if caller.name == "anonymous":
        allowed = client is not None and is_loopback(client)
    else:
        allowed = caller.admin
    if not allowed:
        raise errors.PermissionDenied("The admin API needs the master key or an admin key.",
                                      code="admin_only")


def refuse_unknown_query(request: Request) -> None:
    """Nothing, when every query parameter of ``request`` is one its route declares (its own or
    its dependencies'); else ``InvalidRequest`` (400 ``unknown_parameter``) naming the first
    other one. A read-out that ignored ``?team_id=`` (or a typo of it) would answer a different
    question than the one asked, with no sign of it."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    for name in request.query_params:
        if name not in known:
            shown = name[:64]
            takes = ", ".join(sorted(known)) or "none"
            raise errors.InvalidRequest(
                f"Unknown query parameter {shown!r}; {route.path} takes: {takes}.",
                param=shown, code="unknown_parameter")


def _query_names(route: APIRoute) -> set[str]:
    """The query parameter names ``route`` declares, through its dependencies (FastAPI's public
    ``APIRoute.dependant`` tree; tests/api/test_unknown_parameters.py pins that it finds
    aliases). Walked per request, not cached: routes are not hashable, and an admin route's
    tree is a handful of nodes."""
    def walk(dependant: Dependant) -> set[str]:
        names = {field.alias for field in dependant.query_params}
        for sub in dependant.dependencies:
            names |= walk(sub)
        return names
    return walk(route.dependant)
