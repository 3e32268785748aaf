"""Team names are unique ignoring case: a unique index on ``lower(name)``, not on ``name``.

Until now ``search``, ``SEARCH`` and ``search `` could be three teams, which read as one in
listings and spend read-outs. The admin API and the CLI now refuse a name with whitespace around
it, and the index refuses a name that differs from a team's only in case, on every replica at
once (two concurrent creates cannot both pass). SQLite's ``lower()`` folds ASCII letters only;
Postgres's folds every letter its locale knows.

Existing teams whose names clash this way are kept, with their keys, limits and spend (they are
known by id): in each group of names equal once trimmed and lower-cased, the oldest team keeps
its name (trimmed of whitespace), and each other one is renamed to its name followed by its id,
``search (team_0123456789ab)`` (``(team_0123456789ab 2)`` and on, should a team already be
named so), logged as a warning. A single team whose name has whitespace
around it is trimmed. Rename them as you like afterwards. A downgrade puts back the unique index
on ``name`` and leaves the names as they are.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# code at 0018 runs on it: a name that differs from a team's only in case is refused by the
# index, as a duplicate name (409) is
compatible_from: str = "0018"

log = logging.getLogger("switchboard.db")

NAME_CHARS = 128
"""``teams.name`` is ``String(128)``: a renamed team's name is cut to fit it."""


def new_names(rows: Sequence[tuple[str, str, str]]) -> dict[str, str]:
    """The teams to rename, id -> new name, from ``(id, name, lower(name))`` rows oldest first
    (``lower`` as the database computes it, the fold its index will compare by)."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for team_id, name, folded in rows:
        groups.setdefault(folded.strip(), []).append((team_id, name, folded.strip()))
    taken = set(groups)
    """Every name's fold in use once the renames are done: a new name must clash with none
    (a team may already be named what a rename would make, ``q (team_Z)``)."""
    renamed: dict[str, str] = {}
    for teams in groups.values():
        (first_id, first_name, _), *others = teams
        if first_name != first_name.strip():
            renamed[first_id] = first_name.strip() or first_id
        for team_id, name, folded in others:
            for n in itertools.count(1):
                suffix = f" ({team_id})" if n == 1 else f" ({team_id} {n})"
                keep = NAME_CHARS - len(suffix)
                fold = (folded[:keep] + suffix.lower()).strip()
                if fold not in taken:
                    break
            taken.add(fold)
            renamed[team_id] = (name.strip()[:keep] + suffix).strip()
    return renamed


def upgrade() -> None:
    bind = op.get_bind()
    teams = sa.table("teams", sa.column("id", sa.String), sa.column("name", sa.String),
                     sa.column("created_at", sa.DateTime))
    rows = bind.execute(sa.select(teams.c.id, teams.c.name, sa.func.lower(teams.c.name))
                        .order_by(teams.c.created_at, teams.c.id)).all()
    names = {team_id: name for team_id, name, _ in rows}
    for team_id, name in new_names([(r[0], r[1], r[2]) for r in rows]).items():
        log.warning("Team %s renamed from %r to %r: team names are now unique ignoring case "
                    "and trimmed of whitespace (migration 0019)", team_id, names[team_id], name)
        bind.execute(sa.update(teams).where(teams.c.id == team_id).values(name=name))
    op.drop_index("ix_teams_name", table_name="teams")
    op.create_index("ix_teams_name_lower", "teams", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("ix_teams_name_lower", table_name="teams")
    op.create_index("ix_teams_name", "teams", ["name"], unique=True)
