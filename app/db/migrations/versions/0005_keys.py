"""Virtual keys and teams: ``api_keys`` and ``teams`` (``app.keys``).

A key is stored as its SHA-256 (``key_hash``, unique) and a short display ``prefix``, never the
key. Plain tables on both Postgres and SQLite (a few rows per team, not partitioned).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _limits() -> list[sa.Column[object]]:
    return [
        sa.Column("rpm", sa.BigInteger, nullable=True),
        sa.Column("tpm", sa.BigInteger, nullable=True),
        sa.Column("budget_usd", sa.Numeric(20, 10), nullable=True),
        sa.Column("budget_period", sa.String(8), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        *_limits(),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_teams_name", "teams", ["name"], unique=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("team_id", sa.String(64), sa.ForeignKey("teams.id"), nullable=True),
        sa.Column("models", _JSON, nullable=True),
        *_limits(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_team_id", table_name="api_keys")
    op.drop_index("ix_api_keys_key_hash", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_teams_name", table_name="teams")
    op.drop_table("teams")
