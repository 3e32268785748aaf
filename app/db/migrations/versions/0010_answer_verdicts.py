"""What an answer was, for experiment reports: ``calls.refusal`` and ``calls.json_valid``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.add_column("calls", sa.Column("refusal", sa.Boolean()))
    op.add_column("calls", sa.Column("json_valid", sa.Boolean()))


def downgrade() -> None:
    op.drop_column("calls", "json_valid")
    op.drop_column("calls", "refusal")
