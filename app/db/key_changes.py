"""The key change log: ``key_changes``, one row for every update or delete of a virtual key
(``api_keys``) or a team (``teams``), written by database triggers in the changing transaction.

Each gateway's key directory (``app.keys.directory``) reads it every ``refresh_s`` for the
changes since its last read, and re-reads only the cached keys they touch. Before, it re-read
every cached key (~12% of a core per process at 100,000 keys, every 30 s). The triggers see every
change, the admin API's and the CLI's as well as a hand-written ``UPDATE``, so the log heals a
change whose Redis news (``KeyDirectory.changed``) some process missed.

A row holds ``at``, the database's clock when the change was made (epoch seconds:
``clock_timestamp()`` on Postgres, ``julianday('now')`` on SQLite), and the key's id or the
team's id. A change becomes visible when its transaction commits, a little after ``at``: readers
therefore read ``OVERLAP_S`` back from their last read (a change committed more than
``OVERLAP_S`` after it was made is missed by the log; the admin API and the CLI commit within
milliseconds and publish the change on Redis besides). Inserts are not logged: a new key is not
cached anywhere yet (unknown hashes are remembered for 2 s, ``NEGATIVE_TTL_S``).

Rows older than ``KEPT_S`` are deleted by the directories (``KeyStore.prune_changes``, at most
hourly each); a directory whose last read is older than that re-reads every cached key.
"""

from __future__ import annotations

OVERLAP_S = 120.0
"""How far back from its last read a directory reads again (see the module docstring)."""
KEPT_S = 86_400.0
"""How long the log keeps a change."""

_TABLES = (("api_keys", "key_id"), ("teams", "team_id"))
"""Each logged table and the column of ``key_changes`` its row's id goes to."""


def clock_sql(dialect: str) -> str:
    """SQL for the database's clock in epoch seconds (what ``key_changes.at`` holds)."""
    if dialect == "postgresql":
        return "extract(epoch from clock_timestamp())::double precision"
    return "((julianday('now') - 2440587.5) * 86400.0)"


def create_triggers(dialect: str) -> list[str]:
    """The statements that create the triggers on ``dialect`` (``postgresql`` or ``sqlite``)."""
    statements: list[str] = []
    for table, column in _TABLES:
        insert = (f"INSERT INTO key_changes (at, {column}) "
                  f"VALUES ({clock_sql(dialect)}, OLD.id)")
        if dialect == "postgresql":
            statements += [
                f"""CREATE OR REPLACE FUNCTION {table}_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    {insert};
    RETURN NULL;
END
$$""",
                f"CREATE TRIGGER {table}_changes AFTER UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_log_change()"]
        else:  # one event a trigger in SQLite
            statements += [f"CREATE TRIGGER {table}_{event.lower()}s AFTER {event} ON {table} "
                           f"BEGIN {insert}; END" for event in ("UPDATE", "DELETE")]
    return statements


def drop_triggers(dialect: str) -> list[str]:
    """The statements that drop them."""
    if dialect == "postgresql":
        return [statement for table, _ in _TABLES for statement in (
            f"DROP TRIGGER {table}_changes ON {table}", f"DROP FUNCTION {table}_log_change()")]
    return [f"DROP TRIGGER {table}_{event}s" for table, _ in _TABLES
            for event in ("update", "delete")]
