"""The ``calls`` table: one row per client request (see ``app.calllog.record.CallRecord``).

On Postgres the table is range-partitioned by month on ``created_at`` (the migration in
``app/db/migrations`` creates it so), which is why the primary key is ``(id, created_at)``: a
partitioned table's unique keys must contain the partition key. ``created_at`` is fixed when
the gateway opens the record, so a redelivered record has the same key and ``ON CONFLICT DO
NOTHING`` drops it.
Column names equal the keys of ``CallRecord.to_row()``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    caller: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    public_model: Mapped[str | None] = mapped_column(String(256))
    provider: Mapped[str | None] = mapped_column(String(128))
    target_model: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    stream: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    upstream_ms: Mapped[float | None] = mapped_column(Float)
    overhead_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(20, 10))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    response_model: Mapped[str | None] = mapped_column(String(256))
    system_fingerprint: Mapped[str | None] = mapped_column(String(128))
    end_user: Mapped[str | None] = mapped_column(String(256))
    tags: Mapped[dict[str, str] | None] = mapped_column(Json)
    request_body: Mapped[dict[str, Any] | None] = mapped_column(Json)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(Json)

    __table_args__ = (
        Index("ix_calls_created_at", "created_at"),
        Index("ix_calls_public_model_created_at", "public_model", "created_at"),
        Index("ix_calls_provider_created_at", "provider", "created_at"),
        Index("ix_calls_caller_created_at", "caller", "created_at"),
        Index("ix_calls_status_created_at", "status", "created_at"),
    )


class DriftBaseline(Base):
    """A drift baseline (``app.metrics.baselines.Baseline``): the first saved one wins."""

    __tablename__ = "drift_baselines"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    provider: Mapped[str] = mapped_column(String(128), primary_key=True)
    signal: Mapped[str] = mapped_column(String(32), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
