"""Shadow traffic: ``calls.shadow_of``, the original call a shadow variant's copy was made of.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.add_column("calls", sa.Column("shadow_of", sa.String(128)))


def downgrade() -> None:
    op.drop_column("calls", "shadow_of")
