"""Serving one model call: the single place every model call is opened, answered and closed.

Both dispatch paths (the fast lane and the FastAPI routes) and the admission limit's refusals
come through ``serve_call``: it opens the call (``Gateway.open``), lets the call own its record
(``async with call``: exactly one finish), runs the pipeline's authentication and the endpoint's
``serve``, and turns any error into OpenAI's error shape with the call's headers. It is the last
line of defence for model calls: an unexpected exception is logged and answered 500 here, and
nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.responses import Response

from app import errors
from app.api.errors import error_response, last_resort
from app.api.incoming import Incoming
from app.gateway import Gateway
from app.pipeline import ModelCall

log = logging.getLogger("switchboard.api")

Serve = Callable[[ModelCall, Gateway], Awaitable[Response]]
"""Parse the body into ``call.request``, run the pipeline, answer."""
RenderError = Callable[[errors.GatewayError, ModelCall], Response]
"""An error as the endpoint's dialect shapes it."""


def openai_error(exc: errors.GatewayError, call: ModelCall) -> Response:
    return error_response(exc, call=call)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A model-call endpoint: how it serves a call, and how its errors look."""

    serve: Serve
    error: RenderError = openai_error


async def serve_call(gateway: Gateway, incoming: Incoming, endpoint: Endpoint) -> Response:
    """The answer to one model call (see the module docstring)."""
    call = gateway.open(incoming)
    try:
        async with call:
            await call.snapshot.pipeline.arrive(call)
            return await endpoint.serve(call, gateway)
    except errors.GatewayError as exc:
        return endpoint.error(exc, call)
    except Exception:  # noqa: BLE001 - the last line of defence (recorded as a 500 by the call)
        return endpoint.error(last_resort(incoming.path), call)
