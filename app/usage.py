"""Token usage of one call, and the estimate used when a provider reports none."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.schemas import (
    ChatRequest,
    CompletionRequest,
    CustomToolCall,
    EmbeddingRequest,
    ToolCall,
)

# Words, numbers and single punctuation marks: close to what BPE tokenizers produce for English
# (about 0.75 words a token). Long words count once per 6 characters, as BPE splits them.
_PIECE = re.compile(r"\w+|[^\w\s]")


_ASCII_BYTES = bytes(range(128))
_STAND_INS_MAX = 32
"""The most distinct non-ASCII characters a text may have and still be counted the ASCII way
(each is replaced first: a pass over the text per character)."""


@functools.lru_cache(maxsize=4096)
def _stand_in(char: str) -> str:
    """An ASCII character of ``char``'s class in ``_PIECE``'s terms: a word character (``a``),
    a space (``\\s``, which for ``str`` patterns includes \\x1c-\\x1f) or one piece of its
    own (``!``)."""
    if re.fullmatch(r"\w", char):
        return "a"
    return " " if re.fullmatch(r"\s", char) else "!"


_ASCII_CLASSES = bytes([{"a": ord("w"), " ": ord(" "), "!": ord("p")}[_stand_in(chr(code))]
                        for code in range(128)]) + b"p" * 128
"""A ``bytes.translate`` table taking each ASCII character to its class: ``w``, space or
``p``."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of ``text``'s token count (0 for empty text): each piece of
    ``_PIECE`` counts ``(len + 5) // 6``.

    Counted without a regex or a Python loop over the pieces: the characters are mapped to
    their classes (``_ASCII_CLASSES``), the first character of each word is marked ``x``, and
    then each ``p`` is a piece, each ``x`` a word, and each six ``w`` after a word's first
    character one more token. A few non-ASCII characters (typographic quotes, dashes, accented
    letters: up to ``_STAND_INS_MAX`` distinct ones, in at most a quarter of the text's UTF-8)
    are first replaced by ASCII ones of their class, which changes no piece's length; other text
    (most non-Latin scripts) goes through the regex, which is quick on long runs of letters.
    The regex took ~280 us for 1,000 English words, and a virtual key's limits estimate every
    prompt (``app.stages.admit``); this takes ~35 us, ~50 us with a few typographic quotes."""
    if not text.isascii():
        beyond = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
        found = set(beyond.decode("utf-8", "surrogatepass")) \
            if len(beyond) <= len(text) // 4 else None
        if found is None or len(found) > _STAND_INS_MAX:
            count = 0
            for piece in _PIECE.findall(text):
                count += (len(piece) + 5) // 6
            return count
        for char in found:
            text = text.replace(char, _stand_in(char))
    marks = (b" " + text.encode("ascii").translate(_ASCII_CLASSES)).replace(
        b" w", b" x").replace(b"pw", b"px")
    return marks.count(b"p") + marks.count(b"x") + marks.count(b"wwwwww")


MAX_REPORTED_TOKENS = 100_000_000
"""The most tokens a provider may report for one count of one call: ten times the largest
context window offered (10M tokens, Llama 4 Scout's). A larger count, or a negative one, is
nonsense: the usage it is part of is treated as not reported (``Usage.plausible``)."""


def token_count(value: Any) -> int | None:
    """A reported token count: a whole number from 0 to ``MAX_REPORTED_TOKENS``, as an int or
    as a float such as ``16.0`` (JSON has one number type: Cohere's and Vertex's counts arrive
    that way); None for anything else (a fraction, a bool, a string, null, an object). The one
    rule every provider's usage reader applies (``reported_counts``, ``part_count``,
    ``Usage.from_openai``)."""
    if type(value) is int:
        return value if 0 <= value <= MAX_REPORTED_TOKENS else None
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_REPORTED_TOKENS:
        return int(value)
    return None


def reported_counts(report: Any, *keys: str) -> list[int] | None:
    """The counts a provider's usage object ``report`` gives under ``keys``, in their order;
    the first (the prompt's count) must be there, the others count 0 when absent or null.
    None, "no usage reported" (the gateway then estimates the call), when ``report`` is not an
    object, lacks the first key, or gives one of ``keys`` that is not a ``token_count``: a
    report that cannot be read whole is not read in part (its prompt read as 0, say)."""
    if not isinstance(report, dict):
        return None
    counts: list[int] = []
    for key in keys:
        value = report.get(key)
        if value is None and counts:
            counts.append(0)
            continue
        count = token_count(value)
        if count is None:
            return None
        counts.append(count)
    return counts


def part_count(within: Any, key: str, whole: int) -> int:
    """A breakdown count (a part of a count already read: cached or audio of the prompt,
    reasoning of the completion): ``within[key]`` as a ``token_count`` capped at ``whole``; 0
    when absent or not a count. A bad breakdown leaves its whole, read exactly, as the call's
    usage: it prices the part as its whole (cached input as fresh), never above it."""
    value = within.get(key) if isinstance(within, dict) else None
    count = token_count(value)
    return 0 if count is None else min(count, whole)


@dataclass(slots=True)
class Usage:
    """Tokens of one call. ``cached_tokens`` are the part of the prompt read from a cache,
    ``cache_write_tokens`` the part written to one (Anthropic, Bedrock), of which
    ``cache_write_1h_tokens`` were written for an hour (Anthropic's ``ttl: 1h``, priced above
    the 5-minute writes). ``audio_tokens``: the prompt's audio input not read from a cache
    (Gemini's ``AUDIO`` modality, OpenAI's ``audio_tokens``), priced at its own rate where a
    model has one. ``web_searches``: server-side web searches the provider ran and bills per
    request (Anthropic's ``server_tool_use.web_search_requests``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cache_write_1h_tokens: int = 0
    audio_tokens: int = 0
    web_searches: int = 0

    def plausible(self) -> bool:
        """Whether every count is one a provider could have billed (``token_count``); the
        gateway estimates a call's usage instead of accounting one that is not. Written out,
        not a loop over ``token_count``: it runs on every answer (0.2 us against 0.7)."""
        top = MAX_REPORTED_TOKENS
        prompt, completion = self.prompt_tokens, self.completion_tokens
        cached, written, reasoning = (self.cached_tokens, self.cache_write_tokens,
                                      self.reasoning_tokens)
        hour, audio, searches = self.cache_write_1h_tokens, self.audio_tokens, self.web_searches
        return (type(prompt) is int and type(completion) is int and type(cached) is int
                and type(written) is int and type(reasoning) is int
                and 0 <= prompt <= top and 0 <= completion <= top and 0 <= cached <= top
                and 0 <= written <= top and 0 <= reasoning <= top
                and type(hour) is int and type(audio) is int and type(searches) is int
                and 0 <= hour <= top and 0 <= audio <= top and 0 <= searches <= top)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens or self.audio_tokens:
            details = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:
                # Not in OpenAI's schema: Anthropic's cache writes, priced apart from reads.
                details["cache_write_tokens"] = self.cache_write_tokens
            if self.cache_write_1h_tokens:
                details["cache_write_1h_tokens"] = self.cache_write_1h_tokens  # likewise
            if self.audio_tokens:
                details["audio_tokens"] = self.audio_tokens
            out["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        if self.web_searches:
            # Not in OpenAI's schema: Anthropic's own name for the searches it bills.
            out["server_tool_use"] = {"web_search_requests": self.web_searches}
        return out

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI-shaped ``usage`` object; None when absent or malformed (a
        ``prompt_tokens`` or ``completion_tokens`` that is not a ``token_count``: negative,
        past ``MAX_REPORTED_TOKENS``, a fraction, a bool, a string). The breakdowns are
        ``part_count``s: ``cached_tokens`` at most the prompt, ``cache_write_tokens`` at most
        the rest of it, ``cache_write_1h_tokens`` at most the writes, ``audio_tokens`` at most
        the prompt, ``reasoning_tokens`` at most the completion (0 where not a count; web
        searches likewise). A breakdown read otherwise than given is corrected in ``usage``
        itself, which the gateway relays to the client: it then says what the call is accounted
        with. ``total_tokens`` is not read (it is the sum)."""
        if not isinstance(usage, dict):
            return None
        prompt = token_count(usage.get("prompt_tokens"))
        completion = token_count(usage.get("completion_tokens", 0))
        if prompt is None or completion is None:
            return None
        read = cls(prompt_tokens=prompt, completion_tokens=completion)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and details:
            read.cached_tokens = _relayed_part(details, "cached_tokens", prompt)
            read.cache_write_tokens = _relayed_part(details, "cache_write_tokens",
                                                    prompt - read.cached_tokens)
            read.cache_write_1h_tokens = _relayed_part(details, "cache_write_1h_tokens",
                                                       read.cache_write_tokens)
            read.audio_tokens = _relayed_part(details, "audio_tokens", prompt)
        out_details = usage.get("completion_tokens_details")
        if isinstance(out_details, dict) and out_details:
            read.reasoning_tokens = _relayed_part(out_details, "reasoning_tokens", completion)
        tools = usage.get("server_tool_use")
        if isinstance(tools, dict) and tools:
            read.web_searches = _relayed_part(tools, "web_search_requests",
                                              MAX_REPORTED_TOKENS)
        return read


def _relayed_part(within: dict[str, Any], key: str, whole: int) -> int:
    """``part_count``, written back into ``within`` where it differs from what is there (a
    null or absent one is left as it is)."""
    count = part_count(within, key, whole)
    value = within.get(key)
    if value is not None and (value != count or type(value) is bool):
        within[key] = count
    return count


_PER_MESSAGE_TOKENS = 3
"""Tokens a chat message costs beyond its text (role and separators), as estimated."""


_IMAGE_TOKENS = 765
"""An image part's tokens, its size unknown to the gateway: what OpenAI counts for a 1024x1024
image at ``detail: high`` (85 + 170 for each of 4 tiles); Anthropic counts ~1,400 for one that
size, Gemini 258 a tile."""
_LOW_DETAIL_IMAGE_TOKENS = 85
"""An image part at ``detail: low``: OpenAI's count, whatever its size."""
_PAGE_TOKENS = 1500
"""A document page's tokens: the low end of Anthropic's 1,500 to 3,000 a PDF page (each is
read as text and as an image), low so that an estimate refuses no call a target would take."""
_PAGE_BYTES = 100_000
"""The bytes a document part is counted one page for (rounded up), its pages unknown to the
gateway: counting them means decoding and parsing the file at each estimate, on the event loop
(a 32 MB PDF's base64, several times a call). Text pages of a PDF with its fonts, and scanned
pages, run from tens to a few hundred KB."""
_MAX_PAGES = 100
"""A document part counts at most this many pages: Anthropic's limit on a PDF's."""


def estimate_prompt_tokens(request: ChatRequest | CompletionRequest | EmbeddingRequest) -> int:
    """An estimate of a request's prompt tokens (its messages, prompts or inputs); token ids
    count as themselves. A chat's also counts what the model reads besides message text: the
    tool definitions (as JSON), the tool calls in its history, its image parts (a fixed
    count each: ``_IMAGE_TOKENS``) and its file parts (``_file_tokens``)."""
    if isinstance(request, ChatRequest):
        total = 0
        for m in request.messages:
            total += estimate_tokens(m.text()) + _PER_MESSAGE_TOKENS
            if m.tool_calls:
                total += sum(estimate_tokens(_call_text(call)) for call in m.tool_calls)
            if isinstance(m.content, list):
                total += _media_tokens(m.content)
        if request.tools:
            total += estimate_tokens(orjson.dumps(
                [tool.model_dump(exclude_none=True) for tool in request.tools]).decode())
        return total
    return _inputs_tokens(request.prompt if isinstance(request, CompletionRequest)
                          else request.input)


def _call_text(call: ToolCall | CustomToolCall) -> str:
    """What a tool call in a chat's history puts before the model: its name and arguments."""
    if isinstance(call, CustomToolCall):
        return f"{call.custom.name} {call.custom.input}"
    return f"{call.function.name} {call.function.arguments}"


def _media_tokens(parts: list[dict[str, Any]]) -> int:
    """The tokens of a message's image and file parts."""
    total = 0
    for part in parts:
        kind = part.get("type")
        if kind == "image_url":
            image = part.get("image_url")
            low = isinstance(image, dict) and image.get("detail") == "low"
            total += _LOW_DETAIL_IMAGE_TOKENS if low else _IMAGE_TOKENS
        elif kind == "file":
            total += _file_tokens(part.get("file"))
    return total


_HEAD_CHARS = 256
"""How far into a file part's data its data URL's comma is looked for (``data:`` and a media
type with its parameters); past it the data is taken as bare base64."""


def _file_tokens(file: Any) -> int:
    """A file part's tokens, from its size alone (O(1): never decoded): a ``text/*`` data URL
    as text is estimated (a token per 4 bytes); any other (a PDF) a page per ``_PAGE_BYTES``,
    at least one and at most ``_MAX_PAGES``, ``_PAGE_TOKENS`` a page; a file by id, one page."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        return _PAGE_TOKENS
    comma = data.find(",", 0, _HEAD_CHARS) if data.startswith("data:") else -1
    head = data[:comma] if comma >= 0 else ""  # none: bare base64, as OpenAI also takes it
    encoded = not head or ";base64" in head
    size = len(data) - comma - 1  # the payload's length, never sliced out of the data
    if encoded:  # base64's size, less its padding
        size = size * 3 // 4 - (2 if data.endswith("==") else data.endswith("="))
    if head.startswith("data:text/"):
        return -(-size // 4)
    return min(_MAX_PAGES, max(1, -(-size // _PAGE_BYTES))) * _PAGE_TOKENS


def _inputs_tokens(inputs: str | list[str] | list[int] | list[list[int]]) -> int:
    """Counted, not estimated, where they are token ids: rendering 300,000 ids as text to
    estimate them took 50 ms, and came to the same count (an id of up to six digits is one
    token in ``estimate_tokens``)."""
    if isinstance(inputs, str):
        return estimate_tokens(inputs)
    total = 0
    for item in inputs:
        if isinstance(item, int):  # one input given as token ids
            return len(inputs)
        total += len(item) if isinstance(item, list) else estimate_tokens(item)
    return total
