"""Which config served a call: ``calls.config_version``.

The gateway's config is reloaded live (``app.reload``); every call row names the version (a hash,
``GET /admin/config``) it ran on. NULL for rows stored before this revision. On Postgres the
column and its index reach every partition, present and future.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    op.add_column("calls", sa.Column("config_version", sa.String(16)))
    op.create_index("ix_calls_config_version_created_at", "calls",
                    ["config_version", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_config_version_created_at", table_name="calls")
    op.drop_column("calls", "config_version")
