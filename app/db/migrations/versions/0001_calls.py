"""The call log: the ``calls`` table and its admin-query indexes.

On Postgres the table is ``PARTITION BY RANGE (created_at)`` with monthly partitions
``calls_YYYY_MM`` (this migration creates the current and the next month's; the writer creates
later ones on demand, ``switchboard db prune`` drops old ones). On SQLite it is a plain table.
The columns are spelled out here, not imported from ``app.db.models``, so that this revision keeps
meaning what it meant when later revisions change the model.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db.partitions import create_partition_sql, month_of, next_month

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
compatible_from: str = "0001"  # the first revision

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_INDEXES = {
    "ix_calls_created_at": ["created_at"],
    "ix_calls_public_model_created_at": ["public_model", "created_at"],
    "ix_calls_provider_created_at": ["provider", "created_at"],
    "ix_calls_caller_created_at": ["caller", "created_at"],
    "ix_calls_status_created_at": ["status", "created_at"],
}


def _columns() -> list[sa.Column[object]]:
    ts = sa.DateTime(timezone=True)
    return [
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("finished_at", ts),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("public_model", sa.String(256)),
        sa.Column("provider", sa.String(128)),
        sa.Column("target_model", sa.String(256)),
        sa.Column("attempts", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("upstream_ms", sa.Float),
        sa.Column("overhead_ms", sa.Float),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("cost_usd", sa.Numeric(20, 10)),
        sa.Column("finish_reason", sa.String(32)),
        sa.Column("response_model", sa.String(256)),
        sa.Column("system_fingerprint", sa.String(128)),
        sa.Column("end_user", sa.String(256)),
        sa.Column("tags", _JSON),
        sa.Column("request_body", _JSON),
        sa.Column("response_body", _JSON),
    ]


def upgrade() -> None:
    """Create ``calls`` (partitioned on Postgres), its indexes and the first two partitions."""
    postgres = op.get_context().dialect.name == "postgresql"
    op.create_table(
        "calls", *_columns(),
        sa.PrimaryKeyConstraint("id", "created_at", name="calls_pkey"),
        postgresql_partition_by="RANGE (created_at)",
    )
    # On a partitioned table each index is created on every partition, present and future.
    for name, columns in _INDEXES.items():
        op.create_index(name, "calls", columns)
    if postgres:
        this_month = month_of(datetime.now(UTC))
        op.execute(create_partition_sql(this_month))
        op.execute(create_partition_sql(next_month(this_month)))


def downgrade() -> None:
    """Drop ``calls`` and, on Postgres, every partition with it."""
    op.drop_table("calls")
