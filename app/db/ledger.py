"""The spend ledger's trigger: how the database keeps ``spend_days`` (``app.db.models.SpendDay``)
as ``calls`` rows are inserted. Migration 0014 creates it; so does ``Base.metadata.create_all``
(tests that build the schema from the models), through ``app.db.models``.

Every inserted call row's ``cost_usd`` is added to its (UTC day, ``key_id``, ``team_id``) row, in
the same transaction, so the ledger never disagrees with the rows: a rolled-back batch adds
nothing, and a replayed one adds only the rows it inserts (``ON CONFLICT DO NOTHING`` and ``INSERT
OR IGNORE`` skip the others, and their triggers with them). On Postgres it is one
statement-level trigger on ``calls`` (on the partitioned table its transition table holds every
row the ``COPY`` or ``INSERT`` routed to any partition), adding in key order so that two writers
never wait on each other in a cycle; on SQLite a row trigger. Rows with no cost, or with neither a
key nor a team (the master key), are not counted. A missing key or team is stored as ``''`` (a
primary key column cannot be NULL). Rows removed later (``switchboard db prune``) stay counted.
"""

from __future__ import annotations


def day_of(dialect: str, column: str) -> str:
    """SQL for the UTC date of the timestamp ``column`` (SQLite stores naive UTC)."""
    if dialect == "postgresql":
        return f"({column} AT TIME ZONE 'UTC')::date"
    return f"date({column})"


COUNTED = "cost_usd IS NOT NULL AND (key_id IS NOT NULL OR team_id IS NOT NULL)"
"""The call rows the ledger counts."""


def add_rows(source: str, dialect: str) -> str:
    """SQL adding the counted rows of the table ``source`` (call rows) to the ledger, in key
    order: the Postgres trigger's body, and the migration's fill."""
    return (f"INSERT INTO spend_days (day, key_id, team_id, cost_usd) "
            f"SELECT {day_of(dialect, 'created_at')}, coalesce(key_id, ''), "
            f"coalesce(team_id, ''), sum(cost_usd) FROM {source} WHERE {COUNTED} "
            f"GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 ON CONFLICT (day, key_id, team_id) "
            f"DO UPDATE SET cost_usd = spend_days.cost_usd + excluded.cost_usd")


_POSTGRES = [
    f"""CREATE OR REPLACE FUNCTION spend_days_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {add_rows("added", "postgresql")};
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER calls_spend_days AFTER INSERT ON calls REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION spend_days_add()",
]
_SQLITE = ["""CREATE TRIGGER calls_spend_days AFTER INSERT ON calls
WHEN NEW.cost_usd IS NOT NULL AND (NEW.key_id IS NOT NULL OR NEW.team_id IS NOT NULL)
BEGIN
    INSERT INTO spend_days (day, key_id, team_id, cost_usd)
    VALUES (date(NEW.created_at), coalesce(NEW.key_id, ''), coalesce(NEW.team_id, ''),
            NEW.cost_usd)
    ON CONFLICT (day, key_id, team_id) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
END"""]


def create_trigger(dialect: str) -> list[str]:
    """The statements that create the trigger on ``dialect`` (``postgresql`` or ``sqlite``)."""
    return _POSTGRES if dialect == "postgresql" else _SQLITE


def drop_trigger(dialect: str) -> list[str]:
    """The statements that drop it."""
    if dialect == "postgresql":
        return ["DROP TRIGGER calls_spend_days ON calls", "DROP FUNCTION spend_days_add()"]
    return ["DROP TRIGGER calls_spend_days"]
