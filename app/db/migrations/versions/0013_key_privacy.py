"""A virtual key's and a team's own privacy setting: ``api_keys.privacy`` and ``teams.privacy``.

The privacy action (``redact``, ``private_only``, ``block``; null: none) a key's calls run under
at least (``app.keys``). Replaces the ``privacy.keys`` and ``privacy.teams`` maps of the config.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_TABLES = ("teams", "api_keys")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("privacy", sa.String(16), nullable=True))


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_column(table, "privacy")
