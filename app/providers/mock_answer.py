"""The ``mock`` provider's answers: deterministic, real-looking, pure (no I/O, no clock), so
``app.providers.mock`` only paces, fails and frames them.

Chat answers, first match wins (the same for each of the ``n`` choices):

- a tool call (``finish_reason`` ``tool_calls``) when ``tools`` are given, ``tool_choice`` is not
  ``"none"`` and the last message is not a tool result (so agent loops end): the function
  ``tool_choice`` names, else (``"auto"``, ``"required"``, absent; ``allowed_tools``: among the
  tools it lists) the tool whose name and description share the most words with the last user
  message, the first tool on a tie (``app.structured.pick_tool``). One call per choice, whatever
  ``parallel_tool_calls`` says; its ``arguments`` are ``app.structured.instance`` of the
  function's ``parameters``;
- with ``response_format`` ``json_schema``, that schema's instance; with ``json_object``,
  ``{"reply": "Mock reply to: ..."}``;
- otherwise "Mock reply to: <last user message>".

The answer is cut at the client's token limit, else at the target's default (``finish_reason``
``length``). Its pieces are one
token each as ``app.usage.estimate_tokens`` counts, so ``usage.completion_tokens`` is the number
of pieces times ``n``, streamed or not, and ``logprobs.content`` has one entry per piece (with
``top_logprobs`` alternatives, log-probabilities derived from a hash of the piece). Schemas
marked ``strict`` that break OpenAI's strict rules are refused with a 400, as OpenAI refuses
them; so are custom tools, custom tool calls, audio output and ``web_search_options``, which the
mock cannot honour (``app.providers.refusals``).

Text completions answer "Mock reply to: <prompt>" for each prompt, ``n`` choices each (choice
``i`` of prompt ``p`` at index ``p * n + i``, as OpenAI orders them); ``logprobs`` gives the
completions API's ``tokens``, ``token_logprobs``, ``top_logprobs`` and ``text_offset``.
``echo`` puts the prompt before the answer (and its tokens first in ``logprobs``, the first
without a log-probability, as OpenAI and vLLM give them); ``max_tokens: 0`` generates nothing
(``finish_reason`` ``length``), so ``echo`` with it answers the prompt alone. ``suffix`` is
accepted and changes nothing (the answer is not an insertion).

Embeddings are unit vectors derived from a hash of the text, so the same text always gets the same
vector.

What one call may generate is bounded, so that no call holds the event loop: at most
``MAX_CHOICES`` choices (prompts times ``n``; OpenAI sets no number of prompts, and 128 as the
most ``n``) and at most ``MAX_GENERATED_TOKENS`` tokens over all of them (a long prompt's echo
counts in full unless ``max_tokens`` cuts it); past either a call is a 400 naming the parameter.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import struct
import zlib
from dataclasses import dataclass

import orjson

from app import errors
from app.providers.base import CompletionCall, Json
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.schemas import ChatRequest, FunctionDef, Tool
from app.structured import instance, pick_tool, strict_problem
from app.usage import Usage, estimate_tokens

MAX_CHOICES = 2048
"""The most choices one call answers (``/v1/completions``: prompts times ``n``)."""
MAX_GENERATED_TOKENS = 2**16
"""The most tokens one call generates, all choices together: ~40 ms to answer, ~250 ms to
stream (2,048 prompts of 100 words each took 460 ms before this bound, an 8 MB one 4.5 s)."""
PER_MESSAGE_TOKENS = 3
"""Prompt tokens each chat message adds for its role markers."""
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
_CHARS_PER_TOKEN = 6  # estimate_tokens counts a word once per 6 characters
# The runners-up ``top_logprobs`` lists after the piece itself.
_ALTERNATIVES = (" the", " a", " and", " to", " of", " in", " is", " it", " that", " for",
                 " on", " with", " as", " was", " at", " by", " this", " be", " or", " an",
                 " from")


def unit_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(2 * dimensions)
    # struct reads the 16-bit values at C speed (3x quicker than int.from_bytes on each).
    values = [(u - 32768) / 32768.0 for u in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum([v * v for v in values])) or 1.0
    return [v / norm for v in values]


def token_pieces(text: str, most: int | None = None) -> list[str]:
    """``text`` cut into pieces ``estimate_tokens`` counts as one token each (a word's leading
    whitespace rides on it, long words are cut every 6 characters); they join back to ``text``.
    ``most``: only the first ``most`` pieces (the rest of ``text`` is not read)."""
    pieces: list[str] = []
    end = 0
    for match in _TOKEN.finditer(text):
        piece = match.group()
        word_at = len(piece) - len(piece.lstrip())
        cut = word_at + _CHARS_PER_TOKEN
        pieces.append(piece[:cut])
        pieces.extend(piece[i:i + _CHARS_PER_TOKEN]
                      for i in range(cut, len(piece), _CHARS_PER_TOKEN))
        end = match.end()
        if most is not None and len(pieces) > most:  # more text follows the first ``most``
            return pieces[:most]
    if end < len(text):  # trailing whitespace
        if pieces:
            pieces[-1] += text[end:]
        else:
            pieces.append(text[end:])
    return pieces


def reply_words(prompt: str, limit: int | None, *, most: int) -> tuple[list[str], str]:
    """The echo reply as one-token pieces, and the finish reason (``pieces_of``)."""
    return pieces_of("Mock reply to: " + (prompt.strip() or "(empty)"), limit, "stop", most=most)


def pieces_of(text: str, limit: int | None, natural: str, *, most: int) -> tuple[list[str], str]:
    """``text`` as one-token pieces, cut at the client's ``limit`` (finish reason ``length``,
    else ``natural``); a 400 when they would be more than ``most`` (what the call has left of
    ``MAX_GENERATED_TOKENS``)."""
    if limit is not None and limit <= most:
        pieces = token_pieces(text, limit + 1)
        return (pieces[:limit], "length") if len(pieces) > limit else (pieces, natural)
    return _pieces_within(text, most, param="max_tokens", message=(
        f"The mock provider generates at most {MAX_GENERATED_TOKENS} tokens a call, all "
        "choices together, and this answer would be longer: set max_tokens lower, or ask "
        "for fewer choices.")), natural


def _pieces_within(text: str, most: int, *, param: str, message: str) -> list[str]:
    """``text`` as one-token pieces; a 400 naming ``param`` when they are more than ``most``."""
    pieces = token_pieces(text, most + 1)
    if len(pieces) > most:
        raise errors.InvalidRequest(message, param=param)
    return pieces


def _logprob(piece: str) -> float:
    return -(zlib.crc32(piece.encode()) % 1000 + 1) / 1000


def logprob_entries(pieces: list[str], top: int) -> list[Json]:
    """OpenAI's ``logprobs.content`` entries: the piece, then ``top`` alternatives (the piece
    first, each next one 0.5 less likely)."""
    entries: list[Json] = []
    for piece in pieces:
        first = _logprob(piece)
        tokens = [piece, *(a for a in _ALTERNATIVES if a != piece)][:top]
        entries.append({"token": piece, "logprob": first, "bytes": list(piece.encode()),
                        "top_logprobs": [{"token": t, "logprob": round(first - 0.5 * i, 3),
                                          "bytes": list(t.encode())}
                                         for i, t in enumerate(tokens)]})
    return entries


@dataclass(frozen=True, slots=True)
class Answer:
    """One choice's answer: its one-token pieces, finish reason, and the function it calls
    (None: a text answer)."""

    pieces: list[str]
    finish: str
    tool: str | None
    logprobs: int | None  # alternatives per token; None: no logprobs asked for


def _last_user_text(request: ChatRequest) -> str:
    users = [m for m in request.messages if m.role == "user"]
    return users[-1].text() if users else ""


WHO = "Mock models"


def _check_strict(request: ChatRequest, tools: list[Tool]) -> None:
    """OpenAI's 400 for a ``strict`` schema that breaks the strict rules."""
    for i, tool in enumerate(tools):
        if tool.function.strict:
            problem = strict_problem(tool.function.parameters or {})
            if problem is not None:
                raise errors.InvalidRequest(
                    f"Invalid schema for function {tool.function.name!r}: {problem}.",
                    param=f"tools[{i}].function.parameters")
    spec = request.response_format.json_schema if request.response_format else None
    if spec and spec.get("strict") is True:
        problem = strict_problem(spec.get("schema") or {})
        if problem is not None:
            raise errors.InvalidRequest(f"Invalid schema for response_format: {problem}.",
                                        param="response_format")


def _called_function(request: ChatRequest, tools: list[Tool]) -> FunctionDef | None:
    """The function the answer calls (see the module docstring), or None."""
    choice = request.tool_choice
    if not tools:
        if choice == "required" or isinstance(choice, dict):
            raise errors.InvalidRequest("tool_choice is only allowed when tools are specified.",
                                        param="tool_choice")
        return None
    if choice == "none" or request.messages[-1].role == "tool":
        return None
    functions = [tool.function for tool in tools]
    if isinstance(choice, dict):
        kind = choice.get("type", "function")
        if kind == "allowed_tools":
            functions = _allowed(functions, choice.get("allowed_tools"))
        elif kind == "function":
            return _named(functions, _name(choice), param="tool_choice")
        else:
            raise errors.InvalidRequest(
                "tool_choice must be 'none', 'auto', 'required', or an object of type "
                f"'function' or 'allowed_tools', not {kind!r}.", param="tool_choice")
    pairs = [(f.name, f.description or "") for f in functions]
    return functions[pick_tool(pairs, _last_user_text(request))]


def _name(choice: object) -> object:
    """The name in ``{"type": "function", "function": {"name": ...}}``, else None."""
    named = choice.get("function") if isinstance(choice, dict) else None
    return named.get("name") if isinstance(named, dict) else None


def _named(functions: list[FunctionDef], wanted: object, *, param: str) -> FunctionDef:
    for function in functions:
        if function.name == wanted:
            return function
    raise errors.InvalidRequest(
        f"{param} names a function that is not in tools: {wanted!r}.", param=param)


def _allowed(functions: list[FunctionDef], allowed: object) -> list[FunctionDef]:
    """The functions OpenAI's ``allowed_tools`` tool choice restricts the answer to (``{"mode":
    "auto" | "required", "tools": [{"type": "function", "function": {"name": ...}}, ...]}``);
    under either mode the answer calls one, as under ``"auto"`` and ``"required"``."""
    listed = allowed.get("tools") if isinstance(allowed, dict) else None
    if not isinstance(allowed, dict) or not isinstance(listed, list) or not listed \
            or allowed.get("mode") not in ("auto", "required"):
        raise errors.InvalidRequest(
            'tool_choice.allowed_tools must be {"mode": "auto" or "required", "tools": [...]}, '
            "with at least one tool.", param="tool_choice.allowed_tools")
    return [_named(functions, _name(tool), param=f"tool_choice.allowed_tools.tools[{i}]")
            for i, tool in enumerate(listed)]


def _text(request: ChatRequest) -> str:
    """A text answer: JSON when ``response_format`` asks for it, else the echo."""
    echo = "Mock reply to: " + (_last_user_text(request).strip() or "(empty)")
    form = request.response_format
    if form is None or form.type == "text":
        return echo
    if form.type == "json_object":
        return orjson.dumps({"reply": echo}).decode()
    schema = (form.json_schema or {}).get("schema")
    return orjson.dumps(instance(schema if isinstance(schema, dict) else {})).decode()


def chat_answer(request: ChatRequest, default_limit: int | None = None) -> Answer:
    """The answer to ``request``, cut at its token limit, else at ``default_limit`` (the
    target's ``max_tokens_default``: ``routing.table``)."""
    if request.top_logprobs and not request.logprobs:
        raise errors.InvalidRequest("logprobs must be true when top_logprobs is given.",
                                    param="top_logprobs")
    if request.model_extra:
        refuse_outputs(request.model_extra, who=WHO)
    for i, message in enumerate(request.messages):
        if message.tool_calls:
            function_calls(message, param=f"messages[{i}]", who=WHO)
    tools = function_tools(request, who=WHO)
    if tools or request.response_format is not None:
        _check_strict(request, tools)
    function = _called_function(request, tools)
    if function is None:
        text, natural = _text(request), "stop"
    else:
        text = orjson.dumps(instance(function.parameters or {})).decode()
        natural = "tool_calls"
    limit = request.token_limit()
    pieces, finish = pieces_of(text, default_limit if limit is None else limit, natural,
                             most=MAX_GENERATED_TOKENS // (request.n or 1))
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    return Answer(pieces, finish, None if function is None else function.name, logprobs)


def chat_message(answer: Answer, call_id: str) -> Json:
    text = "".join(answer.pieces)
    if answer.tool is None:
        return {"role": "assistant", "content": text, "refusal": None}
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": call_id, "type": "function",
         "function": {"name": answer.tool, "arguments": text}}]}


@dataclass(frozen=True, slots=True)
class Completion:
    """One legacy completion choice: its prompt, the prompt's one-token pieces when ``echo``
    asks for it (else none), the generated one-token pieces and finish reason, and the
    alternatives per token its ``logprobs`` show (None: none asked for)."""

    prompt: str
    echoed: list[str]
    pieces: list[str]
    finish: str
    top: int | None

    def text(self) -> str:
        """The choice's ``text``: the echoed prompt, then what was generated."""
        return "".join(self.echoed) + "".join(self.pieces)

    def logprobs(self, pieces: list[str], offset: int) -> Json | None:
        """The completions API's ``logprobs`` of generated ``pieces``, which start ``offset``
        characters into what was generated: ``tokens``, ``token_logprobs``, ``top_logprobs``
        (the piece and its runners-up, ``top`` of them, as token -> log-probability) and
        ``text_offset`` (where each token starts, counted from the start of the prompt, as
        OpenAI counts, echoed or not)."""
        if self.top is None:
            return None
        entries = logprob_entries(pieces, self.top)
        # one offset a piece: nothing generated has none (``initial`` alone would be one)
        starts = list(itertools.accumulate((len(p) for p in pieces[:-1]),
                                           initial=len(self.prompt) + offset)) if pieces else []
        return {"tokens": [e["token"] for e in entries],
                "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                                 for e in entries],
                "text_offset": starts}

    def echo_logprobs(self) -> Json | None:
        """The ``logprobs`` of the echoed prompt's pieces, as OpenAI and vLLM give them with
        ``echo``: the first token has no log-probability (nothing precedes it) and no
        alternatives; offsets from 0."""
        if self.top is None or not self.echoed:
            return None
        found = self.logprobs(self.echoed, -len(self.prompt))
        assert found is not None
        found["token_logprobs"][0] = None
        found["top_logprobs"][0] = None
        return found

    def all_logprobs(self) -> Json | None:
        """The ``logprobs`` of the whole ``text`` (the echoed prompt's, then the generated)."""
        generated = self.logprobs(self.pieces, 0)
        echoed = self.echo_logprobs()
        if generated is None or echoed is None:
            return generated
        return {key: echoed[key] + generated[key] for key in generated}


def completion_choices(call: CompletionCall, default_limit: int | None = None
                       ) -> list[Completion]:
    """The choices of a legacy completion, as OpenAI orders them: ``n`` for each prompt, the
    choice ``i`` of prompt ``p`` at index ``p * n + i``, each cut at ``max_tokens``, else at
    ``default_limit`` (the target's). An echoed prompt's pieces count against
    ``MAX_GENERATED_TOKENS`` as generated ones do."""
    request = call.request
    limit = default_limit if request.max_tokens is None else request.max_tokens
    prompts, n = request.prompt_texts(), request.n or 1
    if len(prompts) * n > MAX_CHOICES:
        raise errors.InvalidRequest(
            f"The mock provider answers at most {MAX_CHOICES} choices a call; this one asks "
            f"for {len(prompts)} prompts times n={n}: send fewer prompts, or a smaller n.",
            param="n" if n > 1 else "prompt")
    left = MAX_GENERATED_TOKENS // n  # tokens each prompt's choices may still take
    replies: list[Completion] = []
    for prompt in prompts:
        echoed: list[str] = []
        if request.echo:
            echoed = _pieces_within(prompt, left, param="echo", message=(
                f"The mock provider returns at most {MAX_GENERATED_TOKENS} tokens a call, "
                "all choices together, echoed prompts included, and this answer would be "
                "longer: send shorter prompts, or ask for fewer choices."))
            left -= len(echoed)
        pieces, finish = reply_words(prompt, limit, most=left)
        left -= len(pieces)
        replies.extend(Completion(prompt, echoed, pieces, finish, request.logprobs)
                       for _ in range(n))
    return replies


def completion_usage(call: CompletionCall, replies: list[Completion]) -> Usage:
    """Each prompt counted once, each choice's pieces (one token each)."""
    return Usage(prompt_tokens=sum(estimate_tokens(p) for p in call.request.prompt_texts()),
                 completion_tokens=sum(len(reply.pieces) for reply in replies))


