"""A streamed answer put back together for the call log, as the non-streamed answer reads.

With ``calllog.capture_bodies`` on, a streamed call's ``response_body`` is the answer its chunks
add up to (``StreamAnswer``): one ``chat.completion`` (or ``text_completion``) with each
choice's message assembled from its deltas: ``content``, ``refusal`` and reasoning text joined,
tool calls merged by their ``index`` (their ``id``, ``type``, function ``name`` and
``arguments``), the last ``finish_reason``, and the usage the stream reported (the estimate the
call is accounted with where it reported none the gateway could read). A stream cut short keeps
what came. Chunks are taken as the upstream sent them, before the pipeline's stages, as a
non-streamed answer is captured. Only built when bodies are captured: a stream costs nothing
more otherwise.
"""

from __future__ import annotations

from typing import Any

from app.providers.base import Json

_OBJECTS = {"chat.completion.chunk": "chat.completion"}
"""A chunk's ``object`` -> the answer's (``text_completion`` is both)."""
_ENVELOPE = ("id", "created", "model", "system_fingerprint", "service_tier")


class StreamAnswer:
    """The answer a stream's chunks add up to so far (see the module docstring)."""

    __slots__ = ("_choices", "_envelope", "_usage")

    def __init__(self) -> None:
        self._envelope: Json = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None

    def add(self, chunk: Json) -> None:
        """Take one chunk as the upstream sent it."""
        envelope = self._envelope
        for key in _ENVELOPE:
            value = chunk.get(key)
            if value is not None and envelope.get(key) is None:
                envelope[key] = value
        if "object" not in envelope and isinstance(chunk.get("object"), str):
            envelope["object"] = _OBJECTS.get(chunk["object"], chunk["object"])
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if type(index) is not int:
                index = 0
            into = self._choices.get(index)
            if into is None:
                into = self._choices[index] = _Choice()
            into.add(choice)

    def body(self, usage: Json | None = None) -> Json:
        """The answer; ``usage``: the counts to show instead of what the stream reported (it
        reported none the gateway could read: the estimate the call is accounted with)."""
        out: Json = {**self._envelope}
        chat = out.get("object") != "text_completion"
        out.setdefault("object", "chat.completion")
        out["choices"] = [self._choices[i].body(i, chat=chat) for i in sorted(self._choices)]
        shown = usage if usage is not None else self._usage
        if shown:
            out["usage"] = shown
        return out


class _Choice:
    """One choice's pieces, by field, joined when the answer is read."""

    __slots__ = ("finish_reason", "other", "role", "text", "texts", "tools")

    def __init__(self) -> None:
        self.role: Any = None
        self.texts: dict[str, list[str]] = {}
        """A delta's text fields (``content``, ``refusal``, ``reasoning_content``...)."""
        self.text: list[str] = []
        """A completion's ``text``."""
        self.tools: dict[int, Json] = {}
        self.other: Json = {}
        """Any other field of a delta, as it last came (``function_call`` merged)."""
        self.finish_reason: Any = None

    def add(self, choice: Json) -> None:
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key == "role":
                    self.role = value
                elif isinstance(value, str):
                    self.texts.setdefault(key, []).append(value)
                elif key == "tool_calls" and isinstance(value, list):
                    self._tool_calls(value)
                elif key == "function_call" and isinstance(value, dict):
                    self.other[key] = _merged(self.other.get(key), value)
                elif value is not None:
                    self.other[key] = value
        elif isinstance(choice.get("text"), str):
            self.text.append(choice["text"])

    def _tool_calls(self, calls: list[Any]) -> None:
        for call in calls:
            if not isinstance(call, dict):
                continue
            index = call.get("index", len(self.tools))
            if type(index) is not int:
                index = len(self.tools)
            into = self.tools.get(index)
            if into is None:
                into = self.tools[index] = {}
            for key, value in call.items():
                if key == "index":
                    continue
                if isinstance(value, dict):
                    into[key] = _merged(into.get(key), value)
                elif value is not None:
                    into[key] = value

    def body(self, index: int, *, chat: bool) -> Json:
        if not chat:
            return {"index": index, "text": "".join(self.text),
                    "finish_reason": self.finish_reason}
        message: Json = {"role": self.role or "assistant"}
        for key, parts in self.texts.items():
            message[key] = "".join(parts)
        message.setdefault("content", None)
        message.update(_whole(self.other))
        if self.tools:
            message["tool_calls"] = [_whole(self.tools[i]) for i in sorted(self.tools)]
        return {"index": index, "message": message, "finish_reason": self.finish_reason}


class _Pieces(list[str]):
    """A string that comes in pieces (a tool call's ``arguments``), joined once when the answer
    is read: appending to a string each chunk would copy it each time (quadratic in its length,
    on the event loop)."""


def _merged(into: Any, piece: Json) -> Json:
    """``piece`` (a tool call's ``function``, a ``function_call``) added to ``into`` (a dict of
    this module's own, or ``None``): its ``arguments`` (a custom tool's ``input``) appended, as
    they come in pieces; anything else replaced (a name repeated is not doubled)."""
    out: Json = into if isinstance(into, dict) else {}
    for key, value in piece.items():
        if key in ("arguments", "input") and isinstance(value, str):
            held = out.get(key)
            if isinstance(held, _Pieces):
                held.append(value)
            else:
                out[key] = _Pieces((value,))
        elif value is not None:
            out[key] = value
    return out


def _whole(merged: Any) -> Any:
    """A merged dict with its pieces joined (anything else as it is)."""
    if not isinstance(merged, dict):
        return merged
    return {key: "".join(value) if isinstance(value, _Pieces) else _whole(value)
            for key, value in merged.items()}
