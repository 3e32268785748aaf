"""Which of a request's stop sequences ended an answer, for upstreams that say a stop sequence
ended it without always saying which (Cohere's ``STOP_SEQUENCE``, TGI's ``stop_sequence``,
Bedrock Converse's ``stop_sequence``).

The translations report the sequence as the choice's ``stop_reason``, as vLLM reports it; the
``finish_reason`` stays ``stop`` (OpenAI's). ``app.inbound.anthropic.stop_reason`` turns it into
Anthropic's ``stop_reason: "stop_sequence"`` and ``stop_sequence``.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.providers.base import Json


def request_stops(stop: str | Sequence[str] | None) -> list[str]:
    """A request's ``stop`` (a string, a list or none) as a list."""
    return [stop] if isinstance(stop, str) else list(stop or ())


def stopped_by(stops: Sequence[str], *, text: str | None = None) -> str | None:
    """The stop sequence that ended an answer whose upstream says one did but not which: the
    request's only one; else, for an upstream whose answer ``text`` keeps the matched sequence
    at its end (TGI), the first of ``stops`` that ends it (TGI tests them in the request's
    order, after each token); else None (not known)."""
    if len(stops) == 1:
        return stops[0]
    if text is not None:
        for stop in stops:
            if stop and text.endswith(stop):
                return stop
    return None


def name_stop(choice: Json, stop: str | None) -> Json:
    """``choice`` (in place) with ``stop_reason`` naming ``stop``, when it is known."""
    if stop is not None:
        choice["stop_reason"] = stop
    return choice
