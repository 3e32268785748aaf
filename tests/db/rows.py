"""Call rows for the store tests, built the way the gateway builds them (``CallRecord.to_row``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.calllog.record import Attempt, CallRecord, Row
from app.usage import Usage


def full_row(request_id: str, *, created_at: float | None = None) -> Row:
    """A row with every column set (bodies included, as with body capture on)."""
    created = time.time() if created_at is None else created_at
    record = CallRecord(
        id=request_id, endpoint="/v1/chat/completions", caller="key_0042", stream=True,
        created_at=created, finished_at=created + 0.25, public_model="chat", provider="gpu-a",
        target_model="meta-llama/Llama-3.1-8B-Instruct",
        attempts=[Attempt("openai", "gpt-4o-mini", 429, "rate_limit_error", 12.5),
                  Attempt("gpu-a", "meta-llama/Llama-3.1-8B-Instruct", 200, None, 230.0)],
        status="ok", http_status=200, error_type=None, error_message=None,
        latency_ms=250.0, ttft_ms=40.5, upstream_ms=242.5,
        usage=Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=64, estimated=True),
        cost_usd=0.0001234567, finish_reason="stop", response_model="llama-3.1-8b",
        system_fingerprint="fp_abc123", end_user="end-user-7", tags={"team": "search"},
        request_body={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        response_body={"choices": [{"message": {"content": "hello"}}]})
    return record.to_row()


def error_row(request_id: str, *, created_at: float | None = None) -> Row:
    """A failed call: no usage, no cost, an error message, no bodies."""
    record = CallRecord(
        id=request_id, endpoint="/v1/embeddings", caller="master",
        created_at=time.time() if created_at is None else created_at, public_model="embed",
        status="error", http_status=504, error_type="timeout",
        error_message="upstream timed out after 30 s", latency_ms=30000.0)
    return record.to_row()


def batch(count: int, *, prefix: str = "req", created_at: float | None = None) -> list[Row]:
    """``count`` distinct rows, one in five a failed call."""
    return [(error_row if i % 5 == 4 else full_row)(f"{prefix}-{i:05d}", created_at=created_at)
            for i in range(count)]


def epoch(year: int, month: int, day: int = 15) -> float:
    """Epoch seconds of noon UTC on the given day."""
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()
