"""Loopback-only mode (no ``SWITCHBOARD_MASTER_KEY``): the gateway serves whoever reaches it,
meant to be this machine's own users and programs. A web page open in a browser on the machine
could reach it too, and spend the provider keys in the environment or read the admin API:
through DNS rebinding (a name of the page's own that it then points at 127.0.0.1, so the request's
``Host`` is that name) or a cross-site request (its ``Origin`` is the page's; a ``text/plain``
POST needs no CORS preflight). ``LoopbackOnly`` answers both with 403 before anything else: a
``Host`` that is not a loopback name or address (``localhost``, 127.0.0.0/8, ``::1``) or this
machine's own name, and an ``Origin`` that is not one either (``null`` included: sandboxed
frames and ``file:`` pages send it). Clients that are not browsers send no ``Origin``, and a
``Host`` of the address they dial.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api.admission import refuse
from app.settings import is_loopback


class LoopbackOnly:
    """ASGI wrapper: passes on the requests whose ``Host`` and ``Origin`` are loopback."""

    def __init__(self, inner: ASGIApp, *, app: FastAPI) -> None:
        self.inner = inner
        self.app = app
        """The FastAPI app (resources in its ``state``), as on ``Admission``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = foreign(scope["headers"])
            if problem is not None:
                await refuse(self.app, errors.PermissionDenied(
                    f"{problem}: without SWITCHBOARD_MASTER_KEY this gateway answers only "
                    "requests to a loopback address from programs on its machine (a web page "
                    "could reach it too). Call it at 127.0.0.1 or localhost, or set a master "
                    "key.", code="not_loopback"), scope, receive, send)
                return
        await self.inner(scope, receive, send)


_OWN_NAME = socket.gethostname().lower().rstrip(".")
"""This machine's host name (a program on it may call it so: Debian points it at 127.0.1.1);
not its fully qualified name, which could take a DNS query to learn."""


def _local(host: str) -> bool:
    return is_loopback(host) or (host == _OWN_NAME and host != "")


def foreign(headers: list[tuple[bytes, bytes]]) -> str | None:
    """What about ``headers`` names a place that is not this machine's loopback (``Host`` or
    ``Origin``), or ``None`` when nothing does."""
    for name, value in headers:
        if name == b"host":
            if not _local(_host_of(value.decode("latin-1"))):
                return "the request's Host is not a loopback address"
        elif name == b"origin":
            origin = value.decode("latin-1").strip()
            try:
                host = urlsplit(origin).hostname
            except ValueError:
                host = None
            if origin == "null" or host is None or not _local(host.rstrip(".")):
                return "the request comes from a web page (Origin) that is not on loopback"
    return None


def _host_of(host: str) -> str:
    """The name or address of a ``Host`` header: ``[::1]:8080`` -> ``::1``, ``A.:80`` -> ``a``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).rstrip(".")
