"""The call hours count calls naming a model the gateway does not serve under one model, ``-``.

Until now the call hours added such a call (the routing table's 404) under the name its client
sent, which its row keeps: every made-up name was a new row of ``call_hours``, one a request when
a client sends a new name each time, and a group of ``GET /admin/spend?by=model``. The trigger is
replaced by one that adds them under ``-``, as the live feed's day counters in Redis count them
(``app.db.ledger`` says how a row is told apart).

The hours already counted are folded the same way, from the call rows still stored: each hour's
such calls, per key and team, move from their names' rows to the ``-`` row, and a row left with
no call is deleted. The hours of calls already pruned (``switchboard db prune``) keep their
names. Replacing the trigger takes a lock on ``calls`` until the upgrade commits (the fold
scans ``calls`` twice, as 0015's fill scanned it once), so every row written meanwhile is
counted by one trigger or the other, once. A downgrade puts the old trigger back and unfolds
the hours the same way (each hour's such calls still stored, per key and team, move from the
``-`` row back to their names' rows when it holds them all), so that upgrading again folds each
call once.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.ledger import (
    UNKNOWN_MODEL,
    billed,
    create_hours_trigger,
    drop_hours_trigger,
    hour_of,
    unknown_model,
)

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
compatible_from: str = "0018"  # additive: a trigger replaced; older code runs on it

_KEY = ("hour", "key_id", "team_id", "public_model")
_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors")


def _named(dialect: str) -> str:
    """SQL: per hour, key, team and name, the stored calls naming a model the gateway does not
    serve, summed as the call hours sum them."""
    return (f"SELECT {hour_of(dialect, 'created_at')} AS hour, {billed('key_id')} AS key_id, "
            f"{billed('team_id')} AS team_id, public_model, count(*) AS requests, "
            f"coalesce(sum(prompt_tokens), 0) AS prompt_tokens, "
            f"coalesce(sum(completion_tokens), 0) AS completion_tokens, "
            f"coalesce(sum(cost_usd), 0) AS cost_usd, "
            f"sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS errors FROM calls "
            f"WHERE {unknown_model()} AND public_model <> '{UNKNOWN_MODEL}' GROUP BY 1, 2, 3, 4")


def _moves(dialect: str, *, fold: bool) -> str:
    """SQL: the sums of ``_named`` that move, each with the name it moves from (``fold``) or
    to. Folding, those a row of the call hours holds under their name (all of its group's,
    so not one an hours prune removed); unfolding, those of an hour, key and team whose ``-``
    row holds them all."""
    named = _named(dialect)
    columns = ", ".join(f"s.{c}" for c in (*_KEY, *_SUMS))
    if fold:
        same = " AND ".join(f"h.{c} = s.{c}" for c in _KEY)
        return (f"SELECT {columns} FROM ({named}) s "
                f"JOIN call_hours h ON {same} AND h.requests >= s.requests")
    per_hour = (f"SELECT hour, key_id, team_id, sum(requests) AS requests FROM ({named}) n "
                f"GROUP BY 1, 2, 3")
    same = " AND ".join(f"h.{c} = t.{c}" for c in _KEY[:3])
    held = (f"SELECT t.hour, t.key_id, t.team_id FROM ({per_hour}) t JOIN call_hours h "
            f"ON {same} AND h.public_model = '{UNKNOWN_MODEL}' AND h.requests >= t.requests")
    same = " AND ".join(f"k.{c} = s.{c}" for c in _KEY[:3])
    return f"SELECT {columns} FROM ({named}) s JOIN ({held}) k ON {same}"


def _move(dialect: str, *, fold: bool) -> list[str]:
    """The statements that fold the hours already counted (the module docstring), or with
    ``fold=False`` unfold them (as the trigger before this revision would have counted them)."""
    moves = _moves(dialect, fold=fold)
    added = "'" + UNKNOWN_MODEL + "'" if fold else "m.public_model"
    taken = "'" + UNKNOWN_MODEL + "'" if not fold else "m.public_model"
    group = "1, 2, 3" if fold else "1, 2, 3, 4"
    sums = ", ".join(f"sum(m.{c})" for c in _SUMS)
    add = (f"INSERT INTO call_hours ({', '.join((*_KEY, *_SUMS))}) "
           f"SELECT m.hour, m.key_id, m.team_id, {added}, {sums} FROM ({moves}) m "
           f"WHERE true GROUP BY {group} ORDER BY {group} ON CONFLICT ({', '.join(_KEY)}) "
           f"DO UPDATE SET " + ", ".join(f"{c} = call_hours.{c} + excluded.{c}" for c in _SUMS))
    per_row = (f"SELECT m.hour, m.key_id, m.team_id, {taken} AS public_model, "
               + ", ".join(f"sum(m.{c}) AS {c}" for c in _SUMS)
               + f" FROM ({moves}) m GROUP BY 1, 2, 3, 4")
    take = ("UPDATE call_hours SET " + ", ".join(f"{c} = call_hours.{c} - t.{c}" for c in _SUMS)
            + f" FROM ({per_row}) t WHERE "
            + " AND ".join(f"call_hours.{c} = t.{c}" for c in _KEY))
    return [add, take, "DELETE FROM call_hours WHERE requests = 0"]


def _replace(*, named_unknown: bool) -> None:
    dialect = op.get_context().dialect.name
    for statement in (*drop_hours_trigger(dialect),
                      *create_hours_trigger(dialect, named_unknown=named_unknown)):
        op.execute(statement)


def upgrade() -> None:
    _replace(named_unknown=False)
    for statement in _move(op.get_context().dialect.name, fold=True):
        op.execute(statement)


def downgrade() -> None:
    _replace(named_unknown=True)
    for statement in _move(op.get_context().dialect.name, fold=False):
        op.execute(statement)
