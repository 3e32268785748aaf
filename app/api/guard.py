"""``GuardedRoute``: the route class of the FastAPI routes that take a body (``POST
/v1/feedback``, the admin API's ``POST``/``PATCH``/``PUT``). Their caller is checked and their
body read, as a model call's is, before FastAPI reads it.

FastAPI reads and validates a route's whole body before it solves the route's dependencies
(``require_caller``, ``require_admin``). Left to it, a client with no key could send any body:
300 MB were read whole into memory (and the process kept the memory), a slow body held one of
the ``max_concurrency`` slots for as long as it dribbled in, and a body that did not validate
was a 400 before the missing key was a 401. A guarded route, as the fast lane does: checks the
caller from the headers (401/403/503 as ``require_caller`` and ``require_admin`` answer) before
a byte of the body is read; then reads the body with ``Incoming.body``: over
``limits.max_body_bytes`` a 413 (by its ``Content-Length`` at once, a chunked one as it
arrives), compressed a 415, not arrived within ``SWITCHBOARD_BODY_TIMEOUT_S`` a 408
``body_timeout``; not UTF-8 a 400 saying at which byte (``app.api.wire.check_utf8``, as a
model call's: FastAPI's own answer is "There was an error parsing the body"); nested deeper
than ``GUARDED_MAX_DEPTH`` levels a 400 ``nesting_too_deep`` naming where, in a model call's
words (past ~990 levels FastAPI's parser said only "There was an error parsing the body").
FastAPI then parses the body from memory, and the dependencies run as before.

A route class (FastAPI's documented hook, a ``get_route_handler`` that wraps the route's own)
rather than an ASGI layer in front: FastAPI has picked the route by then, so a path no route
serves is still a 404 and a method a path does not take a 405, and the route's own dependency
tree says which check it needs. Every router whose routes take a body uses it
(tests/api/test_guarded_bodies.py checks every such route of the app).

FastAPI parses a body as JSON only when it is sent as ``Content-Type: application/json`` (its
guard against cross-site posts, which cannot send that type without a CORS preflight). A guarded
route reads a JSON body whatever its ``Content-Type``, as the model calls do (``curl -d`` sends
``application/x-www-form-urlencoded``): a cross-site post cannot send the ``Authorization``
header these routes need, and without a master key ``app.api.loopback`` refuses a foreign
``Origin`` before any route runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope

from app.api.deps import check_admin, require_admin, require_caller
from app.api.incoming import Incoming
from app.api.wire import GUARDED_MAX_DEPTH, check_depth, check_utf8
from app.resources import resources_of

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class GuardedRoute(APIRoute):
    """An ``APIRoute`` whose body, when it takes one, is read only for a caller its
    dependencies would admit, and within the gateway's size and time limits, as JSON whatever
    its ``Content-Type``."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:  # FastAPI reads no body for it
            return handler
        needs = _dependencies(self.dependant)
        authenticate, admin_only = require_caller in needs, require_admin in needs

        async def guarded(request: Request) -> Response:
            resources = resources_of(request)
            incoming = Incoming.from_scope(request.scope, request.receive)
            if authenticate:
                caller = await resources.authenticator.identify(incoming.headers)
                if admin_only:
                    check_admin(caller, client=None if request.client is None
                                else request.client.host)
            body = await incoming.body(limit=resources.gateway.limits.max_body_bytes)
            check_utf8(body)
            check_depth(body, max_depth=GUARDED_MAX_DEPTH)
            return await handler(Request(_as_json(request.scope),
                                         _replay(body, request.receive)))

        return guarded


def _as_json(scope: Scope) -> Scope:
    """``scope`` with its ``Content-Type`` header (if any) replaced by ``application/json``."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _dependencies(dependant: Dependant) -> set[Callable[..., Any]]:
    """Every callable ``dependant`` depends on, through its whole tree (a handful of nodes)."""
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _dependencies(sub)
    return found


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the request's body, already read, as its first message; later calls
    (a disconnect) go to ``receive``."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
