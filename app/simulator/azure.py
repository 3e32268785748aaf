"""Azure OpenAI: ``/openai/deployments/{deployment}/{chat/completions,completions,embeddings}``.

Each needs the ``api-version`` query parameter (400 without) and either an ``api-key`` header
or ``Authorization: Bearer`` with a Microsoft Entra ID token the simulator issued (``azure_entra``;
a bad one is Azure's 401 ``{"statusCode", "message"}``); neither is a 401 too. Bodies and other
errors are OpenAI's. An answer's ``model`` is, as Azure's is, the model deployed, not the
deployment's name: every deployment plays ``DEPLOYED_MODELS``' model for its operation
(``X-Sim-Model`` and the drift's ``model`` still win). Chat answers carry Azure's content filter
verdicts (``WIRE``, every one "safe"): ``prompt_filter_results``, and ``content_filter_results``
on each choice; a chat stream opens, as Azure's does, with a chunk holding the prompt's verdict
alone (empty ``id``, ``model`` and ``object``, ``created`` 0, ``choices: []``).
``X-Sim-Azure-Filter: async`` plays a deployment whose content filter streams in asynchronous
mode (``ASYNC_WIRE``): its stream's verdicts come in annotation chunks with no ``delta`` and the
empty envelope (``Wire.async_filter``); any other value is a 400. A chat request on an
api-version before 2024-09-01 carrying ``max_completion_tokens`` or ``stream_options`` is Azure's
400 "Unrecognized request argument supplied" (``check_version_fields``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from app.simulator.asgi import Request, SimError
from app.simulator.azure_entra import bearer_accepted, refuse_bearer
from app.simulator.chat import OPENAI, Wire, chat
from app.simulator.completions import completions
from app.simulator.core import Route, Sim
from app.simulator.embeddings import embeddings

PREFIX = "/openai/deployments/"
_SAFE = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
WIRE = Wire(OPENAI.finishes, content_filter=_CONTENT_FILTER, prompt_filter={
    **_CONTENT_FILTER, "jailbreak": {"filtered": False, "detected": False}})
"""Azure's chat answers: OpenAI's, annotated with the content filter's verdicts."""
ASYNC_WIRE = replace(WIRE, async_filter=True)
"""Azure's chat answers from a deployment whose filter runs asynchronously (streams differ)."""
OPERATIONS: dict[str, Callable[[Sim, Request, Route], Awaitable[None]]] = {
    "chat/completions": partial(chat, wire=WIRE), "completions": completions,
    "embeddings": embeddings}
DEPLOYED_MODELS = {"chat/completions": "gpt-4o-2024-08-06",
                   "completions": "gpt-35-turbo-instruct", "embeddings": "text-embedding-3-small"}
"""The model behind every deployment, by operation, named as Azure's answers name it."""


def parse_path(path: str) -> tuple[str, str] | None:
    """(deployment, operation) of an Azure path, or None when it is not one we serve."""
    deployment, _, operation = path[len(PREFIX):].partition("/")
    if not deployment or operation not in OPERATIONS:
        return None
    return deployment, operation


def check_request(req: Request) -> str | None:
    """Azure's ``api-version`` and credential requirements; the ``Authorization`` header to
    verify when the request authenticates with a bearer token rather than ``api-key``."""
    if not req.query_param("api-version"):
        raise SimError(400, "Missing required query parameter 'api-version'. Please provide a "
                       "supported api-version.", kind="invalid_request_error")
    headers = req.headers
    if headers.get("api-key"):
        return None
    authorization = headers.get("authorization")
    if not authorization:
        raise SimError(401, "Access denied due to missing subscription key. Make sure to include "
                       "subscription key when making requests to an API.")
    return authorization


NEW_FIELDS_SINCE = "2024-09-01"
"""The first api-version (2024-09-01-preview) whose chat takes ``NEW_FIELDS``."""
NEW_FIELDS = ("max_completion_tokens", "stream_options")


def check_version_fields(req: Request) -> None:
    """Azure's 400 for a chat field its (dated) api-version predates: ``max_completion_tokens``
    and ``stream_options`` came in 2024-09-01-preview ("Unrecognized request argument supplied:
    max_completion_tokens" before it, openai/openai-python#1724)."""
    version = req.query_param("api-version") or ""
    date = version[:10]
    if not (len(date) == 10 and date.replace("-", "").isdigit()) or date >= NEW_FIELDS_SINCE:
        return
    body = req.json_object()
    for field in NEW_FIELDS:
        if field in body:
            raise SimError(400, f"Unrecognized request argument supplied: {field}",
                           kind="invalid_request_error")


async def azure(sim: Sim, req: Request, route: Route) -> None:
    """Check Azure's requirements, then serve the operation as OpenAI does."""
    authorization = check_request(req)
    if authorization is not None and not bearer_accepted(authorization):
        await refuse_bearer(req)
        return
    parsed = parse_path(req.path)
    if parsed is None:  # the router only sends parseable paths here
        raise SimError(404, "Resource not found")
    if parsed[1] == "chat/completions":
        check_version_fields(req)
    mode = req.headers.get("x-sim-azure-filter")
    if mode is not None and mode.strip().lower() != "async":
        raise SimError(400, f"X-Sim-Azure-Filter must be 'async', got {mode!r}.")
    if mode is not None and parsed[1] == "chat/completions":
        await chat(sim, req, route, wire=ASYNC_WIRE)
        return
    await OPERATIONS[parsed[1]](sim, req, route)
