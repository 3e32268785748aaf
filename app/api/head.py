"""``HEAD`` wherever ``GET`` is served (RFC 9110 9.3.2): the same status and headers as the
``GET`` (its ``Content-Length`` included), and no body. Load balancers and uptime checkers
probe ``/healthz``, ``/readyz`` and ``/v1/models`` so; the admin API's ``GET`` routes take it
too, their key checked as for the ``GET``.

Starlette's ``Route`` adds ``HEAD`` to a route that takes ``GET``; FastAPI's ``APIRoute`` does
not (fastapi/fastapi#1773), and putting ``HEAD`` in a route's methods makes FastAPI's OpenAPI
document a second operation under the same id (a "Duplicate Operation ID" warning, and an id
that changes with set order). So a ``HEAD`` request on a path a route serves with ``GET`` (and
none with ``HEAD``) is served here, before FastAPI routes it, as that ``GET``, with the body
dropped on the way out. A path that takes neither answers ``HEAD`` as before (404, or 405 with
``Allow``, ``app.api.errors``).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a 405 checks its path for."""


def takes(app: FastAPI, scope: Scope, method: str) -> bool:
    """Whether a route of ``app`` takes the path of ``scope`` with ``method`` (Starlette's
    public ``BaseRoute.matches``, on a copy of the scope)."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] == Match.FULL for route in app.router.routes)


def allowed(app: FastAPI, scope: Scope) -> list[str]:
    """The methods ``app`` takes on the path of ``scope``, in ``PROBED``'s order, ``HEAD``
    wherever ``GET`` is."""
    found = [method for method in PROBED if takes(app, scope, method)]
    if "GET" in found and "HEAD" not in found:
        found.insert(found.index("GET") + 1, "HEAD")
    return found


async def serve_head(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the ``HEAD`` request ``scope`` with ``app``: as its path's ``GET`` without the
    body when a route takes ``GET`` there and none ``HEAD``; else as it is."""
    if takes(app, scope, "HEAD") or not takes(app, scope, "GET"):
        await app(scope, receive, send)
        return
    done = False

    async def headers_only(message: Message) -> None:
        # The first body message ends the response, empty; whatever the GET still sends (a
        # stream's next chunks) goes nowhere, and the server then reports the request over.
        nonlocal done
        if done:
            return
        if message["type"] == "http.response.body":
            done = True
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    await app({**scope, "method": "GET"}, receive, headers_only)
