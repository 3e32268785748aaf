"""Drift baselines: one row per public model, provider and signal (``app.metrics.baselines``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "drift_baselines",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("provider", sa.String(128), primary_key=True),
        sa.Column("signal", sa.String(32), primary_key=True),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_baselines")
