"""What the privacy stage found and did: ``calls.privacy_entities`` and ``calls.privacy_action``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("calls", sa.Column("privacy_entities", _JSON))
    op.add_column("calls", sa.Column("privacy_action", sa.String(16)))


def downgrade() -> None:
    op.drop_column("calls", "privacy_action")
    op.drop_column("calls", "privacy_entities")
