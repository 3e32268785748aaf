"""The reference: the least a Python gateway can do, forward the body bytes and relay the reply.

A bare Starlette app on uvicorn (uvloop, httptools) with one aiohttp session, the same stack the
gateway runs on, so the benchmark's ratio is the price of everything the gateway does on top.
Server-sent events are relayed chunk by chunk as they arrive; anything else is read whole.
Usage: ``python -m bench.forwarder --port 9000 --upstream http://127.0.0.1:8000/v1``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build_app(upstream: str) -> Starlette:
    """An app that POSTs each request body to ``upstream``/chat/completions and relays the reply."""
    url = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """One outbound session for the life of the app."""
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    async def forward(request: Request) -> Response:
        """Forward the body; relay the answer (streamed when it is server-sent events)."""
        body = await request.body()
        reply = await sessions[0].post(url, data=body, headers={"Content-Type": "application/json"})
        kind = reply.headers.get("Content-Type", "")
        if not kind.startswith("text/event-stream"):
            async with reply:
                return Response(await reply.read(), status_code=reply.status, media_type=kind)

        async def relay() -> AsyncIterator[bytes]:
            """The upstream body as it arrives; the upstream response is released at the end."""
            async with reply:
                async for chunk in reply.content.iter_any():
                    yield chunk

        return StreamingResponse(relay(), status_code=reply.status, media_type=kind)

    return Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    """Serve the forwarder on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    args = parser.parse_args()
    uvicorn.run(build_app(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, proxy_headers=False, log_level="warning")


if __name__ == "__main__":
    main()
