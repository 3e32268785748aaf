"""Feedback on calls: the ``feedback`` table (``POST /v1/feedback``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float()),
        sa.Column("label", sa.String(128)),
        sa.Column("comment", sa.Text()),
    )
    op.create_index("ix_feedback_call_id", "feedback", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_call_id", table_name="feedback")
    op.drop_table("feedback")
