"""Azure OpenAI: ``/openai/deployments/{deployment}/{chat/completions,completions,embeddings}``.

Each needs the ``api-version`` query parameter (400 without) and an ``api-key`` header (401
without); the model is the deployment name. Bodies and errors are OpenAI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.simulator.asgi import Request, SimError
from app.simulator.chat import chat
from app.simulator.completions import completions
from app.simulator.core import Route, Sim
from app.simulator.embeddings import embeddings

PREFIX = "/openai/deployments/"
OPERATIONS: dict[str, Callable[[Sim, Request, Route], Awaitable[None]]] = {
    "chat/completions": chat, "completions": completions, "embeddings": embeddings}


def parse_path(path: str) -> tuple[str, str] | None:
    """(deployment, operation) of an Azure path, or None when it is not one we serve."""
    deployment, _, operation = path[len(PREFIX):].partition("/")
    if not deployment or operation not in OPERATIONS:
        return None
    return deployment, operation


def check_request(req: Request) -> None:
    """Azure's ``api-version`` and ``api-key`` requirements."""
    if not req.query_param("api-version"):
        raise SimError(400, "Missing required query parameter 'api-version'. Please provide a "
                       "supported api-version.", kind="invalid_request_error")
    if not req.headers.get("api-key"):
        raise SimError(401, "Access denied due to missing subscription key. Make sure to include "
                       "subscription key when making requests to an API.")


async def azure(sim: Sim, req: Request, route: Route) -> None:
    """Check Azure's requirements, then serve the operation as OpenAI does."""
    check_request(req)
    parsed = parse_path(req.path)
    if parsed is None:  # the router only sends parseable paths here
        raise SimError(404, "Resource not found")
    await OPERATIONS[parsed[1]](sim, req, route)
