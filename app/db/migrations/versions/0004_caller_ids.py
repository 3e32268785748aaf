"""Who made a call: ``calls.key_id`` and ``calls.team_id`` (virtual keys and their teams).

Spend per key and per team is one indexed query on the call log. Both are NULL for calls made
with the master key or without a key (loopback-only mode), and for rows stored before this
revision. On Postgres the columns and indexes reach every partition, present and future.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_INDEXES = {"ix_calls_key_id_created_at": "key_id", "ix_calls_team_id_created_at": "team_id"}


def upgrade() -> None:
    op.add_column("calls", sa.Column("key_id", sa.String(64)))
    op.add_column("calls", sa.Column("team_id", sa.String(64)))
    for name, column in _INDEXES.items():
        op.create_index(name, "calls", [column, "created_at"])


def downgrade() -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name="calls")
        op.drop_column("calls", column)
