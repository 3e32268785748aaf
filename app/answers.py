"""What the gateway reads from OpenAI-shaped answers: their text (for drift and token estimates),
their finish reason, and the fields a chunk the gateway writes itself repeats."""

from __future__ import annotations

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
    for choice in body.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            record.finish_reason = choice["finish_reason"]


def chunk_base(body: Json) -> Json:
    return {k: body[k] for k in ("id", "object", "created", "model") if k in body}
