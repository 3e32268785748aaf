"""The key change log: ``key_changes``, a row for every update or delete of a key or a team.

Every gateway process re-read every cached key from the database every 30 s (~12% of a core at
100,000 keys). It now reads the changes made since its last read and re-reads only the keys they
touch (``app.db.key_changes`` has the triggers and says how).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.key_changes import create_triggers, drop_triggers

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.create_table(
        "key_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("team_id", sa.String(64)),
    )
    op.create_index("ix_key_changes_at", "key_changes", ["at"])
    for statement in create_triggers(op.get_context().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_triggers(op.get_context().dialect.name):
        op.execute(statement)
    op.drop_index("ix_key_changes_at", "key_changes")
    op.drop_table("key_changes")
