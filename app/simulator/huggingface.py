"""Hugging Face's OpenAI-compatible chat routes: the Inference Providers router and TGI's
Messages API. Both answer through the shared chat handler (``app.simulator.chat``); this module
only plays what differs.

- ``POST /hf-router/v1/chat/completions`` (base URL ``<sim>/hf-router/v1``): the router. An HF
  token is required (``Authorization: Bearer``; 401 ``{"error": ...}`` without). The model id
  may end in ``:<provider>`` or a policy (``:fastest``, ``:cheapest``, ``:preferred``): accepted,
  checked to be a provider-shaped name (400 otherwise), and echoed back in ``model`` (when the
  simulator serves a fixed model list, the id is checked and echoed without its suffix).
- ``POST /tgi/v1/chat/completions`` (an Inference Endpoint at ``<sim>/tgi``): TGI's Messages API.
  A token is required (a protected endpoint). TGI's request types are enforced as its server's
  JSON parsing does (422 ``validation``): ``stop`` must be a list, ``logit_bias`` a list of
  numbers, ``max_tokens`` and ``max_completion_tokens`` not both (TGI reads the second as an
  alias of the first: a duplicate field), ``response_format`` TGI's grammar (``{"type":
  "json"|"json_object", "value": <schema>}``, ``{"type": "json_schema", "value": {"schema":
  ...}}`` or ``{"type": "regex", "value": ...}``, so OpenAI's ``{"type": "json_schema",
  "json_schema": ...}`` is refused), and a grammar together with ``tools`` is refused ("Grammar
  and tools are mutually exclusive"). ``top_p`` must be > 0 and < 1, as TGI validates it for
  ``/generate`` too (422 ``validation``). The grammar is then handed to the shared handler in
  OpenAI's form, so the answer is its instance. A stop sequence ends the answer as TGI ends it:
  the text keeps the matched sequence, and ``finish_reason`` is ``stop_sequence`` (TGI's
  OpenAI-compliant reasons rename only ``eos_token``, to ``stop``).

  What else TGI's router (``router/src/lib.rs``, ``chat.rs``) does with a request is played too:
  a message's body is an untagged enum whose first variant is ``{content}`` and second
  ``{tool_calls}``, so a message holding both (``content`` a string or a list, even ``""``) is
  read as content alone and its ``tool_calls`` are dropped without a word (the prompt then counts
  no arguments for them); a function tool's ``parameters`` (TGI's alias of ``arguments``) is
  required (422 ``missing field `arguments```); ``presence_penalty`` becomes TGI's
  ``repetition_penalty = presence_penalty + 2.0``, refused when not strictly positive (422, as
  TGI validates ``repetition_penalty``). The answer is shaped as TGI builds it (``TGI_WIRE``):
  an empty ``id`` (on every chunk of a stream, the usage chunk too), a non-streamed tool call's
  id ``"0"`` and a streamed one's the highest numeric tool-call id of the conversation plus one
  (else a UUID), ``description: null`` beside a called function's ``name``, ``system_fingerprint``
  ``"<version>-native"``, and none of OpenAI's ``refusal``, ``annotations`` or usage
  ``*_details``.
"""

from __future__ import annotations

import re
from typing import Any

from app.simulator.asgi import Request, SimError
from app.simulator.chat import Wire, chat
from app.simulator.core import Route, Sim

_SUFFIX = re.compile(r"^[a-z0-9][a-z0-9-]*$")
UNAUTHORIZED = "Invalid credentials in Authorization header"
TGI_WIRE = Wire({"stop": "stop", "stop_sequence": "stop_sequence", "length": "length",
                 "tool": "tool_calls"}, keeps_stop=True, tgi=True)
"""TGI's Messages API: ``stop_sequence`` and the matched sequence kept in the text, TGI's ids
and answer fields (``Wire.tgi``)."""


def check_token(headers: dict[str, str]) -> None:
    """An HF token in ``Authorization: Bearer`` (any non-empty one), else 401."""
    value = headers.get("authorization", "")
    if not value.startswith("Bearer ") or not value[7:].strip():
        raise SimError(401, UNAUTHORIZED)


async def router_chat(sim: Sim, req: Request, route: Route) -> None:
    """The router: token, provider suffix, then the shared chat handler."""
    check_token(req.headers)
    body = req.json_object()
    model = body.get("model")
    if isinstance(model, str) and ":" in model:
        base, _, suffix = model.rpartition(":")
        if not base or not _SUFFIX.match(suffix):
            raise SimError(400, f"Invalid inference provider or policy suffix in model "
                           f"{model!r}.", param="model")
        if sim.models and model not in sim.models:
            body["model"] = base
    await chat(sim, req, route)


def _tgi_type_error(field: str, expected: str) -> SimError:
    return SimError(422, f"Failed to deserialize the JSON body into the target type: {field}: "
                    f"invalid type, expected {expected}", kind="validation")


def _openai_format(grammar: Any) -> dict[str, Any]:
    """TGI's grammar as the OpenAI ``response_format`` the shared handler reads."""
    if not isinstance(grammar, dict) or "value" not in grammar:
        raise _tgi_type_error("response_format", "a grammar {type, value}")
    kind, value = grammar.get("type"), grammar["value"]
    if kind in ("json", "json_object"):
        schema = value
    elif kind == "json_schema" and isinstance(value, dict):
        schema = value.get("schema")
    elif kind == "regex" and isinstance(value, str):
        return {"type": "json_schema", "json_schema": {"schema": {"type": "string",
                                                                  "pattern": value}}}
    else:
        raise _tgi_type_error("response_format", "one of json, json_object, json_schema, regex")
    if not isinstance(schema, dict):
        raise _tgi_type_error("response_format.value", "a JSON schema object")
    return {"type": "json_schema", "json_schema": {"schema": schema}}


def _tgi_messages(messages: Any) -> None:
    """Each message as TGI's ``MessageBody`` reads it (in place): ``content`` (a string or a
    list) wins over ``tool_calls``, which are then dropped."""
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict) and "tool_calls" in message \
                and isinstance(message.get("content"), (str, list)):
            del message["tool_calls"]


def _tgi_tools(tools: Any) -> None:
    """Each function tool has its ``parameters`` (TGI's ``FunctionDefinition.arguments``, no
    default), else TGI's 422."""
    for index, tool in enumerate(tools if isinstance(tools, list) else ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" not in function \
                and "arguments" not in function:
            raise SimError(422, "Failed to deserialize the JSON body into the target type: "
                           f"tools[{index}].function: missing field `arguments`",
                           kind="validation")


async def tgi_chat(sim: Sim, req: Request, route: Route) -> None:
    """TGI's Messages API: token, TGI's request types, then the shared chat handler."""
    check_token(req.headers)
    body = req.json_object()
    _tgi_messages(body.get("messages"))
    _tgi_tools(body.get("tools"))
    presence = body.get("presence_penalty")
    if isinstance(presence, (int, float)) and not isinstance(presence, bool) \
            and presence + 2.0 <= 0:
        # TGI: ``repetition_penalty = presence_penalty.map(|x| x + 2.0)``, then validated.
        raise SimError(422, "Input validation error: `repetition_penalty` must be strictly "
                       "positive", kind="validation")
    if "max_tokens" in body and "max_completion_tokens" in body:
        # TGI's ChatRequest takes max_completion_tokens as a serde alias of max_tokens.
        raise SimError(422, "Failed to deserialize the JSON body into the target type: "
                       "duplicate field `max_tokens`", kind="validation")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, list)
                                 and all(isinstance(s, str) for s in stop)):
        raise _tgi_type_error("stop", "a sequence of strings")
    top_p = body.get("top_p")
    if top_p is not None and not isinstance(top_p, bool) and isinstance(top_p, (int, float)) \
            and not 0 < top_p < 1:
        # TGI's Messages API passes top_p to the same validation as /generate.
        raise SimError(422, "Input validation error: `top_p` must be > 0.0 and < 1.0",
                       kind="validation")
    bias = body.get("logit_bias")
    if bias is not None and not (isinstance(bias, list)
                                 and all(isinstance(b, (int, float)) for b in bias)):
        raise _tgi_type_error("logit_bias", "a sequence of numbers")
    grammar = body.get("response_format")
    if grammar is not None:
        if body.get("tools"):
            raise SimError(422, "Tool error: Grammar and tools are mutually exclusive",
                           kind="tool_error")
        body["response_format"] = _openai_format(grammar)
    await chat(sim, req, route, wire=TGI_WIRE)
