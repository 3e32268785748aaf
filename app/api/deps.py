"""Request-scoped dependencies: the gateway, the settings, and the call being served."""

from __future__ import annotations

import hmac
import os
import re
from typing import Annotated, cast

from fastapi import Depends, Request

from app import errors
from app.api.incoming import Incoming
from app.calllog import CallRecord
from app.gateway import Gateway
from app.settings import Settings

# A client's own request id is kept when it is a sane token; anything else is not kept.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def get_gateway(request: Request) -> Gateway:
    return cast(Gateway, request.app.state.gateway)


async def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def presented_key(headers: dict[str, str]) -> str | None:
    """The key from ``Authorization: Bearer ...`` or ``x-api-key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def authenticate(headers: dict[str, str], settings: Settings) -> str:
    """The caller's identity; ``AuthenticationFailed`` when a required key is missing or wrong."""
    master = settings.master_key
    if master is None:
        return "anonymous"
    key = presented_key(headers)
    if key is None:
        raise errors.AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
            code="missing_api_key")
    if not hmac.compare_digest(key.encode(), master.get_secret_value().encode()):
        raise errors.AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
    return "master"


def client_request_id(headers: dict[str, str]) -> str | None:
    """The client's ``x-request-id`` when it is a sane token (else ``None``: not kept)."""
    given = headers.get("x-request-id")
    if given and _CLIENT_ID.match(given):
        return given
    return None


def new_call(incoming: Incoming) -> CallRecord:
    """A fresh call record: a call id of its own (never the client's), and the client's
    ``x-request-id`` kept beside it as ``request_id``."""
    return CallRecord(id=os.urandom(16).hex(),  # uuid4().hex measured at ~8 us, this at ~0.6 us
                      request_id=client_request_id(incoming.headers), endpoint=incoming.path,
                      caller="anonymous")


def open_call(record: CallRecord, incoming: Incoming, gateway: Gateway,
              settings: Settings) -> None:
    """Authenticate the caller of the call ``record`` (from ``new_call``); a refused caller is
    recorded (as "unauthenticated") and raised as the ``GatewayError`` the client gets."""
    try:
        record.caller = authenticate(incoming.headers, settings)
    except errors.GatewayError as exc:
        record.caller = "unauthenticated"
        raise gateway.reject(record, exc) from None


async def begin_call(request: Request, gateway: GatewayDep, settings: SettingsDep) -> CallRecord:
    incoming = Incoming.from_scope(request.scope, request.receive)
    record = request.state.call = new_call(incoming)  # its ids go on an error response too
    open_call(record, incoming, gateway, settings)
    return record


CallDep = Annotated[CallRecord, Depends(begin_call)]


async def require_caller(request: Request, settings: SettingsDep) -> str:
    """Authenticate a request that is not a model call (no call record)."""
    return authenticate(Incoming.from_scope(request.scope, request.receive).headers, settings)


CallerDep = Annotated[str, Depends(require_caller)]
