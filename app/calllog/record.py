"""The canonical call record, filled in as a request goes through the gateway.

(Just over 400 lines: the record's fields, each with its docstring, its row form and its
scrubs, which all read the same fields; split, each part would restate them.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import orjson

from app.usage import Usage

Status = Literal["ok", "error", "cancelled"]
Row = dict[str, Any]
"""A call record as stored: see ``CallRecord.to_row``."""

TRUNCATED = "...[truncated]"
"""The end of a string cut to its cap (the cut string, marker included, is exactly the cap)."""
TOO_DEEP = "<truncated: depth>"
"""Stands for a JSON object or array nested deeper than ``MAX_BODY_DEPTH``."""
MAX_BODY_DEPTH = 200
"""The deepest level of a captured body that is kept (the body itself is level 1). The request
parser's own limit (``limits.max_json_depth``) is at most this, so a request is never cut; an
upstream's answer may be. With the row around it, and the live feed's list around rows, every
sink stays below orjson's limit (254 levels) and pydantic's (255) when the admin API reads the
row back."""
TEXT_CAPS: dict[str, int] = {
    "public_model": 256, "end_user": 256, "error_message": 2048, "finish_reason": 32,
    "response_model": 256, "system_fingerprint": 128,
}
"""The most characters each text field of a row that a client or an upstream chooses keeps
(never more than its column holds). The other text fields are the gateway's own or come from
the config (ids, caller, endpoint, provider, target model, error type)."""
ID_CAP = 64
"""The most characters of ``key_id`` and ``team_id`` (their columns' length)."""
MAX_TAGS = 16
"""The most ``metadata`` entries a row keeps; past it the last entry is ``TRUNCATED``: "<n>
more"."""
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 512
_TEXT_CAPS = tuple(TEXT_CAPS.items())
_T = TypeVar("_T")
_log = logging.getLogger("switchboard.calllog")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes as a number


def bound_text(value: Any, cap: int) -> str:
    """``value`` as a string of at most ``cap`` characters (``cap`` >= ``len(TRUNCATED)``): a
    longer one is cut and ends with ``TRUNCATED``. A value that is not a string is written with
    ``str()``."""
    text = value if type(value) is str else _as_text(value)
    if len(text) <= cap:
        return text
    return text[: cap - len(TRUNCATED)] + TRUNCATED


def _as_text(value: Any) -> str:
    if isinstance(value, str):  # a subclass: its plain string, whatever its __str__ says
        return str.__str__(value)
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - an object whose __str__ fails must not cost the record
        return f"<{type(value).__name__}>"


def _clean(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 encoder takes) replaced by ``?``."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


def json_safe(value: Any, depth: int = MAX_BODY_DEPTH, *, clean: bool = False) -> Any:
    """A copy of the JSON-like ``value`` that orjson can always write: objects and arrays more
    than ``depth`` levels deep (``value`` itself is level 1) become ``TOO_DEEP``, keys strings,
    tuples arrays, integers beyond 64 bits and any other object their ``str()``. With ``clean``,
    lone surrogates in strings are replaced too (the only other thing orjson refuses).

    Recursive, one frame a level: ``depth`` bounds the recursion."""
    kind = type(value)
    if kind is str:
        return _clean(value) if clean else value
    if value is None or kind is bool or kind is float:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, dict):
        if depth <= 0:
            return TOO_DEEP
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                key = _as_text(key)
            out[_clean(key) if clean else key] = json_safe(item, depth - 1, clean=clean)
        return out
    if isinstance(value, list | tuple):
        if depth <= 0:
            return TOO_DEEP
        items: list[Any] = []
        for item in value:
            items.append(json_safe(item, depth - 1, clean=clean))
        return items
    # Subclasses (str and int enums...) as their base type; then anything else as its str().
    if isinstance(value, int):
        return json_safe(int.__int__(value), depth, clean=clean)
    if isinstance(value, float):
        return float.__float__(value)
    text = _as_text(value)
    return _clean(text) if clean else text


def dump_row(row: Row) -> bytes:
    """``row`` as JSON bytes; never raises. A row orjson refuses (a lone surrogate, or a value
    ``to_row`` did not produce) is written as ``json_safe(row, clean=True)``, and, should even
    that fail, as its ``stub_row``: the record's failure costs the record's detail, never its
    batch."""
    try:
        return orjson.dumps(row)
    except TypeError:
        pass
    try:
        return orjson.dumps(json_safe(row, MAX_BODY_DEPTH + 1, clean=True))
    except Exception:  # noqa: BLE001 - last resort: the stub holds only values orjson takes
        return orjson.dumps(stub_row(row))


def stub_row(row: Row) -> Row:
    """What is kept of a row no sink could take: its id, time, caller (key and team ids
    included), endpoint and status, the reason in ``error_message``, everything else empty."""
    def text(key: str, cap: int) -> str:
        return _clean(bound_text(row.get(key) or "", cap))

    def optional(key: str) -> str | None:
        value = row.get(key)
        return None if value is None else _clean(bound_text(value, ID_CAP))
    created = row.get("created_at")
    created_at = created if type(created) is float and math.isfinite(created) else 0.0
    status = row.get("http_status")
    return {
        "id": text("id", 128), "created_at": created_at, "caller": text("caller", 128),
        "key_id": optional("key_id"), "team_id": optional("team_id"),
        "endpoint": text("endpoint", 64), "status": "error",
        "http_status": status if type(status) is int and 0 <= status < 1000 else 0,
        "error_type": "unstorable_record",
        "error_message": "The call record could not be serialised; only this stub was kept.",
        "attempts": [], "stream": False, "tokens_estimated": False,
    }


def convert_rows(rows: Sequence[Row], convert: Callable[[Row], _T]) -> list[_T]:
    """``convert`` applied to each row on its own, so one odd row cannot fail its batch: a row
    it fails on is converted as ``json_safe(row, clean=True)``, and if that fails too, as its
    ``stub_row`` (logged)."""
    out: list[_T] = []
    for row in rows:
        try:
            out.append(convert(row))
            continue
        except Exception:  # noqa: BLE001 - any failure is this row's alone
            pass
        try:
            out.append(convert(json_safe(row, MAX_BODY_DEPTH + 1, clean=True)))
        except Exception as exc:  # noqa: BLE001 - as above
            _log.error("call record %r has a value the store cannot take (%s); storing a stub",
                       stub_row(row)["id"], type(exc).__name__)
            out.append(convert(stub_row(row)))
    return out


def _bound_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` within ``MAX_TAGS``, ``MAX_TAG_KEY`` and ``MAX_TAG_VALUE`` (itself if it is)."""
    if len(tags) <= MAX_TAGS:
        for key, value in tags.items():
            if (type(key) is not str or type(value) is not str or len(key) > MAX_TAG_KEY
                    or len(value) > MAX_TAG_VALUE):
                break
        else:
            return tags
    out: dict[str, str] = {}
    keep = len(tags) if len(tags) <= MAX_TAGS else MAX_TAGS - 1
    for i, (key, value) in enumerate(tags.items()):
        if i == keep:
            break
        out[bound_text(key, MAX_TAG_KEY)] = bound_text(value, MAX_TAG_VALUE)
    if len(tags) > keep:
        out[TRUNCATED] = f"{len(tags) - keep} more"
    return out


@dataclass(slots=True)
class Attempt:
    """One try of one target."""

    provider: str
    model: str
    status: int
    error_type: str | None
    duration_ms: float


@dataclass(slots=True)
class CallRecord:
    """Everything known about one client request. The gateway fills it and emits it exactly once,
    whatever happened (success, error, cancellation, client disconnect)."""

    id: str
    """The call id: the gateway's own, unique to this call (``x-switchboard-call-id``)."""
    endpoint: str
    caller: str
    key_id: str | None = None
    """The virtual key's id when ``caller`` is ``key`` (never the key itself)."""
    team_id: str | None = None
    """The team of that key, when it has one."""
    request_id: str | None = None
    """The client's ``x-request-id``, when it sent a sane one; not unique. Stored with the
    values its privacy policy finds in it replaced by their placeholders (the client is still
    answered its own: ``ModelCall.request_id``)."""
    config_version: str | None = None
    """The version of the config the call ran on (``app.pipeline.config_version``)."""
    experiment: str | None = None
    """The A/B experiment that split the call's public model, if one did..."""
    variant: str | None = None
    """...and the variant the call was assigned to (``app.routing.experiments``)."""
    shadow_of: str | None = None
    """For a shadow variant's copy of a call: the original call's id. A copy keeps its
    original's ``key_id`` and ``team_id``, but its spend is no key's or team's (budgets, spend
    by key or team, the key and team counters: ``app.db.ledger``)."""
    refusal: bool | None = None
    """An answered chat or completion: whether it refused (``app.answers.judge``)."""
    json_valid: bool | None = None
    """An answered call that asked for JSON: whether the answer parses as JSON."""
    privacy_entities: dict[str, int] | None = None
    """Sensitive values the privacy stage found in the request, counted by entity type (never
    the values); ``None`` when it did not scan the call."""
    privacy_action: str | None = None
    """What the privacy policy did: allow, redact, private_only, block; ``none`` when it
    scanned and found nothing."""
    prompt_id: str | None = None
    """The prompt template the request rendered (``app.prompts``), if it used one..."""
    prompt_version: int | None = None
    """...and the version of it that was rendered."""
    stream: bool = False
    created_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    finished_at: float | None = None
    public_model: str | None = None
    provider: str | None = None
    target_model: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: Status = "ok"
    http_status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    body_wait_ms: float = 0.0
    """Time spent waiting for the request's body to arrive (a slow upload): part of the
    latency, not of the gateway's overhead. Not stored."""
    usage: Usage | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None
    response_model: str | None = None
    system_fingerprint: str | None = None
    end_user: str | None = None
    """The request's ``user`` (OpenAI's end-user id)."""
    tags: dict[str, str] | None = None
    """The request's ``metadata``."""
    request_body: dict[str, Any] | None = None
    response_body: dict[str, Any] | None = None
    """Bodies, only when body capture is on (redacted before they are set)."""
    wants_json: bool = False
    """The request asked for JSON output (``response_format``)."""
    answer_text: str | None = None
    """The answer's text for the drift signals: its head, or all of it when JSON was asked for.
    Never stored or logged; the metrics drop it once they have seen it."""

    def rewrite_quoted(self, change: Callable[[str], str]) -> None:
        """Apply ``change`` to the strings of the client's request the record stores:
        ``request_id``, ``end_user``, ``tags``' keys and values, and ``error_message`` (which
        may quote the request: the model it named). ``tags`` is replaced only if ``change``
        changed it."""
        if self.request_id is not None:
            self.request_id = change(self.request_id)
        if self.end_user is not None:
            self.end_user = change(self.end_user)
        tags = self.tags
        if tags:
            changed = {change(k) if type(k) is str else k: change(v) if type(v) is str else v
                       for k, v in tags.items()}
            if changed != tags:
                self.tags = changed
        if self.error_message is not None:
            self.error_message = change(self.error_message)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def overhead_of(self, elapsed_ms: float) -> float:
        """Time the gateway itself took of ``elapsed_ms`` since the call started: less the
        time waiting on upstreams and on the client's request body."""
        return max(0.0, elapsed_ms - self.upstream_ms - self.body_wait_ms)

    @property
    def overhead_ms(self) -> float | None:
        """Time the gateway itself added (``overhead_of`` the latency)."""
        if self.latency_ms is None:
            return None
        return self.overhead_of(self.latency_ms)

    def to_row(self) -> Row:
        """The flat, JSON-safe form stored in Postgres, SQLite, Redis and the spool file, and
        logged by ``LogSink``: every sink takes this same row. Never raises.

        Times are epoch seconds (floats); ``attempts`` is a list of plain dicts. Bounded
        whatever the client or upstream sent: each text field to its ``TEXT_CAPS`` length,
        ``tags`` (the request's ``metadata``) to ``MAX_TAGS`` entries of ``MAX_TAG_KEY`` /
        ``MAX_TAG_VALUE`` characters (a cut string ends with ``TRUNCATED``), and the captured
        bodies made ``json_safe`` down to ``MAX_BODY_DEPTH`` levels."""
        usage = self.usage
        row = {
            "id": self.id,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "caller": self.caller,
            "key_id": self.key_id,
            "team_id": self.team_id,
            "config_version": self.config_version,
            "experiment": self.experiment,
            "variant": self.variant,
            "shadow_of": self.shadow_of,
            "refusal": self.refusal,
            "json_valid": self.json_valid,
            "privacy_entities": self.privacy_entities,
            "privacy_action": self.privacy_action,
            "prompt_id": self.prompt_id,
            "prompt_version": self.prompt_version,
            "endpoint": self.endpoint,
            "public_model": self.public_model,
            "provider": self.provider,
            "target_model": self.target_model,
            "attempts": [{"provider": a.provider, "model": a.model, "status": a.status,
                          "error_type": a.error_type, "duration_ms": a.duration_ms}
                         for a in self.attempts],
            "status": self.status,
            "http_status": self.http_status,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "stream": self.stream,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "upstream_ms": self.upstream_ms,
            "overhead_ms": self.overhead_ms,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "tokens_estimated": usage.estimated if usage else False,
            "cost_usd": self.cost_usd,
            "finish_reason": self.finish_reason,
            "response_model": self.response_model,
            "system_fingerprint": self.system_fingerprint,
            "end_user": self.end_user,
            "tags": self.tags,
            "request_body": self.request_body,
            "response_body": self.response_body,
        }
        for key, cap in _TEXT_CAPS:
            value = row[key]
            if value is not None and (type(value) is not str or len(value) > cap):
                row[key] = bound_text(value, cap)
        if self.tags:
            row["tags"] = _bound_tags(self.tags)
        if self.request_body is not None:
            row["request_body"] = json_safe(self.request_body)
        if self.response_body is not None:
            row["response_body"] = json_safe(self.response_body)
        return row


class CallSink(Protocol):
    """Where finished records go. ``submit`` must not block or raise into the request."""

    def submit(self, record: CallRecord) -> None: ...


class LogSink:
    """Writes each record's row (``CallRecord.to_row``, so bounded like every other sink's) as
    one log line at DEBUG, so it costs nothing unless on."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("switchboard.calls")

    def submit(self, record: CallRecord) -> None:
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("call %s", record.to_row())
