"""The client's ``x-request-id`` in a column of its own, ``calls.request_id``, searchable.

Until this revision a call's ``id`` was the client's ``x-request-id`` when it sent one, so two
calls with the same one hid each other; from now on ``id`` is always the gateway's call id.
Rows stored before keep their ``id`` and have a NULL ``request_id``. On Postgres the column and
the index are added to the partitioned table and so to every partition, present and future.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_INDEX = "ix_calls_request_id_created_at"


def upgrade() -> None:
    op.add_column("calls", sa.Column("request_id", sa.String(128)))
    op.create_index(_INDEX, "calls", ["request_id", "created_at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="calls")
    op.drop_column("calls", "request_id")
