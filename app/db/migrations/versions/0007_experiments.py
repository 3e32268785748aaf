"""A/B experiments: ``calls.experiment`` and ``calls.variant``.

A public model's calls may be split between variants (``app.routing.experiments``); every call
row names the experiment and the variant that served it. NULL for calls of models no experiment
splits and for rows stored before this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.add_column("calls", sa.Column("experiment", sa.String(128)))
    op.add_column("calls", sa.Column("variant", sa.String(128)))
    op.create_index("ix_calls_experiment_created_at", "calls", ["experiment", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_experiment_created_at", table_name="calls")
    op.drop_column("calls", "variant")
    op.drop_column("calls", "experiment")
