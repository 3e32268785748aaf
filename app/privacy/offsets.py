"""A legacy completion's ``logprobs.text_offset``s moved to the text the client gets.

An upstream counts each token's offset in the text it wrote, which holds the placeholders; the
client gets the text restored, longer or shorter at each one. ``Offsets`` keeps, for one
choice, where each restored placeholder stood in the upstream's text and how much the restored
text had grown before and after it, so an offset moves by what was restored before it (an
offset inside a placeholder moves to where its value starts).

With ``echo`` the text starts with the prompt (as the upstream got it: redacted), so the
restored prompt moves the offsets of the generated tokens too, whether or not the prompt's own
tokens are listed. Without it, OpenAI counts offsets from the start of the prompt all the same
(the first generated token's offset is the prompt's length), where vLLM counts them from the
start of the text (the first is 0): a choice whose first offset is at least its prompt's length
(``Prompts``: as the upstream got it) is counted OpenAI's way, and its offsets move by what the
restored prompt grew too.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from app.privacy.placeholders import PLACEHOLDER, Vault


@dataclass(frozen=True, slots=True)
class Prompts:
    """A completion request's prompts as the upstream got them, the choices each has (``n``),
    and whether they are echoed: what each choice's offsets count from."""

    texts: tuple[str, ...]
    n: int
    echo: bool

    def of(self, index: object) -> str | None:
        """The prompt of choice ``index`` (OpenAI's order: ``n`` choices a prompt)."""
        if not isinstance(index, int) or index < 0:
            return None
        at = index // max(self.n, 1)
        return self.texts[at] if at < len(self.texts) else None


class _Marks:
    """Where the placeholders restored in one text stood (upstream's positions), and how much
    longer the restored text was before each."""

    __slots__ = ("after", "before", "ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.before: list[int] = []
        self.after = 0
        """How much longer the restored text is than the upstream's, all marks included."""

    def add(self, vault: Vault, text: str, at: int) -> None:
        """The placeholders ``vault`` restores in ``text``, which starts ``at`` characters into
        the upstream's text (the rest of it marked already)."""
        originals = vault.originals
        for match in PLACEHOLDER.finditer(text):
            value = originals.get(match.group())
            if value is None:
                continue
            self.starts.append(at + match.start())
            self.ends.append(at + match.end())
            self.before.append(self.after)
            self.after += len(value) - len(match.group())

    def move(self, offset: int) -> int:
        """``offset`` (the upstream's) in the restored text."""
        i = bisect_right(self.starts, offset) - 1
        if i < 0:
            return offset
        if offset < self.ends[i]:
            return self.starts[i] + self.before[i]
        return offset + (self.before[i + 1] if i + 1 < len(self.before) else self.after)


class Offsets:
    """One legacy completion choice's text as it was restored: ``fed`` each piece of the
    upstream's text that went out, in order; ``move`` an upstream's offset."""

    __slots__ = ("_base", "_echo", "_prompt", "_prompt_marks", "_seen", "_text", "_vault")

    def __init__(self, vault: Vault, prompt: str | None, echo: bool) -> None:
        self._vault = vault
        self._prompt = prompt
        self._echo = echo
        self._text = _Marks()
        self._seen = 0
        self._base: int | None = None
        """Where the text starts in the offsets' count (the prompt's length, OpenAI's way
        without echo; else 0), set by the first offset moved."""
        self._prompt_marks: _Marks | None = None

    def fed(self, text: str) -> None:
        """``text`` (the upstream's) went out next, restored."""
        if "<" in text:
            self._text.add(self._vault, text, self._seen)
        self._seen += len(text)

    def move(self, offset: int) -> int:
        """The upstream's ``offset`` in the text the client gets."""
        if self._base is None:
            prompt = self._prompt
            self._base = 0
            if prompt and not self._echo and offset >= len(prompt):
                self._base = len(prompt)
                self._prompt_marks = _Marks()
                if "<" in prompt:
                    self._prompt_marks.add(self._vault, prompt, 0)
        marks = self._prompt_marks
        if marks is None:
            return self._text.move(offset)
        if offset < self._base:
            return marks.move(offset)
        return self._base + marks.after + self._text.move(offset - self._base)
