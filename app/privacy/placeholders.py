"""Typed placeholders: sensitive values swapped out of a request, and back into its answer.

A ``Vault`` belongs to one call. Each distinct value it is given gets a placeholder named by its
entity type and a number counted per type in order of first appearance: ``<EMAIL_1>``,
``<EMAIL_2>``, ``<PHONE_1>``. The same value gets the same placeholder wherever it appears in
the request (every message, the native body too), so a conversation replayed turn after turn
numbers its values the same way each time (its earlier messages come first, in the same order).
A placeholder the client's own text already contains is never issued (its number is skipped),
so restoring cannot turn the client's literal ``<EMAIL_1>`` into someone's address. ``Known``
finds the values found once wherever else they appear (a detector that needs a context word
finds only the copy after it).

``restore`` puts the originals back into a whole text, and ``restore_json`` into the text of a
JSON document (tool calls' arguments, a JSON-mode answer), where a placeholder stands inside a
JSON string: each original goes back JSON-escaped (a newline as ``\\n``, ``"`` as ``\\"``), so
the document still parses and its string holds the original. ``StreamRestorer`` does either for
text that arrives in pieces: it emits everything except the shortest tail that could still be
the start of an issued placeholder (from its last ``<``, while that is a prefix of one), and
emits the tail once the next piece completes or rules it out, or when the stream says its text
has ended.
Text is handled as decoded ``str`` (the stream's UTF-8 was decoded upstream of the stages), so a
multi-byte character is never split.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Container, Iterable, Sequence
from itertools import accumulate
from typing import Any

import ahocorasick

from app.privacy.detect import Finding

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*_[1-9][0-9]*)>")
"""What an issued placeholder looks like (entity names are upper case)."""


class Vault:
    """The values taken out of one call's request, by placeholder."""

    __slots__ = ("_counts", "_issued", "_longest", "_reserved", "originals")

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self.originals: dict[str, str] = {}
        """Placeholder (``<EMAIL_1>``) -> original value."""
        self._issued: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self._reserved = frozenset(reserved)
        self._longest = 0

    def placeholder(self, entity: str, value: str) -> str:
        """The placeholder of ``value`` (the same one every time it is asked)."""
        key = (entity, value)
        known = self._issued.get(key)
        if known is not None:
            return known
        number = self._counts.get(entity, 0) + 1
        name = f"<{entity}_{number}>"
        while name in self._reserved:
            number += 1
            name = f"<{entity}_{number}>"
        self._counts[entity] = number
        self._issued[key] = name
        self.originals[name] = value
        if len(name) > self._longest:
            self._longest = len(name)
        return name

    def redact(self, text: str, findings: Iterable[Finding]) -> str:
        """``text`` with each finding (sorted, not overlapping) replaced by its placeholder."""
        parts: list[str] = []
        position = 0
        placeholder = self.placeholder
        for entity, start, end in findings:
            parts += (text[position:start], placeholder(entity, text[start:end]))
            position = end
        parts.append(text[position:])
        return "".join(parts)

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this vault issued replaced by its original."""
        if "<" not in text or not self.originals:
            return text
        originals = self.originals
        return PLACEHOLDER.sub(lambda m: originals.get(m.group(), m.group()), text)

    def restore_json(self, text: str) -> str:
        """``text``, a JSON document's, with every placeholder this vault issued replaced by its
        original escaped as inside a JSON string (what ``json.dumps`` writes between the
        quotes)."""
        if "<" not in text or not self.originals:
            return text
        originals = self.originals

        def escaped(match: re.Match[str]) -> str:
            value = originals.get(match.group())
            return match.group() if value is None else json.dumps(value, ensure_ascii=False)[1:-1]

        return PLACEHOLDER.sub(escaped, text)

    def could_start(self, tail: str) -> bool:
        """Whether ``tail`` (starting with ``<``) is a proper prefix of an issued placeholder
        (or of one whose number was skipped as the client's own: held a piece longer, it is
        then emitted as it is). A check for each entity type, not each placeholder: a stream's
        every ``<`` asks, and a request may have had thousands of values."""
        if len(tail) >= self._longest:
            return False
        for entity, count in self._counts.items():
            stem = f"<{entity}_"
            if stem.startswith(tail):
                return True
            if tail.startswith(stem):
                digits = tail[len(stem):]
                if digits.isdigit() and digits.isascii() and digits[0] != "0" \
                        and int(digits) <= count:
                    return True
        return False

    def __bool__(self) -> bool:
        return bool(self.originals)


class Known:
    """The values found in one call's request, looked for again wherever else they appear: a
    value a detector finds only in context (a secret after ``password=``, a bare phone number
    after "call", a name the model recognised) is the same value without it.

    An occurrence counts where it is bounded as a detector's match is: where the value starts
    with a word character (a letter, a digit, ``_``), the character before it is not one, and
    where it ends with one, the character after it is not one; so a found ``4155552671`` is
    not looked for inside ``941555526710``. The match is exact (case included).

    The values are looked for all at once, in one pass over the text (an Aho-Corasick automaton,
    ``pyahocorasick``): time linear in the text and the occurrences, whatever the number of
    values. (A ``str.find`` pass a value was quadratic in a client's hands: 20,000 addresses in
    460 KB took 4 s of the event loop, and a body of 8 MiB would have taken hours.)"""

    __slots__ = ("_automaton",)

    def __init__(self, found: Iterable[tuple[str, Iterable[Finding]]]) -> None:
        entities: dict[str, list[str]] = {}
        for text, findings in found:
            for entity, start, end in findings:
                kinds = entities.setdefault(text[start:end], [])
                if entity not in kinds:
                    kinds.append(entity)
        automaton: Any = None
        for value, kinds in entities.items():
            if value:
                if automaton is None:
                    automaton = ahocorasick.Automaton()
                automaton.add_word(value, (len(value), tuple(kinds), _word(value[0]),
                                           _word(value[-1])))
        if automaton is not None:
            automaton.make_automaton()
        self._automaton = automaton

    def _bounded(self, text: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Each bounded occurrence in ``text``: its start, end and entity types (overlapping
        ones included: ``Detector.merge`` resolves them).

        Every occurrence is reported by the automaton, also those inside longer words and
        inside other values, which the boundaries then rule out. Values nested in one another
        (every substring of a long token, each sent once as a secret) make those hits grow with
        the square of a value's length at each place the token is repeated; past
        ``len(text) // HITS_PER_CHARACTER + SPARE_HITS`` hits, the search starts again taking
        only the leftmost longest occurrence at each place (non-overlapping: linear, hits at
        most one per character), so a client's text can cost no more than a few passes over
        it."""
        if self._automaton is None or not text:
            return []
        size = len(text)
        budget = size // HITS_PER_CHARACTER + SPARE_HITS
        found: list[tuple[int, int, tuple[str, ...]]] = []
        for last_index, (length, kinds, first, last) in self._automaton.iter(text):
            budget -= 1
            if not budget:
                return self._longest(text)
            end = last_index + 1
            at = end - length
            if (first and at and _word(text[at - 1])) or (last and end < size
                                                           and _word(text[end])):
                continue  # inside a longer word
            found.append((at, end, kinds))
        return found

    def _longest(self, text: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """The bounded leftmost longest occurrences in ``text``, none overlapping another (a
        shorter value inside a longer one's occurrence, or one overlapping it, goes unseen)."""
        size = len(text)
        found: list[tuple[int, int, tuple[str, ...]]] = []
        for last_index, (length, kinds, first, last) in self._automaton.iter_long(text):
            end = last_index + 1
            at = end - length
            if (first and at and _word(text[at - 1])) or (last and end < size
                                                           and _word(text[end])):
                continue
            found.append((at, end, kinds))
        return found

    def occurrences(self, text: str) -> list[Finding]:
        """Where the values appear in ``text`` (bounded: see the class), by their entity types
        (unsorted, may overlap: for ``Detector.merge``)."""
        return [Finding(entity, at, end) for at, end, kinds in self._bounded(text)
                for entity in kinds]

    def across(self, texts: Sequence[str], *, skip: Sequence[Container[tuple[int, int]]] = ()
               ) -> dict[int, list[Finding]]:
        """``occurrences`` in each of ``texts``, by the index of each text that has any, but
        those whose ``(start, end)`` the text's ``skip`` entry holds (found already): one pass
        over all of them joined (a text's ends bound a value as the ``\\x00`` between them
        does)."""
        joined = _SEPARATOR.join(texts)
        starts = [0, *accumulate(len(t) + 1 for t in texts)]
        """Where each text starts in ``joined`` (and where one more would)."""
        found: dict[int, list[Finding]] = {}
        for at, stop, kinds in self._bounded(joined):
            index = bisect_right(starts, at) - 1
            start = at - starts[index]
            end = start + stop - at
            if end >= starts[index + 1] - starts[index]:
                continue  # across two texts: a value holding a NUL (its text's own)
            if index < len(skip) and (start, end) in skip[index]:
                continue
            hits = found.get(index)
            if hits is None:
                hits = found[index] = []
            for entity in kinds:
                hits.append(Finding(entity, start, end))
        return found

    def __bool__(self) -> bool:
        return self._automaton is not None


_SEPARATOR = "\x00"
HITS_PER_CHARACTER = 4
SPARE_HITS = 10_000
"""``Known._bounded``'s budget of the automaton's hits for a text: one every
``HITS_PER_CHARACTER`` characters, and ``SPARE_HITS`` more (a request's own values, copied a few
times, stay far below it)."""


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def reserved_in(texts: Iterable[str]) -> set[str]:
    """The placeholder-shaped strings the client's own ``texts`` contain."""
    return {m.group() for text in texts if "<" in text for m in PLACEHOLDER.finditer(text)}


class StreamRestorer:
    """Restores placeholders in text that arrives in pieces, one buffer per stream part (a
    choice's content, a tool call's arguments, a native content block)."""

    __slots__ = ("_pending", "entries", "offsets", "vault")

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._pending: dict[object, str] = {}
        self.entries: dict[object, list[tuple[Any, str]]] = {}
        """Items held back whole with the text of theirs that went out (a streamed token's
        logprobs entry, while its text may be part of a placeholder: ``app.privacy.stream``)."""
        self.offsets: dict[object, Any] = {}
        """Where a legacy completion choice's placeholders stood in the upstream's text, by
        choice index (its ``text_offset``s are moved by them: ``app.privacy.stream``)."""

    def feed(self, key: object, piece: str, *, json_text: bool = False) -> str:
        """The text of ``key``'s stream that can go out now, ``piece`` included; ``json_text``:
        the stream's text is a JSON document's (``Vault.restore_json``)."""
        text = self.cut(key, piece)
        return self.vault.restore_json(text) if json_text else self.vault.restore(text)

    def cut(self, key: object, piece: str) -> str:
        """``feed`` before restoring: the upstream's text of ``key`` that can go out now."""
        held = self._pending.pop(key, "")
        text = held + piece if held else piece
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and self.vault.could_start(text[cut:]):
            self._pending[key] = text[cut:]
            return text[:cut]
        return text

    def flush(self, key: object) -> str:
        """What ``key``'s stream still holds back (its text has ended)."""
        return self._pending.pop(key, "")

    def keys(self) -> list[object]:
        """The parts holding a tail back now."""
        return list(self._pending)

    def holds(self, key: object) -> bool:
        """Whether ``key``'s stream holds a tail back now."""
        return key in self._pending

    def held(self) -> int:
        """Characters held back across all parts."""
        return sum(len(v) for v in self._pending.values())
