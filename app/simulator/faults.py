"""Per-request knobs carried in headers: latency overrides, drift, and injected failures.

- ``X-Return-Error: <status>``: that status with the route's error body (429 adds
  ``Retry-After: 1``); on Google's routes a client error Google has no status for (413, 422...)
  is its 400 ``INVALID_ARGUMENT``, as Google answers one (``errors.google_error``).
- ``X-Sim-Retry-After: <value>``: the ``Retry-After`` the injected error carries instead (any
  status; seconds or an HTTP date, sent as given).
- ``X-Sim-Hang: 1``: never answer; wait until the client disconnects.
- ``X-Sim-Cut-After: N``: stream N content chunks, then drop the connection (no terminator).
- ``X-Sim-Error-After: N``: stream N content chunks, then an in-band error frame.
- ``X-Sim-Aws-Error-Code: CODE``: on the Bedrock and SageMaker routes, ``X-Sim-Error-After``'s
  in-band failure is an event-stream ``error`` message (``:message-type: error``, with
  ``:error-code: CODE`` and ``:error-message`` headers and an empty payload: the framing's own
  error, which botocore reads as it reads an ``exception``) instead of an ``exception`` message.
- ``X-Sim-End-After: N``: stream N content chunks, then end the response cleanly with no
  finish_reason and no terminator (``[DONE]``, ``message_stop``): a truncated answer.
- ``X-Sim-Done-After: N``: stream N content chunks, then end the stream as a finished one
  (OpenAI's chat and completions: the usage frame if asked, then ``[DONE]``) with no
  finish_reason, as some OpenAI-compatible servers end an answer they cut short (other dialects
  end as with ``X-Sim-End-After``).
- ``X-Sim-Cut-Body: N``: a complete (non-streamed) 200 answer goes out with its headers, its
  whole ``Content-Length`` among them, and only its first N bytes; then the connection is
  dropped (a server killed while it sent its answer).
- ``X-Sim-Garbage: 1``: a complete (non-streamed) 200 answer's body is an HTML page instead of
  the dialect's JSON (what a proxy in front of a model server may answer).
- ``X-Sim-Echo-Key: 1``: the injected error (``X-Return-Error``, ``X-Sim-Error-After``) echoes
  the credential the request carried (``Authorization``, ``api-key`` or ``x-api-key``) in its
  message, type and param, as a careless upstream might.
- ``X-Sim-TTFT-Ms`` / ``X-Sim-TPOT-Ms``: this request's latency instead of the process's.
- ``X-Sim-Completion-Tokens: N``: natural answer length (before ``max_tokens`` cuts it).
- ``X-Sim-Refusal: 1``: answer with a refusal sentence.
- ``X-Sim-Fingerprint: fp_x``: report this ``system_fingerprint``.
- ``X-Sim-Model: name``: report this ``model``.
- ``X-Sim-Cache-Read-Tokens: N``: report N prompt tokens as read from the prompt cache.
- ``X-Sim-Usage-Count: name=JSON``: every ``"name": <number>`` in the answer (a complete one's
  body or each stream frame) says ``JSON`` instead (``output_tokens=16.0``,
  ``input_tokens="13"``, ``cached_tokens=-5``, ``candidatesTokenCount=true``): usage no
  provider could bill, as an upstream may send it. Not for AWS event streams (their frames carry
  a checksum).
- ``X-Sim-Role-Early: 1``: an OpenAI chat stream sends its role chunks (``delta`` with the role
  and empty content) right after the headers, before the time to first token, as some
  OpenAI-compatible servers and proxies do, instead of with the first token.
- ``X-Sim-Split-Pair: 1``: an OpenAI chat stream's first text chunk is followed by two more
  that carry U+1F600 (an emoji) cut between its UTF-16 halves, each the JSON escape of one
  surrogate (``"\\ud83d"``, then ``"\\ude00"``): valid JSON, but not text until joined, as
  a JavaScript server that cuts its text by code units sends it.

A malformed value is a 400, so a typo in a test fails loudly instead of silently doing nothing.

Headers reach only the requests that carry them. For a process-wide change that also reaches
requests relayed by a gateway (which drops its clients' ``X-Sim-*`` headers), ``POST /_sim/state``
sets the drift fields ``completion_tokens``, ``length_spread``, ``refusal_rate``,
``fingerprint`` and ``model`` (see ``drift``); a header, when sent, wins over them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from http import HTTPStatus

import orjson

from app.simulator.asgi import Message, Request, Send, SimError, has_knobs
from app.simulator.options import SimOptions


@dataclass(frozen=True, slots=True)
class Knobs:
    """The header knobs of one request; None means "not set, use the process default"."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    completion_tokens: int | None = None
    refusal: bool = False
    fingerprint: str | None = None
    model: str | None = None
    cache_read_tokens: int | None = None
    return_error: int | None = None
    cut_after: int | None = None
    error_after: int | None = None
    end_after: int | None = None
    done_after: int | None = None
    hang: bool = False
    cut_body: int | None = None
    garbage: bool = False
    retry_after: str | None = None
    role_early: bool = False
    split_pair: bool = False
    usage_count: tuple[re.Pattern[bytes], bytes] | None = None
    """``X-Sim-Usage-Count``: what a count's number is matched by, and what replaces it."""
    echo_key: str | None = None
    """The credential the request carried, when ``X-Sim-Echo-Key`` asks to echo it."""
    aws_error_code: str | None = None
    """``X-Sim-Aws-Error-Code``: an AWS stream's in-band failure as an ``error`` message."""


NO_KNOBS = Knobs()


def _number(headers: dict[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SimError(400, f"Header {name} must be a number, got {raw!r}.") from None
    if value < 0:
        raise SimError(400, f"Header {name} must not be negative, got {raw!r}.")
    return value


def _count(headers: dict[str, str], name: str) -> int | None:
    value = _number(headers, name)
    return None if value is None else int(value)


def _flag(headers: dict[str, str], name: str) -> bool:
    return headers.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def read_knobs(req: Request) -> Knobs:
    """The knobs ``req``'s headers set (the shared ``NO_KNOBS`` when none is, the common case)."""
    if not has_knobs(req.raw_headers):
        return NO_KNOBS
    headers = req.headers
    status = _count(headers, "x-return-error")
    if status is not None and not 400 <= status <= 599:
        raise SimError(400, f"X-Return-Error must be a status from 400 to 599, got {status}.")
    return Knobs(
        ttft_ms=_number(headers, "x-sim-ttft-ms"),
        tpot_ms=_number(headers, "x-sim-tpot-ms"),
        completion_tokens=_count(headers, "x-sim-completion-tokens"),
        refusal=_flag(headers, "x-sim-refusal"),
        fingerprint=headers.get("x-sim-fingerprint"),
        model=headers.get("x-sim-model"),
        cache_read_tokens=_count(headers, "x-sim-cache-read-tokens"),
        return_error=status,
        cut_after=_count(headers, "x-sim-cut-after"),
        error_after=_count(headers, "x-sim-error-after"),
        end_after=_count(headers, "x-sim-end-after"),
        done_after=_count(headers, "x-sim-done-after"),
        hang=_flag(headers, "x-sim-hang"),
        cut_body=_count(headers, "x-sim-cut-body"),
        garbage=_flag(headers, "x-sim-garbage"),
        retry_after=_retry_after(headers),
        echo_key=_credential(headers) if _flag(headers, "x-sim-echo-key") else None,
        role_early=_flag(headers, "x-sim-role-early"),
        split_pair=_flag(headers, "x-sim-split-pair"),
        aws_error_code=_short(headers, "x-sim-aws-error-code", "X-Sim-Aws-Error-Code"),
        usage_count=_usage_count(headers),
    )


def _usage_count(headers: dict[str, str]) -> tuple[re.Pattern[bytes], bytes] | None:
    raw = headers.get("x-sim-usage-count")
    if raw is None:
        return None
    name, _, value = raw.partition("=")
    name = name.strip()
    try:
        said = orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        said = b""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not said:
        raise SimError(400, "X-Sim-Usage-Count must be name=JSON (output_tokens=16.0), got "
                            f"{raw!r}.")
    key = b'"' + name.encode() + b'":'
    return re.compile(re.escape(key) + rb"\s*-?\d+(?:\.\d+)?"), key + said


def _short(headers: dict[str, str], name: str, label: str) -> str | None:
    value = headers.get(name)
    if value is not None and not (0 < len(value) <= 64 and value.isprintable()):
        raise SimError(400, f"{label} must be 1 to 64 printable characters.")
    return value


def _retry_after(headers: dict[str, str]) -> str | None:
    return _short(headers, "x-sim-retry-after", "X-Sim-Retry-After")


def _credential(headers: dict[str, str]) -> str:
    for name in ("authorization", "api-key", "x-api-key"):
        value = headers.get(name)
        if value:
            return value
    return ""


def _echoing(knobs: Knobs, status: int, message: str, kind: str | None) -> SimError:
    echo = knobs.echo_key
    if echo is None:
        return SimError(status, message, kind=kind)
    return SimError(status, f"{message} Received credential: {echo}", kind=echo, param=echo)


def stream_failure(knobs: Knobs, message: str, kind: str | None) -> SimError:
    """The error an ``X-Sim-Error-After`` stream reports in-band (echoing, see above)."""
    return _echoing(knobs, 500, message, kind)


def injected_error(knobs: Knobs) -> SimError | None:
    """The failure ``X-Return-Error`` asks for, if any (429 with ``Retry-After: 1``, any
    status with ``X-Sim-Retry-After``'s)."""
    status = knobs.return_error
    if status is None:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    err = _echoing(knobs, status, f"Simulated upstream error: {status} {phrase}.", None)
    if knobs.retry_after is not None:
        err.headers = [(b"retry-after", knobs.retry_after.encode("latin-1"))]
    elif status == 429:
        err.headers = [(b"retry-after", b"1")]
    return err


GARBAGE = (b"<html><head><title>200 OK</title></head><body>An HTML page where JSON was due."
           b"</body></html>\n")
"""The body ``X-Sim-Garbage`` answers."""


def mangled(knobs: Knobs, send: Send) -> Send:
    """``send`` playing ``X-Sim-Cut-Body``, ``X-Sim-Garbage`` and ``X-Sim-Usage-Count`` on a
    complete 200 answer (one with a ``Content-Length``; a stream goes through untouched but for
    ``X-Sim-Usage-Count``: ``X-Sim-Cut-After`` cuts those), or ``send`` itself when none is
    set."""
    if knobs.cut_body is None and not knobs.garbage and knobs.usage_count is None:
        return send
    held: Message | None = None  # a complete answer's start, sent with its body

    async def mangling(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 200 and any(
                name == b"content-length" for name, _ in message.get("headers", ())):
            held = message
            return
        if held is None or message["type"] != "http.response.body" \
                or message.get("more_body", False):
            if knobs.usage_count is not None and message["type"] == "http.response.body":
                pattern, said = knobs.usage_count
                message = {**message, "body": pattern.sub(said, message.get("body", b""))}
            await send(message)
            return
        start, held = held, None
        body: bytes = message.get("body", b"")
        if knobs.usage_count is not None:
            pattern, said = knobs.usage_count
            body = pattern.sub(said, body)
            start = {**start, "headers": [
                *((n, v) for n, v in start["headers"] if n != b"content-length"),
                (b"content-length", b"%d" % len(body))]}
        if knobs.garbage:
            body = GARBAGE
            start = {**start, "headers": [
                *((n, v) for n, v in start["headers"]
                  if n not in (b"content-length", b"content-type")),
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"%d" % len(body))]}
        await send(start)
        if knobs.cut_body is None:
            await send({"type": "http.response.body", "body": body})
            return
        # Never finished: the server drops the connection once the handler returns.
        await send({"type": "http.response.body", "body": body[:knobs.cut_body],
                    "more_body": True})

    return mangling


class Latency:
    """Waits in seconds for the latency model, jittered by a seeded generator (deterministic
    for a given request order)."""

    __slots__ = ("_jitter", "_rng", "_tpot_ms", "_ttft_ms")

    def __init__(self, options: SimOptions) -> None:
        self._ttft_ms = options.ttft_ms
        self._tpot_ms = options.tpot_ms
        self._jitter = options.jitter
        self._rng = random.Random(options.seed)

    def reseed(self, seed: int) -> None:
        """Restart the jitter sequence (on ``/_sim/reset``)."""
        self._rng.seed(seed)

    def _jittered(self, ms: float) -> float:
        if ms <= 0:
            return 0.0
        if self._jitter > 0:
            ms *= 1.0 + self._rng.uniform(-self._jitter, self._jitter)
        return ms / 1000.0

    def ttft(self, knobs: Knobs) -> float:
        """Seconds before the first token."""
        return self._jittered(self._ttft_ms if knobs.ttft_ms is None else knobs.ttft_ms)

    def tpot(self, knobs: Knobs) -> float:
        """Seconds between two later tokens."""
        return self._jittered(self._tpot_ms if knobs.tpot_ms is None else knobs.tpot_ms)

    def is_zero(self, knobs: Knobs) -> bool:
        """Whether this request waits at all (the fast path skips every sleep when not)."""
        ttft = self._ttft_ms if knobs.ttft_ms is None else knobs.ttft_ms
        tpot = self._tpot_ms if knobs.tpot_ms is None else knobs.tpot_ms
        return ttft <= 0 and tpot <= 0
