"""What the translating providers refuse alike: a 400 (``errors.InvalidRequest``) naming the
parameter, raised before anything is sent. Such a refusal is the target's own, so a model with
another target (an ``openai`` one) falls back to it (``app.gateway._refused``).

- OpenAI's custom tools (``tools[i]`` of ``type: "custom"``: called with free text, or text of
  a grammar) and custom tool calls in an assistant's history (``messages[i].tool_calls[j]``):
  the translated APIs' tools (Anthropic's, Gemini's, Bedrock's, Cohere's, AI21's, the mock's)
  take JSON arguments under a schema, and vLLM's and TGI's OpenAI-style servers take function
  tools only. ``function_tools`` and ``function_calls`` give the function ones, typed, and
  refuse a custom one (param ``tools[i].type``, ``messages[i].tool_calls[j].type``);
  ``refuse_custom_payload`` checks an OpenAI-format payload the same way. A ``tool_choice``
  naming a custom tool is refused by each translation's own ``tool_choice`` check.
- Output the translated APIs cannot give (``refuse_outputs``): audio (``modalities`` holding
  anything but ``"text"``, ``audio``) and ``web_search_options``. Answered as text with no
  search, the call would read as honoured.
- OpenAI's legacy function calling (``refuse_legacy_functions``): ``functions`` and
  ``function_call``, which the translations do not carry over to their tools. Dropped, a
  function the client forces would be answered with text, and a client waiting for a
  ``function_call`` would read the text as the model's choice not to call one.
"""

from __future__ import annotations

from typing import Any, cast

from app import errors
from app.providers.base import Json
from app.schemas import ChatRequest, Message, Tool, ToolCall

OUTPUT_FIELDS = {
    "modalities": "answer in text only",
    "audio": "answer in text only",
    "web_search_options": "have no web search",
}
"""OpenAI chat fields outside the typed request that ask for output a translated API cannot
give, each refused when set (``modalities`` but for its no-op ``["text"]``), with the words
that say why (after the provider's name)."""


def refuse_outputs(body: Json, *, who: str) -> None:
    """Refuse what ``OUTPUT_FIELDS`` names in a chat ``body`` (the client's JSON: top-level
    nulls are already gone); ``who`` names the upstream ("Anthropic models")."""
    for name, reason in OUTPUT_FIELDS.items():
        value = body.get(name)
        if value is not None and not (name == "modalities" and value == ["text"]):
            raise errors.InvalidRequest(f"{who} {reason}; '{name}' cannot be honoured",
                                        param=name, code="unsupported_parameter")


def _custom_refused(param: str, who: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"{who} take function tools only; custom tools (type 'custom') are not supported",
        param=param, code="unsupported_parameter")


def function_tools(request: ChatRequest, *, who: str) -> list[Tool]:
    """``request.tools`` (empty when it has none), each a function tool: a custom one is
    refused."""
    tools = request.tools
    if not tools:
        return []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Tool):
            raise _custom_refused(f"tools[{i}].type", who)
    return cast(list[Tool], tools)


def function_calls(message: Message, *, param: str, who: str) -> list[ToolCall]:
    """``message.tool_calls`` (empty when it has none), each a function call: a custom one
    is refused (``param``: the message's, ``messages[3]``)."""
    calls = message.tool_calls
    if not calls:
        return []
    for i, call in enumerate(calls):
        if not isinstance(call, ToolCall):
            raise _custom_refused(f"{param}.tool_calls[{i}].type", who)
    return cast(list[ToolCall], calls)


def refuse_custom_payload(payload: Json, *, who: str) -> None:
    """Refuse custom tools and custom tool calls in an OpenAI-format chat ``payload`` (for the
    OpenAI-style servers that take function tools only: vLLM, TGI). Only a message with
    ``tool_calls`` is looked into."""
    tools: Any = payload.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and tool.get("type") == "custom":
            raise _custom_refused(f"tools[{i}].type", who)
    messages: Any = payload.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not calls or not isinstance(calls, list):
            continue
        for j, call in enumerate(calls):
            if isinstance(call, dict) and call.get("type") == "custom":
                raise _custom_refused(f"messages[{i}].tool_calls[{j}].type", who)


LEGACY_FIELDS = {"functions": "tools", "function_call": "tool_choice"}
"""OpenAI's deprecated function-calling fields (outside the typed request), each with the field
that replaces it."""


def refuse_legacy_functions(body: Json, *, who: str, tools: bool = True) -> None:
    """Refuse ``functions`` and ``function_call`` in a chat ``body`` (the client's JSON, or the
    typed request's ``model_extra``); ``who`` names the upstream, ``tools``: whether it takes
    tools (the refusal then says what to send instead)."""
    for name, instead in LEGACY_FIELDS.items():
        if body.get(name) is not None:
            hint = f"; send '{instead}' instead" if tools else ""
            raise errors.InvalidRequest(
                f"OpenAI's legacy '{name}' is not translated for {who}; it cannot be "
                f"honoured{hint}",
                param=name, code="unsupported_parameter")
