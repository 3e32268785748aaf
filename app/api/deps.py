"""Request-scoped dependencies of the routes that are not model calls (model calls go through
``app.api.calls.serve_call``): the gateway, the settings, and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.incoming import Incoming
from app.gateway import Gateway
from app.pipeline import Caller
from app.resources import resources_of
from app.settings import Settings


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
