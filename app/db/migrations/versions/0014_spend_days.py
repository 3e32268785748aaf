"""The spend ledger: ``spend_days``, each virtual key's and team's cost per UTC day.

The database keeps it itself as call rows are written (``app.db.ledger`` has the trigger and
says how).

The budget reconcile (``app.limits.budget``) summed ``calls`` for the current day, month and all
time, in every gateway process every minute: three scans that grow with the log (3 million rows
of one day: 2.3 s of Postgres a reconcile; a month at 100 requests/s is 260 million rows). It now
reads this table: a row per key, team and day with spend.

The upgrade fills the ledger from the rows already stored (one scan), after creating the
trigger: on Postgres that takes a lock on ``calls`` which holds until the upgrade commits, so
gateways writing meanwhile wait (their writer spools what the database does not take within 5 s)
and each row is counted exactly once, by the fill or by the trigger.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.ledger import add_rows, create_trigger, drop_trigger

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "spend_days",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True, server_default=""),
        sa.Column("team_id", sa.String(64), primary_key=True, server_default=""),
        sa.Column("cost_usd", sa.Numeric(24, 10), nullable=False),
    )
    for statement in create_trigger(dialect):
        op.execute(statement)
    op.execute(add_rows("calls", dialect))


def downgrade() -> None:
    for statement in drop_trigger(op.get_context().dialect.name):
        op.execute(statement)
    op.drop_table("spend_days")
