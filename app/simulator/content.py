"""Deterministic answers whose token counts agree with ``app.usage.estimate_tokens``.

Token accounting (the contract every dialect reports in ``usage``):

- A *piece* is optional leading whitespace plus one punctuation mark or a word, a word that
  ``estimate_tokens`` counts as k tokens being split into k chunks of equal size. Every piece is
  thus one token and a text's pieces add up to ``estimate_tokens(text)`` (the simulator's tests
  pin this). Streams send one piece per content chunk: N completion tokens are N content chunks.
- Completion tokens = the number of pieces of the answer actually produced.
- Prompt tokens = the sum over messages (and a ``system`` prompt) of
  ``estimate_tokens(message text) + 3``; the 3 stand for the chat template's role markers.
  Tool definitions and images are not counted.

An answer is "Simulated reply to: <first words of the last user message>" followed by filler words,
``default_completion_tokens`` pieces long (or as long as ``X-Sim-Completion-Tokens`` or the
admin-set drift says), then cut by ``max_tokens`` and stop sequences.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from app.usage import estimate_tokens

REFUSAL = "I'm sorry, but I can't help with that."
MESSAGE_OVERHEAD_TOKENS = 3
_TOPIC_WORDS = 8
_PIECE = re.compile(r"(\s*)(\w+|[^\w\s])")
# Filler words (short enough to be one token each), with their leading space.
_FILLER = (" this", " is", " a", " fake", " but", " calm", " and", " kind", " text", " that",
           " the", " sim", " can", " send", " so", " each", " load", " test", " has", " some",
           " more", " body", " to", " read", " as", " it", " runs", " on", " and", " on",
           " with", " no", " end", " in", " view")


# Memoized helpers only cache short keys, so huge prompts cannot pin memory.
_CACHEABLE_CHARS = 4096


@lru_cache(maxsize=16384)
def _cached_word_tokens(word: str) -> int:
    return max(1, estimate_tokens(word))


def _word_tokens(word: str) -> int:
    if len(word) > 64:
        return max(1, estimate_tokens(word))
    return _cached_word_tokens(word)


def split_tokens(text: str, limit: int | None = None) -> list[str]:
    """``text`` as one-token pieces: ``"".join(split_tokens(t)) == t``. With ``limit``, only
    the first ``limit`` pieces (their concatenation is then a prefix of ``text``)."""
    pieces: list[str] = []
    end = 0
    for lead, word in _PIECE.findall(text):
        end += len(lead) + len(word)
        count = _word_tokens(word) if len(word) > 1 else 1
        if count == 1:
            pieces.append(lead + word)
        else:
            size = -(-len(word) // count)  # ceil: ``count`` chunks of (nearly) equal size
            pieces.append(lead + word[:size])
            pieces.extend(word[i:i + size] for i in range(size, len(word), size))
        if limit is not None and len(pieces) >= limit:
            return pieces[:limit]
    if end < len(text):  # trailing whitespace rides on the last piece
        if pieces:
            pieces[-1] += text[end:]
        else:
            pieces.append(text[end:])
    return pieces


_OPENING = tuple(split_tokens("Simulated reply to:"))
_OPENING_ALONE = tuple(split_tokens("Simulated reply."))


@lru_cache(maxsize=8192)
def _cached_count(text: str) -> int:
    return estimate_tokens(text)


def count_tokens(text: str) -> int:
    """``estimate_tokens``, memoized for short texts: benchmark and test prompts repeat (system
    prompts always)."""
    return estimate_tokens(text) if len(text) > _CACHEABLE_CHARS else _cached_count(text)


def topic_of(text: str) -> str:
    """The first words of a user message, whitespace-normalized: what the answer echoes."""
    return " ".join(text.split(maxsplit=_TOPIC_WORDS)[:_TOPIC_WORDS])


@lru_cache(maxsize=8192)
def reply_pieces(topic: str, length: int, offset: int) -> tuple[str, ...]:
    """The natural answer to ``topic``: exactly ``length`` pieces; ``offset`` (from ``seed`` and
    the choice index) rotates the filler so choices differ."""
    pieces = list((_OPENING if topic else _OPENING_ALONE)[:length])
    if topic and len(pieces) < length:
        pieces += split_tokens(" " + topic, limit=length - len(pieces))
    index = offset
    while len(pieces) < length:
        pieces.append(_FILLER[index % len(_FILLER)])
        index += 1
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class Output:
    """One produced answer. ``finish``: ``stop`` (natural end), ``length`` (``max_tokens`` cut it),
    ``stop_sequence`` (a stop string cut it; ``stop_sequence`` says which) or ``tool``."""

    pieces: tuple[str, ...]
    text: str
    finish: str
    stop_sequence: str | None = None

    @property
    def tokens(self) -> int:
        """Completion tokens."""
        return len(self.pieces)


def shape(pieces: Sequence[str], *, limit: int | None, stops: Sequence[str],
          natural: str = "stop") -> Output:
    """Cut a natural answer at ``limit`` tokens, then before the earliest stop string."""
    finish = natural
    if limit is not None and limit < len(pieces):
        pieces = pieces[:limit]
        finish = "length"
    text = "".join(pieces)
    if stops:
        hits = [(at, stop) for stop in stops if stop and (at := text.find(stop)) >= 0]
        if hits:
            at, stop = min(hits)
            text = text[:at]
            return Output(tuple(split_tokens(text)), text, "stop_sequence", stop)
    return Output(tuple(pieces), text, finish)


def keeping_stop(output: Output) -> Output:
    """``output`` as a server that keeps the matched stop sequence in its text sends it (TGI:
    it stops after the tokens that make the text end with one, and sends them)."""
    stop = output.stop_sequence
    if output.finish != "stop_sequence" or not stop:
        return output
    return Output((*output.pieces, *split_tokens(stop)), output.text + stop, output.finish, stop)


@lru_cache(maxsize=8192)
def reply(topic: str, length: int, offset: int, limit: int | None,
          stops: tuple[str, ...]) -> Output:
    """The shaped answer about ``topic`` (memoized; outputs are immutable)."""
    return shape(reply_pieces(topic, length, offset), limit=limit, stops=stops)


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts/blocks (OpenAI
    ``text`` parts; Anthropic ``text``, ``tool_result`` and ``tool_use`` blocks)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "tool_result":
            texts.append(text_of(part.get("content")))
        elif part.get("type") == "tool_use":
            texts.append(str(part.get("input", "")))
    return " ".join(texts)


def message_text(message: Any) -> str:
    """The countable text of one chat message: its content plus any tool-call arguments (a
    custom tool call's input)."""
    if not isinstance(message, dict):
        return ""
    text = text_of(message.get("content"))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            text += " " + str(call["function"].get("arguments", ""))
        elif isinstance(call, dict) and isinstance(call.get("custom"), dict):
            text += " " + str(call["custom"].get("input", ""))
    return text


def prompt_tokens(messages: Sequence[Any], system: Any = None) -> int:
    """Prompt tokens of a conversation (see the module docstring)."""
    total = 0
    if system:
        total += count_tokens(text_of(system)) + MESSAGE_OVERHEAD_TOKENS
    for message in messages:
        if isinstance(message, dict):
            total += count_tokens(message_text(message)) + MESSAGE_OVERHEAD_TOKENS
    return total


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last ``user`` message (empty when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def logprob_of(piece: str) -> float:
    """A deterministic log-probability in [-1.0, -0.001] for a piece."""
    return -(zlib.crc32(piece.encode()) % 1000 + 1) / 1000


def alternatives(piece: str, count: int) -> list[tuple[str, float]]:
    """The ``count`` most likely tokens at a position: the piece itself, then filler words."""
    first = logprob_of(piece)
    out = [(piece, first)]
    start = zlib.crc32(piece.encode()) % len(_FILLER)
    for i in range(1, count):
        out.append((_FILLER[(start + i) % len(_FILLER)], round(first - 0.5 * i, 3)))
    return out[:count]


def chat_logprobs(pieces: Sequence[str], top: int) -> list[dict[str, Any]]:
    """OpenAI chat ``logprobs.content`` entries for ``pieces`` with ``top`` alternatives each."""
    return [{"token": piece, "logprob": logprob_of(piece), "bytes": list(piece.encode()),
             "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}
                              for tok, lp in alternatives(piece, top)]}
            for piece in pieces]


def completion_logprobs(pieces: Sequence[str], top: int, start: int = 0) -> dict[str, Any]:
    """OpenAI legacy-completions ``logprobs`` for ``pieces`` (text offsets from ``start``)."""
    offsets: list[int] = []
    at = start
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return {"tokens": list(pieces), "token_logprobs": [logprob_of(p) for p in pieces],
            "top_logprobs": [dict(alternatives(p, top)) for p in pieces] if top else None,
            "text_offset": offsets}
