"""The canonical call record, filled in as a request goes through the gateway."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from app.usage import Usage

Status = Literal["ok", "error", "cancelled"]
Row = dict[str, Any]
"""A call record as stored: see ``CallRecord.to_row``."""


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
    request_id: str | None = None
    """The client's ``x-request-id``, when it sent a sane one; not unique."""
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
    usage: Usage | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None
    response_model: str | None = None
    system_fingerprint: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    request_body: dict[str, Any] | None = None
    response_body: dict[str, Any] | None = None
    """Bodies, only when body capture is on (redacted before they are set)."""
    wants_json: bool = False
    """The request asked for JSON output (``response_format``)."""
    answer_text: str | None = None
    """The answer's text for the drift signals: its head, or all of it when JSON was asked for.
    Never stored or logged; the metrics drop it once they have seen it."""

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def overhead_ms(self) -> float | None:
        """Time the gateway itself added: wall time minus time waiting on upstreams."""
        if self.latency_ms is None:
            return None
        return max(0.0, self.latency_ms - self.upstream_ms)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out.pop("answer_text")
        out["overhead_ms"] = self.overhead_ms
        return out

    def to_row(self) -> Row:
        """The flat, JSON-safe form stored in Postgres, SQLite, Redis and the spool file.

        Times are epoch seconds (floats); ``attempts`` is a list of plain dicts."""
        usage = self.usage
        return {
            "id": self.id,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "caller": self.caller,
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
            "end_user": self.user,
            "tags": self.metadata,
            "request_body": self.request_body,
            "response_body": self.response_body,
        }


class CallSink(Protocol):
    """Where finished records go. ``submit`` must not block or raise into the request."""

    def submit(self, record: CallRecord) -> None: ...


class LogSink:
    """Writes each record as one structured log line (at DEBUG, so it costs nothing unless on)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("switchboard.calls")

    def submit(self, record: CallRecord) -> None:
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("call %s", record.to_dict())
