"""Shadow copies count under no key and no team in the spend ledger and the call hours.

A shadow copy's row keeps its original's ``key_id`` and ``team_id`` (to trace it), and the
triggers of 0014 and 0015 counted its cost under them: the budget reconcile then charged the
caller's key and team for copies the gateway made of its own accord, and ``GET /admin/spend
?by=key`` showed them as the key's spend. The triggers are replaced by ones that skip a copy in
the ledger and add it to the call hours under no key and no team (``''``), under its public model
as before (``app.db.ledger`` says how).

Rows already stored are not counted again: the copies counted so far stay in the ledger and the
call hours under their key and team (their days, months and hours keep them; rewriting them
would have to undo sums that pruning and the fold of closed months already merged). Replacing
the triggers takes a lock on ``calls`` until the upgrade commits, so every row written meanwhile
is counted by one trigger or the other, once.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.ledger import create_hours_trigger, create_trigger, drop_hours_trigger, drop_trigger

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"


def _replace(*, keyed_shadows: bool) -> None:
    dialect = op.get_context().dialect.name
    for statement in (*drop_trigger(dialect), *drop_hours_trigger(dialect),
                      *create_trigger(dialect, keyed_shadows=keyed_shadows),
                      *create_hours_trigger(dialect, keyed_shadows=keyed_shadows,
                                            named_unknown=True)):  # until 0021
        op.execute(statement)


def upgrade() -> None:
    _replace(keyed_shadows=False)


def downgrade() -> None:
    _replace(keyed_shadows=True)
