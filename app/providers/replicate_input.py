"""An OpenAI chat request -> the ``input`` object of a Replicate prediction.

Pure functions, no I/O. Replicate has no chat schema of its own: each model declares its input
fields. The families below are the common language models whose inputs were read on their
Replicate model pages; any other model gets an explicit ``input_map`` in the config.

==========  ==========================  ==========================================================
family      models (inferred by owner)  input fields written
==========  ==========================  ==========================================================
llama3      ``meta/meta-llama-3*``      ``prompt``, ``system_prompt``, ``max_tokens``,
                                        ``temperature``, ``top_p``, ``presence_penalty``,
                                        ``frequency_penalty``, ``stop_sequences``;
                                        ``prompt_template`` for multi-turn (below)
granite     ``ibm-granite/*``           ``prompt``, ``system_prompt``, ``max_tokens``,
                                        ``temperature``, ``top_p``, ``presence_penalty``,
                                        ``frequency_penalty``, ``stop_sequences``, ``seed``
claude      ``anthropic/*``             ``prompt``, ``system_prompt``, ``max_tokens``
gpt         ``openai/*``                ``messages`` (a list of ``{role, content}``),
                                        ``max_completion_tokens``, ``temperature``, ``top_p``,
                                        ``presence_penalty``, ``frequency_penalty``; and
                                        ``reasoning_effort`` for ``openai/o*`` (``REASONING``)
==========  ==========================  ==========================================================

A message's text parts are joined by newlines. How a conversation becomes one ``prompt``
(families without ``messages``):

- one user message (after any system messages): that message is the ``prompt`` and the system
  text the ``system_prompt``, so the model's own chat template wraps them;
- several turns, ``llama3``: the whole conversation rendered in Llama 3's chat markup
  (``<|start_header_id|>role<|end_header_id|>\\n\\ntext<|eot_id|>`` per message, then the
  assistant header) as ``prompt``, with ``prompt_template: "{prompt}"`` so Replicate does not
  wrap it again; the system text rides inside the markup;
- several turns, other families: a transcript, one ``User: ...`` / ``Assistant: ...`` paragraph
  per message, in order, as ``prompt`` (system text stays in ``system_prompt``).

Stop strings go to ``stop_sequences`` as Replicate's comma-separated list; a stop string that
itself holds a comma cannot be written that way and is refused (400, ``stop``).

Refused with 400 naming the parameter, because Replicate's predictions have no such thing and
dropping it would change the answer: ``tools`` / ``tool_choice`` (a non-empty tool list, or a
choice that asks for a call), ``response_format`` other than ``text``, audio output
(``modalities`` other than ``["text"]``, ``audio``), ``web_search_options``, ``n`` > 1,
``logprobs`` / ``top_logprobs``, content parts other than text (images, audio, files; an
assistant's earlier ``refusal`` part is its text), tool and function messages and assistant
tool calls,
``stop`` for a family (or map) without a stop input, a token limit for a map without one,
``reasoning_effort`` for a model (or map) without a ``reasoning_effort`` input (it changes the
answer of a model that reasons; OpenAI refuses it too for a model that does not).
Dropped, as sampling hints a family's schema lacks: ``temperature``, ``top_p``, ``seed``, the
penalties, ``logit_bias``, ``user``, ``metadata`` (``claude`` takes none of the sampling hints);
and OpenAI's ``service_tier`` and ``prediction`` (a billing tier and a latency hint that
Replicate's predictions have no field for; neither changes what the answer says).
The target's ``params`` and the config's fixed ``input`` values lie underneath the mapped fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app import errors
from app.providers import refusals
from app.providers.base import Json
from app.providers.refusals import refuse_outputs
from app.schemas import ChatRequest, Message

Family = Literal["llama3", "granite", "claude", "gpt"]

CANONICAL = ("prompt", "messages", "system", "max_tokens", "temperature", "top_p", "stop",
             "seed", "presence_penalty", "frequency_penalty", "reasoning_effort")
"""The request facts an ``input_map`` may name (each mapped to a model's input field)."""

_SAMPLING = {"temperature": "temperature", "top_p": "top_p",
             "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}

FAMILIES: dict[Family, dict[str, str]] = {
    "llama3": {"prompt": "prompt", "system": "system_prompt", "max_tokens": "max_tokens",
               "stop": "stop_sequences", **_SAMPLING},
    "granite": {"prompt": "prompt", "system": "system_prompt", "max_tokens": "max_tokens",
                "stop": "stop_sequences", "seed": "seed", **_SAMPLING},
    "claude": {"prompt": "prompt", "system": "system_prompt", "max_tokens": "max_tokens"},
    "gpt": {"messages": "messages", "max_tokens": "max_completion_tokens", **_SAMPLING},
}
"""Each family's canonical name -> input field, as read on the model pages (README.replicate.md
cites them)."""

_OWNERS: dict[str, Family] = {"ibm-granite": "granite", "anthropic": "claude", "openai": "gpt"}

REASONING: dict[str, str] = {**FAMILIES["gpt"], "reasoning_effort": "reasoning_effort"}
"""The ``gpt`` family's fields for OpenAI's reasoning models (``openai/o*``: the pages of
``o1`` and ``o4-mini`` list a ``reasoning_effort`` input, low/medium/high)."""


def gpt_fields(name: str) -> dict[str, str]:
    """The ``gpt`` family's fields for the official model ``openai/{name}``."""
    return REASONING if len(name) > 1 and name[0] == "o" and name[1].isdigit() \
        else FAMILIES["gpt"]


def infer_family(owner: str, name: str) -> Family | None:
    """The family of an official model, from its owner (and for Meta, a Llama 3 name)."""
    if owner == "meta":
        return "llama3" if name.startswith("meta-llama-3") else None
    return _OWNERS.get(owner)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How one model takes a chat: canonical name -> input field, the family (for its
    conversation rendering; None for a custom map) and fixed extra input values."""

    fields: Mapping[str, str]
    family: Family | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _refuse(message: str, param: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param, code="unsupported_parameter")


def _check_request(request: ChatRequest) -> None:
    if request.tools:
        raise _refuse("Replicate predictions have no tool calling; remove 'tools'.", "tools")
    if request.tool_choice not in (None, "none", "auto"):
        raise _refuse("tool_choice needs tools, and Replicate predictions have none.",
                      "tool_choice")
    if request.model_extra:
        refusals.refuse_legacy_functions(request.model_extra, who="Replicate predictions",
                                         tools=False)
        refuse_outputs(request.model_extra, who="Replicate predictions")
    if request.response_format is not None and request.response_format.type != "text":
        raise _refuse("Replicate predictions have no structured output mode; "
                      "'response_format' must be 'text'.", "response_format")
    if request.n is not None and request.n > 1:
        raise _refuse("Replicate predictions produce one answer; 'n' must be 1.", "n")
    if request.logprobs or request.top_logprobs:
        raise _refuse("Replicate predictions report no log probabilities.", "logprobs")


def _text(message: Message, index: int) -> str:
    """A message's text: its text parts joined by newlines, as chat templates render them (an
    assistant's earlier ``refusal`` parts count as text); any other part is refused."""
    if message.role in ("tool", "function") or message.tool_calls:
        raise _refuse("Replicate predictions have no tool calling; tool messages and tool "
                      "calls cannot be sent.", f"messages[{index}]")
    if not isinstance(message.content, list):
        return message.content or ""
    texts: list[str] = []
    for part in message.content:
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"])
        elif kind == "refusal" and message.role == "assistant" \
                and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise _refuse(f"Content parts of type {kind!r} cannot be sent to a Replicate "
                          "language model; only text.", f"messages[{index}].content")
    return "\n".join(texts)


@dataclass(slots=True)
class _Turns:
    system: list[str]
    turns: list[tuple[str, str]]
    """(role, text) of user and assistant messages, in order."""


def _turns(messages: list[Message]) -> _Turns:
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        text = _text(message, index)
        if message.role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((message.role, text))
    return _Turns(system, turns)


def llama3_markup(system: str, turns: list[tuple[str, str]]) -> str:
    """A conversation in Llama 3's chat markup, ending with the assistant's header."""
    parts = ["<|begin_of_text|>"]
    if system:
        parts.append(f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>")
    for role, text in turns:
        parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def transcript(turns: list[tuple[str, str]]) -> str:
    """A conversation as ``User: ...`` / ``Assistant: ...`` paragraphs."""
    return "\n\n".join(f"{'Assistant' if role == 'assistant' else 'User'}: {text}"
                       for role, text in turns)


def _prompt_fields(spec: InputSpec, talk: _Turns) -> Json:
    out: Json = {}
    system = "\n\n".join(talk.system)
    single = len(talk.turns) == 1 and talk.turns[0][0] == "user"
    if spec.family == "llama3" and not single:
        out[spec.fields["prompt"]] = llama3_markup(system, talk.turns)
        out["prompt_template"] = "{prompt}"
        return out
    out[spec.fields["prompt"]] = talk.turns[0][1] if single else transcript(talk.turns)
    if system:
        if "system" not in spec.fields:
            out[spec.fields["prompt"]] = f"System: {system}\n\n{out[spec.fields['prompt']]}"
        else:
            out[spec.fields["system"]] = system
    return out


def _messages_field(request: ChatRequest) -> list[Json]:
    return [{"role": "system" if m.role == "developer" else m.role, "content": _text(m, i)}
            for i, m in enumerate(request.messages)]


def _stop_value(stop: str | list[str] | None) -> str | None:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    for value in stops:
        if "," in value:
            raise _refuse(f"Replicate takes stop sequences as one comma-separated string, so "
                          f"the stop sequence {value!r} (which holds a comma) cannot be sent.",
                          "stop")
    return ",".join(stops) if stops else None


def build_input(request: ChatRequest, spec: InputSpec, *, params: Mapping[str, Any],
                max_tokens_default: int | None) -> Json:
    """The prediction ``input`` for ``request``; see the module docstring."""
    _check_request(request)
    fields = spec.fields
    out: Json = {**spec.extra, **params}
    if "messages" in fields:
        out[fields["messages"]] = _messages_field(request)
    else:
        out.update(_prompt_fields(spec, _turns(request.messages)))
    limit = request.token_limit() or max_tokens_default
    if limit is not None:
        if "max_tokens" not in fields:
            raise _refuse("This Replicate model's input_map has no 'max_tokens' field, so the "
                          "token limit cannot be sent.", "max_tokens")
        out[fields["max_tokens"]] = limit
    stop = _stop_value(request.stop)
    if stop is not None:
        if "stop" not in fields:
            raise _refuse("This Replicate model takes no stop sequences.", "stop")
        out[fields["stop"]] = stop
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None and name in fields:
            out[fields[name]] = value
    effort = (request.model_extra or {}).get("reasoning_effort")
    if effort is not None:
        if "reasoning_effort" not in fields:
            raise _refuse("This Replicate model takes no reasoning_effort.", "reasoning_effort")
        out[fields["reasoning_effort"]] = effort
    return out
