"""Amazon SageMaker runtime under ``/sagemaker``: ``POST /sagemaker/endpoints/{name}/invocations``
and ``/invocations-response-stream``, in front of a simulated LLM container.

SigV4 for service ``sagemaker`` is verified (``aws_auth``; no API keys: SageMaker has none).
Injected faults (``X-Return-Error``...) are SageMaker's own (429: ``ThrottlingException``,
``{"Message"}`` bodies, the type in ``x-amzn-ErrorType``). The container reads the body as
TGI and vLLM/LMI containers do at their ``/invocations``: ``inputs`` -> TGI's generate route
(``"stream": true`` streams), ``messages`` -> a chat completion, ``prompt`` -> an OpenAI text
completion, each answered by the simulator's own dialect for it. An endpoint whose name holds
``tgi`` (``my-tgi-endpoint``) runs TGI's container, so its chat is TGI's Messages API
(``huggingface.tgi_chat``: TGI's grammar as ``response_format``, its 422s); any other endpoint's
chat is vLLM's. A container's
refusal is wrapped as SageMaker wraps it: a 424 ``ModelError`` with ``OriginalStatusCode`` and
``OriginalMessage``. With a response stream, every piece of the container's output travels as
the bytes of a ``PayloadPart`` event (``application/vnd.amazon.eventstream``).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson

from app.simulator import aws_eventstream as es
from app.simulator import huggingface, huggingface_tgi
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.aws_auth import SAGEMAKER_TYPES, aws_error_headers, segment, verify
from app.simulator.chat import chat
from app.simulator.completions import completions
from app.simulator.core import Route, Sim, faulted, generation_knobs

PREFIX = "/sagemaker/endpoints/"
ROUTE = Route("sagemaker")
OPERATIONS = ("invocations", "invocations-response-stream")
NAMESPACE = "com.amazonaws.sagemaker"


def parse_path(path: str) -> tuple[str, str] | None:
    """(endpoint name, operation) of a ``/sagemaker/endpoints/{name}/{operation}`` path."""
    if not path.startswith(PREFIX):
        return None
    name, _, operation = path[len(PREFIX):].rpartition("/")
    return (name, operation) if name and "/" not in name and operation in OPERATIONS else None


def plays_tgi(name: str) -> bool:
    """Whether endpoint ``name`` runs TGI's container (its name says ``tgi``): the simulator
    cannot see an endpoint's image, so the name stands for it."""
    return "tgi" in name.lower()


def payload_part(data: bytes) -> bytes:
    return es.message({":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                       ":message-type": "event"}, data)


def _streamed(req: Request) -> None:
    """Send the container's answer as PayloadPart events."""
    send = req.send

    async def reframe(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": es.HEADERS}
        elif message.get(es.UNWRAPPED):
            message = {k: v for k, v in message.items() if k != es.UNWRAPPED}
        elif message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": payload_part(message["body"])}
        await send(message)

    req.send = reframe


async def handle(sim: Sim, req: Request, route: Route) -> None:
    """Authenticate, apply SageMaker's faults, then let the container answer."""
    parsed = parse_path(req.path)
    assert parsed is not None  # routed here only when it parses
    name, operation = parsed
    try:
        verify(req, service="sagemaker", encoded_path=f"{PREFIX}{segment(name)}/{operation}")
        knobs = generation_knobs(sim, req)
        if await faulted(sim, req, knobs):
            return
        body = req.json_object()
    except SimError as err:
        raise aws_error_headers(err, types=SAGEMAKER_TYPES, namespace=NAMESPACE) from None
    framed = operation == "invocations-response-stream"
    if "inputs" in body:
        handler, inner = huggingface_tgi.compat_generate, Route("tgi", in_payload_parts=framed)
    elif "messages" in body and plays_tgi(name):
        handler, inner = huggingface.tgi_chat, Route("tgi-chat", in_payload_parts=framed)
    elif "messages" in body:
        handler, inner = chat, Route("vllm", in_payload_parts=framed)
    elif "prompt" in body:
        handler, inner = completions, Route("vllm", in_payload_parts=framed)
    else:
        raise aws_error_headers(SimError(400, "The container could not read the body: "
                                         "expected inputs, messages or prompt",
                                         kind="ValidationError"),
                                types=SAGEMAKER_TYPES, namespace=NAMESPACE)
    if framed:
        _streamed(req)
    try:
        await handler(sim, _to_container(req), inner)
    except SimError as err:
        await _model_error(req, err, sim.error_body(inner, err), name)


_DROPPED = frozenset({b"authorization", b"x-amz-date", b"x-amz-security-token"})


def _to_container(req: Request) -> Request:
    """The request as the container sees it: SageMaker keeps the caller's credentials. The
    simulator's TGI dialect plays an HF endpoint behind HF's proxy, which wants a token: an
    internal placeholder stands in for the one that proxy would have checked."""
    headers = [(k, v) for k, v in req.raw_headers if k.lower() not in _DROPPED]
    headers.append((b"authorization", b"Bearer sagemaker-container"))
    return Request(method=req.method, path=req.path, query=req.query, raw_headers=headers,
                   body=req.body, receive=req.receive, send=req.send, started=req.started)


async def _model_error(req: Request, err: SimError, original: bytes, name: str) -> None:
    """The container refused: SageMaker's 424 ``ModelError`` wrapping its answer."""
    text = original.decode()
    message = (f"Received client error ({err.status}) from primary with message \"{text}\". "
               f"See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
               f"#logEventViewer:group=/aws/sagemaker/Endpoints/{name} in account 123456789012 "
               "for more information.")
    body = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "Message": message,
            "OriginalMessage": text, "OriginalStatusCode": err.status,
            "LogStreamArn": f"arn:aws:logs:us-east-1:123456789012:log-group:"
                            f"/aws/sagemaker/Endpoints/{name}"}
    await send_json(req.send, 424, orjson.dumps(body),
                    [(b"x-amzn-errortype", f"ModelError:http://internal.amazon.com/coral/"
                                           f"{NAMESPACE}/".encode())])
