"""What the gateway reads from OpenAI-shaped answers: their text (for drift and token estimates),
their finish reason, whether they refused or broke a JSON request (``judge``), and the fields a
chunk the gateway writes itself repeats."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import orjson

from app.calllog import CallRecord
from app.providers.base import Json
from app.usage import estimate_tokens


def other_text(said: Json, into: list[str]) -> None:
    """Append to ``into`` what the model generated in a message or delta ``said`` besides its
    ``content`` (a provider bills it as completion tokens): an explicit ``refusal``, reasoning
    (``reasoning_content`` as DeepSeek, vLLM and the Anthropic translation write it,
    ``reasoning`` as OpenRouter and newer vLLM do), each tool call's function name and
    arguments (a custom tool call's name and ``input``), and a legacy ``function_call``'s.
    Unrolled: a loop over the three reasoning and refusal keys measured ~60 ns a call slower,
    and every delta of more than content comes here."""
    refusal, reasoning = said.get("refusal"), said.get("reasoning_content")
    if refusal and isinstance(refusal, str):
        into.append(refusal)
    if reasoning and isinstance(reasoning, str):
        into.append(reasoning)
    reasoning = said.get("reasoning")
    if reasoning and isinstance(reasoning, str):
        into.append(reasoning)
    calls = said.get("tool_calls")
    if calls and isinstance(calls, list):
        for call in calls:
            if not isinstance(call, dict):
                continue
            function = call.get("function")
            if isinstance(function, dict):
                _function_text(function, into)
            elif isinstance(custom := call.get("custom"), dict):  # a custom tool's free text
                _function_text(custom, into, key="input")
    function = said.get("function_call")
    if function and isinstance(function, dict):
        _function_text(function, into)


def _function_text(function: Json, into: list[str], key: str = "arguments") -> None:
    name, arguments = function.get("name"), function.get(key)
    if name and isinstance(name, str):
        into.append(name)
    if arguments and isinstance(arguments, str):
        into.append(arguments)


def body_text(body: Json) -> str:
    """An answer's text: its choices' ``message.content`` (chat) or ``text`` (completions), as
    drift and ``judge`` read it."""
    parts = []
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    return "".join(parts)


def generated_text(body: Json) -> str:
    """Everything the model generated in an answer, for the estimate of its completion tokens
    when no usage came: ``body_text`` and each message's ``other_text``, one per line."""
    parts = [body_text(body)]
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            other_text(message, parts)
    return "\n".join(parts)


class Generated:
    """What a stream generated so far, kept per choice (by its ``index``) for the estimate of
    its completion tokens when no usage comes: ``texts``, the answer text (``delta.content``,
    completions' ``text``), and ``others``, the rest (``other_text``). A stream of n choices
    interleaves their pieces: joined into one string, the words of different choices would run
    together ("Simulated" three times, one 27-character word) and be under-counted, so each
    choice is estimated on its own (``tokens``). ``chars``: the answer text's characters."""

    __slots__ = ("chars", "others", "texts")

    def __init__(self) -> None:
        self.chars = 0
        self.texts: dict[int, list[str]] = {}
        self.others: dict[int, list[str]] = {}

    def add(self, chunk: Json) -> None:
        """Take a chunk's choices. Runs for every chunk of a stream: a delta of only
        ``content`` (and ``role``), the common one, is not looked at further."""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if type(index) is not int:
                index = 0
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    self._text(index, content)
                    if len(delta) == 1 or (len(delta) == 2 and "role" in delta):
                        continue
                elif isinstance(choice.get("text"), str):
                    self._text(index, choice["text"])
                other = self.others.get(index)
                if other is None:
                    other = self.others[index] = []
                other_text(delta, other)
            elif isinstance(choice.get("text"), str):
                self._text(index, choice["text"])

    def _text(self, index: int, piece: str) -> None:
        if piece:
            parts = self.texts.get(index)
            if parts is None:
                self.texts[index] = [piece]
            else:
                parts.append(piece)
            self.chars += len(piece)

    def text(self) -> str:
        """The answer text, choice after choice (as ``body_text`` reads a whole answer)."""
        return "".join("".join(self.texts[index]) for index in sorted(self.texts))

    def tokens(self) -> int:
        """The estimated completion tokens: each choice's text and rest on their own."""
        return sum(estimate_tokens("".join(parts)) for parts in self.texts.values()) + sum(
            estimate_tokens("".join(parts)) for parts in self.others.values() if parts)


def observe_finish(record: CallRecord, body: Json) -> None:
    """The finish reason of an answer or chunk; an explicit refusal (OpenAI's ``refusal`` in a
    message or delta) marks the record."""
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            if isinstance(choice.get("finish_reason"), str):
                record.finish_reason = choice["finish_reason"]
            said = choice.get("message") or choice.get("delta")
            if isinstance(said, dict) and said.get("refusal"):
                record.refusal = True


def is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def normalised_phrases(phrases: tuple[str, ...]) -> tuple[str, ...]:
    """Refusal phrases as ``opens_with_refusal`` compares them (lower case, plain quotes)."""
    return tuple(sorted({p.lower().replace("\u2019", "'") for p in phrases}))


def opens_with_refusal(text: str, phrases: tuple[str, ...], scan_chars: int) -> bool:
    """Whether ``text``'s first ``scan_chars`` characters hold one of ``phrases`` (as
    ``normalised_phrases`` gives them). A loop of ``in`` (C substring search) measured faster
    than one regex alternation of the phrases (2.2 vs 2.9 us on 400 chars)."""
    if not text:
        return False
    head = text[:scan_chars].lower()
    if "\u2019" in head:
        head = head.replace("\u2019", "'")
    for phrase in phrases:  # noqa: SIM110 - a generator in any() is slower here
        if phrase in head:
            return True
    return False


def judge(record: CallRecord, text: str | None, *, phrases: Sequence[str],
          scan_chars: int) -> None:
    """Set an answered call's ``refusal`` (an explicit refusal, ``finish_reason:
    content_filter``, or one of ``phrases`` in the first ``scan_chars`` characters, as drift
    counts them) and, when it asked for JSON, ``json_valid`` (the answer parses)."""
    if not record.refusal:
        record.refusal = record.finish_reason == "content_filter" or opens_with_refusal(
            text or "", normalised_phrases(tuple(phrases)), scan_chars)
    if record.wants_json:
        record.json_valid = is_json(text or "")


def chunk_base(body: Json) -> Json:
    return {k: body[k] for k in ("id", "object", "created", "model") if k in body}
