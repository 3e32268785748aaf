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
def _normalised(phrases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({p.lower().replace("\u2019", "'") for p in phrases}))


def judge(record: CallRecord, text: str | None, *, phrases: Sequence[str],
          scan_chars: int) -> None:
    """Set an answered call's ``refusal`` (an explicit refusal, ``finish_reason:
    content_filter``, or one of ``phrases`` in the first ``scan_chars`` characters, as drift
    counts them) and, when it asked for JSON, ``json_valid`` (the answer parses)."""
    if not record.refusal:
        head = (text or "")[:scan_chars].lower().replace("\u2019", "'")
        record.refusal = record.finish_reason == "content_filter" or any(
            p in head for p in _normalised(tuple(phrases)))
    if record.wants_json:
        record.json_valid = is_json(text or "")


def chunk_base(body: Json) -> Json:
    return {k: body[k] for k in ("id", "object", "created", "model") if k in body}
