"""The simulator's ASGI application and its uvicorn runner.

Routes (one process serves every dialect):

- OpenAI / vLLM: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``;
  ``GET /v1/models``.
- Azure OpenAI: ``POST /openai/deployments/{deployment}/`` + the same three operations;
  Microsoft Entra ID's ``POST /{tenant}/oauth2/v2.0/token`` and App Service's managed-identity
  ``GET /msi/token`` (``azure_entra``).
- Anthropic: ``POST /v1/messages``.
- Replicate: ``POST /v1/models/{owner}/{name}/predictions``, ``/v1/deployments/{owner}/{name}/
  predictions``, ``/v1/predictions``; ``GET /v1/predictions/{id}`` (and ``/stream``); ``POST
  /v1/predictions/{id}/cancel`` (routed by method and prefix after the exact routes).
- Cohere: ``POST /v2/chat``, ``/v2/embed``.
- AI21: ``POST /studio/v1/chat/completions``.
- vLLM extras: ``GET /health``, ``/version``, ``/metrics``; ``POST /tokenize``.
- Hugging Face: the router's ``POST /hf-router/v1/chat/completions``; a TGI endpoint at ``/tgi``
  (``POST /tgi``, ``/tgi/generate``, ``/tgi/generate_stream``, ``/tgi/v1/chat/completions``); a
  TEI endpoint's ``POST /tei/embed``.
- AWS Bedrock runtime: ``POST /bedrock/model/{modelId}/converse``, ``/converse-stream``,
  ``/invoke``, ``/invoke-with-response-stream`` (SigV4 or a Bedrock API key; see ``bedrock``).
- AWS SageMaker runtime: ``POST /sagemaker/endpoints/{name}/invocations``,
  ``/invocations-response-stream`` (SigV4; see ``sagemaker``).
- Gemini API: ``POST /gemini/v1beta/models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse``, ``:batchEmbedContents`` (``gemini``; routed by prefix).
- Vertex AI: ``POST /vertex/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:``
  ``generateContent``, ``streamGenerateContent``, ``predict`` (routed by prefix), and the OAuth2
  token endpoint ``POST /vertex/token`` (``vertex``); Claude's ``.../publishers/anthropic/
  models/{model}:rawPredict``, ``:streamRawPredict`` (``vertex_anthropic``).
- Admin: ``/_sim/state``, ``/_sim/stats``, ``/_sim/requests``, ``/_sim/reset``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn

from app.simulator import (
    admin,
    ai21,
    anthropic,
    azure,
    azure_entra,
    bedrock,
    cohere,
    gemini,
    huggingface,
    huggingface_tei,
    huggingface_tgi,
    replicate,
    sagemaker,
    vertex,
    vllm,
)
from app.simulator.asgi import (
    Receive,
    Request,
    Scope,
    Send,
    SimError,
    read_body,
    send_json,
)
from app.simulator.chat import chat
from app.simulator.completions import completions
from app.simulator.core import Route, Sim
from app.simulator.embeddings import embeddings
from app.simulator.options import SimOptions

Handler = Callable[[Sim, Request, Route], Awaitable[None]]
# (handler, route, counts as an in-flight generation)
Entry = tuple[Handler, Route, bool]

_OPENAI = Route("vllm")
_ROUTES: dict[tuple[str, str], Entry] = {
    ("POST", "/v1/chat/completions"): (chat, _OPENAI, True),
    ("POST", "/v1/completions"): (completions, _OPENAI, True),
    ("POST", "/v1/embeddings"): (embeddings, _OPENAI, True),
    ("GET", "/v1/models"): (vllm.models, _OPENAI, False),
    ("POST", "/v1/messages"): (anthropic.messages, Route("anthropic"), True),
    ("POST", "/v2/chat"): (cohere.chat, Route("cohere"), True),
    ("POST", "/v2/embed"): (cohere.embed, Route("cohere"), True),
    ("POST", ai21.PATH): (ai21.chat_completions, ai21.ROUTE, True),
    ("GET", "/health"): (vllm.health, _OPENAI, False),
    ("GET", "/version"): (vllm.version, _OPENAI, False),
    ("GET", "/metrics"): (vllm.metrics, _OPENAI, False),
    ("POST", "/tokenize"): (vllm.tokenize, _OPENAI, False),
    ("POST", "/hf-router/v1/chat/completions"): (huggingface.router_chat, Route("hf-router"),
                                                  True),
    ("POST", "/tgi"): (huggingface_tgi.compat_generate, Route("tgi"), True),
    ("POST", "/tgi/generate"): (huggingface_tgi.generate, Route("tgi"), True),
    ("POST", "/tgi/generate_stream"): (huggingface_tgi.generate_stream, Route("tgi"), True),
    ("POST", "/tgi/v1/chat/completions"): (huggingface.tgi_chat, Route("tgi-chat"), True),
    ("POST", "/tei/embed"): (huggingface_tei.embed, Route("tei"), True),
    ("POST", vertex.TOKEN_PATH): (vertex.token, vertex.ROUTE, False),
    ("GET", azure_entra.MSI_PATH): (azure_entra.managed_identity, Route("azure"), False),
    ("POST", "/_sim/state"): (admin.set_state, _OPENAI, False),
    ("GET", "/_sim/stats"): (admin.stats, _OPENAI, False),
    ("GET", "/_sim/requests"): (admin.requests, _OPENAI, False),
    ("POST", "/_sim/reset"): (admin.reset, _OPENAI, False),
}
_PATHS = frozenset(path for _, path in _ROUTES)
_CUT_MESSAGE = "ASGI callable returned without completing response."


class SimulatorApp:
    """The ASGI callable: routes by exact (method, path), Azure paths by prefix."""

    def __init__(self, options: SimOptions) -> None:
        self.sim = Sim(options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    def _route(self, method: str, path: str) -> Entry | None:
        entry = _ROUTES.get((method, path))
        if entry is None and method == "POST" and path.startswith(azure.PREFIX):
            parsed = azure.parse_path(path)
            if parsed is not None:
                entry = (azure.azure, Route("azure", deployment=parsed[0],
                                            deployed_model=azure.DEPLOYED_MODELS[parsed[1]]),
                         True)
        if entry is None and method == "POST" and path.endswith(azure_entra.TOKEN_SUFFIX):
            entry = (azure_entra.token, Route("azure"), False)
        if entry is None and method == "POST" and bedrock.parse_path(path) is not None:
            entry = (bedrock.handle, bedrock.ROUTE, True)
        if entry is None and method == "POST" and sagemaker.parse_path(path) is not None:
            entry = (sagemaker.handle, sagemaker.ROUTE, True)
        if entry is None and gemini.match(method, path):
            entry = (gemini.handle, gemini.ROUTE, True)
        if entry is None and vertex.match(method, path):
            entry = (vertex.handle, vertex.ROUTE, True)
        if entry is None and replicate.match(method, path) is not None:
            entry = (replicate.handle, replicate.ROUTE, False)
        return entry

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        body = await read_body(receive)
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        query = scope["query_string"].decode("latin-1")
        state = self.sim.state
        if not path.startswith("/_sim/"):
            state.record(path=path, query=query, headers=raw_headers, body=body)
        entry = self._route(method, path)
        if entry is None:
            status, detail = (405, b'{"detail":"Method Not Allowed"}') if path in _PATHS \
                else (404, b'{"detail":"Not Found"}')
            await send_json(send, status, detail)
            return
        handler, route, generation = entry
        req = Request(method=method, path=path, query=query, raw_headers=raw_headers, body=body,
                      receive=receive, send=send, started=started)
        if generation:
            state.in_flight += 1
        try:
            await handler(self.sim, req, route)
        except SimError as err:
            await send_json(send, err.status, self.sim.error_body(route, err), err.headers)
        finally:
            if generation:
                state.in_flight -= 1


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to build or tear down: acknowledge startup and shutdown (also what the tests'
    other loopback ASGI upstreams answer)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(options: SimOptions) -> SimulatorApp:
    """A fresh simulator (its own state) playing ``options``."""
    return SimulatorApp(options)


class _DropIntentionalCuts(logging.Filter):
    """``X-Sim-Cut-After`` ends responses unfinished on purpose; uvicorn logs each as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _CUT_MESSAGE


def serve(*, host: str, port: int, options: SimOptions) -> None:
    """Run the simulator with uvicorn (uvloop, httptools, no access log) until interrupted; a
    request offering ``Upgrade: h2c`` (``curl --http2``) is answered over HTTP/1.1 with its body,
    as the gateway answers it (``app.serving.UpgradeIgnoringProtocol``)."""
    from app.serving import UpgradeIgnoringProtocol  # the gateway's server, only when serving

    config = uvicorn.Config(create_app(options), host=host, port=port, loop="uvloop",
                            http=UpgradeIgnoringProtocol, lifespan="on", access_log=False,
                            log_level="warning", proxy_headers=False)
    # uvicorn.Config has configured logging by now, so the filter survives.
    logging.getLogger("uvicorn.error").addFilter(_DropIntentionalCuts())
    uvicorn.Server(config).run()
