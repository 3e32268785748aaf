"""The call hours: ``call_hours``, each UTC hour's calls per key, team and model.

Requests, prompt and completion tokens, cost and errors, per virtual key, team and public model.

The database keeps it itself as call rows are written (``app.db.ledger`` has the trigger and
says how). Spend read-outs (``GET /admin/spend``, ``switchboard spend``) summed ``calls`` over
their whole range: 0.5 s of Postgres for 3 million rows (under three hours at 300 requests/s),
and the default range is the month so far. They now sum this table, and read ``calls`` only for
the parts of an hour at either end of a range that does not start or end on the hour.

The upgrade fills the table from the rows already stored (one scan), after creating the trigger,
under the same lock and with the same exactly-once counting as 0014's fill.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.ledger import add_hours, create_hours_trigger, drop_hours_trigger

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "call_hours",
        sa.Column("hour", sa.DateTime, primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True, server_default=""),
        sa.Column("team_id", sa.String(64), primary_key=True, server_default=""),
        sa.Column("public_model", sa.String(256), primary_key=True, server_default=""),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Numeric(24, 10), nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
    )
    # named_unknown: as this revision counted them (0021 folds them; so does upgrading past it)
    for statement in create_hours_trigger(dialect, named_unknown=True):
        op.execute(statement)
    op.execute(add_hours("calls", dialect, named_unknown=True))


def downgrade() -> None:
    for statement in drop_hours_trigger(op.get_context().dialect.name):
        op.execute(statement)
    op.drop_table("call_hours")
