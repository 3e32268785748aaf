"""What the gateway reads from OpenAI-shaped answers: their text (for drift and token estimates),
their finish reason, whether they refused or broke a JSON request (``judge``), and the fields a
chunk the gateway writes itself repeats."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import orjson

from app.calllog import CallRecord
from app.providers.base import Json


def body_text(body: Json) -> str:
    parts = []
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    return "".join(parts)


def chunk_text(chunk: Json) -> str:
    parts = []
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    return "".join(parts)


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
