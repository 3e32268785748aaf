"""The schema floor: ``schema_floor``, the oldest revision whose switchboard runs on this schema.

One row, written by every migration from this one on (``app.db.floor``): each revision declares
``compatible_from``, the oldest revision whose code still runs on the schema it leaves (an
additive one keeps its predecessor's, a breaking one names itself). A switchboard older than the
database serves when its own revision is at or above the floor, so that ``kubectl rollout undo``
and old pods restarting during a rollout keep working after an additive migration; below it, it
refuses, as every switchboard did before this revision (those cannot read the floor).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
compatible_from: str = "0018"  # additive: a new table


def upgrade() -> None:
    op.create_table("schema_floor", sa.Column("revision", sa.String(32), primary_key=True))


def downgrade() -> None:
    op.drop_table("schema_floor")
