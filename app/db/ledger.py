"""The database's own sums of the call log, kept by triggers as ``calls`` rows are inserted: the
spend ledger ``spend_days`` (``app.db.models.SpendDay``, which budgets read; migration 0014) and
the call hours ``call_hours`` (``app.db.models.CallHour``, which spend read-outs read; migration
0015). The migrations create the triggers; so does ``Base.metadata.create_all`` (tests that build
the schema from the models), through ``app.db.models``.

The spend ledger:

Every inserted call row's ``cost_usd`` is added to its (UTC day, ``key_id``, ``team_id``) row, in
the same transaction, so the ledger never disagrees with the rows: a rolled-back batch adds
nothing, and a replayed one adds only the rows it inserts (``ON CONFLICT DO NOTHING`` and ``INSERT
OR IGNORE`` skip the others, and their triggers with them). On Postgres it is one
statement-level trigger on ``calls`` (on the partitioned table its transition table holds every
row the ``COPY`` or ``INSERT`` routed to any partition), adding in key order so that two writers
never wait on each other in a cycle; on SQLite a row trigger. Rows with no cost, or with neither a
key nor a team (the master key), are not counted, and neither are shadow copies (rows with
``shadow_of``: a copy is the gateway's, not its caller's; README "Running an experiment"). A
missing key or team is stored as ``''`` (a primary key column cannot be NULL). Rows removed later
(``switchboard db prune``) stay counted.
The days of closed months are folded into their month's first day (``fold_closed_months``, run
by each budget reconcile): a closed month only counts towards ``total`` budgets.

The call hours: every inserted call row, the master key's and costless ones included, is added
to its (UTC hour, ``key_id``, ``team_id``, ``public_model``) row: one more request, its prompt
and completion tokens, its cost, and one more error unless its status is ``ok``. A shadow copy is
added under no key and no team (``''``), under its public model like any call: the totals by key
and by model still agree, and no key is billed for a copy. A call naming a model the gateway does
not serve (``model_group``: the routing table's 404, which reached no provider) is added under
the model ``-``, as the live feed's day counters count it (``app.calllog.live``), not under the
name the client sent and its row keeps: names a client makes up add no rows. The same rules
hold: the same transaction, inserted rows only, in key order (Postgres fires its triggers in name
order, ``calls_call_hours`` before ``calls_spend_days``, so every writer takes the two tables'
row locks in one order too), ``''`` for none, pruned rows stay counted. An hour is stored as a
naive UTC timestamp, in SQLite as SQLAlchemy writes one (``YYYY-MM-DD HH:00:00.000000``).

Until migration 0017 both counted shadow copies under their key and team; ``keyed_shadows=True``
builds those triggers again (its downgrade). Until migration 0021 the call hours counted a model
the gateway does not serve under its name; ``named_unknown=True`` builds that trigger again.
"""

from __future__ import annotations


def day_of(dialect: str, column: str) -> str:
    """SQL for the UTC date of the timestamp ``column`` (SQLite stores naive UTC)."""
    if dialect == "postgresql":
        return f"({column} AT TIME ZONE 'UTC')::date"
    return f"date({column})"


def counted(row: str = "", *, keyed_shadows: bool = False) -> str:
    """SQL: whether the ledger counts a call row (its columns named with the prefix ``row``,
    ``NEW.`` in a SQLite row trigger): a cost, a key or a team, and not a shadow copy (unless
    ``keyed_shadows``: before migration 0017)."""
    copies = "" if keyed_shadows else f" AND {row}shadow_of IS NULL"
    return (f"{row}cost_usd IS NOT NULL{copies} "
            f"AND ({row}key_id IS NOT NULL OR {row}team_id IS NOT NULL)")


def add_rows(source: str, dialect: str, *, keyed_shadows: bool = False) -> str:
    """SQL adding the counted rows of the table ``source`` (call rows) to the ledger, in key
    order: the Postgres trigger's body, and the migration's fill."""
    return (f"INSERT INTO spend_days (day, key_id, team_id, cost_usd) "
            f"SELECT {day_of(dialect, 'created_at')}, coalesce(key_id, ''), "
            f"coalesce(team_id, ''), sum(cost_usd) FROM {source} "
            f"WHERE {counted(keyed_shadows=keyed_shadows)} "
            f"GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 ON CONFLICT (day, key_id, team_id) "
            f"DO UPDATE SET cost_usd = spend_days.cost_usd + excluded.cost_usd")


def _statement_trigger(trigger: str, function: str, body: str) -> list[str]:
    """A Postgres ``AFTER INSERT`` statement trigger on ``calls`` running ``body`` over the
    inserted rows (the transition table ``added``)."""
    return [f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {body};
    RETURN NULL;
END
$$""", f"CREATE TRIGGER {trigger} AFTER INSERT ON calls REFERENCING NEW TABLE AS added "
           f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"]


def _sqlite_trigger(*, keyed_shadows: bool) -> list[str]:
    return [f"""CREATE TRIGGER calls_spend_days AFTER INSERT ON calls
WHEN {counted("NEW.", keyed_shadows=keyed_shadows)}
BEGIN
    INSERT INTO spend_days (day, key_id, team_id, cost_usd)
    VALUES (date(NEW.created_at), coalesce(NEW.key_id, ''), coalesce(NEW.team_id, ''),
            NEW.cost_usd)
    ON CONFLICT (day, key_id, team_id) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
END"""]


def _unfolded(dialect: str) -> str:
    """SQL for the ledger rows ``fold_closed_months`` folds: days before ``:cut`` but a month's
    first."""
    if dialect == "postgresql":
        return "day < :cut AND extract(day FROM day) <> 1"
    return "day < :cut AND strftime('%d', day) <> '01'"


def any_to_fold(dialect: str) -> str:
    """SQL selecting a row if ``fold_closed_months`` has anything to fold (a read: SQLite's
    write lock is taken only when there is)."""
    return f"SELECT 1 FROM spend_days WHERE {_unfolded(dialect)} LIMIT 1"


def fold_closed_months(dialect: str) -> list[str]:
    """Statements that fold the ledger's days before ``:cut`` (the first day of the current UTC
    month) into their month's first day, one row per (month, key, team), in one transaction:
    every period's sum stays the same (a closed month counts only towards ``total``), and the
    ledger grows by a row per key and team a month, not a day. On Postgres one statement (the
    rows a concurrent trigger adds to meanwhile are summed as deleted, never lost); on SQLite
    an ``INSERT`` then a ``DELETE`` (one writer at a time). A day written into a closed month
    later (a replayed batch) is folded by the next call."""
    where = _unfolded(dialect)
    if dialect == "postgresql":
        return [f"WITH folded AS (DELETE FROM spend_days WHERE {where} "
                f"RETURNING day, key_id, team_id, cost_usd) "
                f"INSERT INTO spend_days (day, key_id, team_id, cost_usd) "
                f"SELECT date_trunc('month', day)::date, key_id, team_id, sum(cost_usd) "
                f"FROM folded GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
                f"ON CONFLICT (day, key_id, team_id) "
                f"DO UPDATE SET cost_usd = spend_days.cost_usd + excluded.cost_usd"]
    return [f"INSERT INTO spend_days (day, key_id, team_id, cost_usd) "
            f"SELECT date(day, 'start of month'), key_id, team_id, sum(cost_usd) "
            f"FROM spend_days WHERE {where} GROUP BY 1, 2, 3 "
            f"ON CONFLICT (day, key_id, team_id) DO UPDATE SET cost_usd = cost_usd + "
            f"excluded.cost_usd", f"DELETE FROM spend_days WHERE {where}"]


def create_trigger(dialect: str, *, keyed_shadows: bool = False) -> list[str]:
    """The statements that create the trigger on ``dialect`` (``postgresql`` or ``sqlite``)."""
    if dialect == "postgresql":
        return _statement_trigger("calls_spend_days", "spend_days_add",
                                  add_rows("added", dialect, keyed_shadows=keyed_shadows))
    return _sqlite_trigger(keyed_shadows=keyed_shadows)


def drop_trigger(dialect: str) -> list[str]:
    """The statements that drop it."""
    return _drops(dialect, "calls_spend_days", "spend_days_add")


def _drops(dialect: str, trigger: str, function: str) -> list[str]:
    """The statements that drop ``trigger`` on ``calls`` (and on Postgres its ``function``)."""
    if dialect == "postgresql":
        return [f"DROP TRIGGER {trigger} ON calls", f"DROP FUNCTION {function}()"]
    return [f"DROP TRIGGER {trigger}"]


def hour_of(dialect: str, column: str) -> str:
    """SQL for the UTC hour of the timestamp ``column``, naive, as ``call_hours.hour`` holds it
    (Postgres: ``timestamp without time zone``; SQLite: SQLAlchemy's text form)."""
    if dialect == "postgresql":
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC')"
    return f"strftime('%Y-%m-%d %H:00:00.000000', {column})"


_HOUR_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors")
_HOUR_KEY = "hour, key_id, team_id, public_model"


def _hour_upsert(values: str) -> str:
    return (f"INSERT INTO call_hours ({_HOUR_KEY}, {', '.join(_HOUR_SUMS)}) {values} "
            f"ON CONFLICT ({_HOUR_KEY}) DO UPDATE SET "
            + ", ".join(f"{c} = call_hours.{c} + excluded.{c}" for c in _HOUR_SUMS))


def billed(column: str, row: str = "", *, keyed_shadows: bool = False) -> str:
    """SQL for the key or team id (``column``: ``key_id`` or ``team_id``) a call row counts under
    in the call hours: ``''`` for none, and for a shadow copy (unless ``keyed_shadows``: before
    migration 0017). ``row`` as for ``counted``."""
    if keyed_shadows:
        return f"coalesce({row}{column}, '')"
    return f"CASE WHEN {row}shadow_of IS NULL THEN coalesce({row}{column}, '') ELSE '' END"


UNKNOWN_MODEL = "-"
"""The model the call hours count a call naming a model the gateway does not serve under (the
live feed's day counters use the same name; no configured model can be named so)."""


def unknown_model(row: str = "") -> str:
    """SQL: whether a call row names a model the gateway does not serve: the routing table's 404
    (``errors.ModelNotFound``: status 404, type ``invalid_request_error``), which reached no
    provider (an upstream's 404 names the provider it came from; a prompt template's 404 is a
    ``not_found_error``). The live feed's ``_counted_model`` tells them apart alike. ``row`` as
    for ``counted``."""
    return (f"{row}http_status = 404 AND {row}error_type = 'invalid_request_error' "
            f"AND {row}provider IS NULL AND {row}public_model IS NOT NULL")


def model_group(row: str = "", *, named_unknown: bool = False) -> str:
    """SQL for the model a call row counts under in the call hours: its public model, ``''``
    for none, ``UNKNOWN_MODEL`` for one the gateway does not serve (unless ``named_unknown``:
    before migration 0021). ``row`` as for ``counted``."""
    if named_unknown:
        return f"coalesce({row}public_model, '')"
    return (f"CASE WHEN {unknown_model(row)} THEN '{UNKNOWN_MODEL}' "
            f"ELSE coalesce({row}public_model, '') END")


def add_hours(source: str, dialect: str, *, keyed_shadows: bool = False,
              named_unknown: bool = False) -> str:
    """SQL adding the rows of the table ``source`` (call rows) to the call hours, in key order:
    the Postgres trigger's body, and the migration's fill."""
    return _hour_upsert(
        f"SELECT {hour_of(dialect, 'created_at')}, "
        f"{billed('key_id', keyed_shadows=keyed_shadows)}, "
        f"{billed('team_id', keyed_shadows=keyed_shadows)}, "
        f"{model_group(named_unknown=named_unknown)}, "
        f"count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
        f"coalesce(sum(cost_usd), 0), sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) "
        f"FROM {source} WHERE true GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")


def _hours_sqlite_trigger(*, keyed_shadows: bool, named_unknown: bool) -> list[str]:
    key = billed("key_id", "NEW.", keyed_shadows=keyed_shadows)
    team = billed("team_id", "NEW.", keyed_shadows=keyed_shadows)
    model = model_group("NEW.", named_unknown=named_unknown)
    return [f"""CREATE TRIGGER calls_call_hours AFTER INSERT ON calls
BEGIN
    {_hour_upsert(
        f"VALUES ({hour_of('sqlite', 'NEW.created_at')}, {key}, {team}, {model}, 1, "
        "coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), "
        "coalesce(NEW.cost_usd, 0), CASE WHEN NEW.status = 'ok' THEN 0 ELSE 1 END)")};
END"""]


def create_hours_trigger(dialect: str, *, keyed_shadows: bool = False,
                         named_unknown: bool = False) -> list[str]:
    """The statements that create the call hours' trigger on ``dialect``."""
    if dialect == "postgresql":
        return _statement_trigger("calls_call_hours", "call_hours_add",
                                  add_hours("added", dialect, keyed_shadows=keyed_shadows,
                                            named_unknown=named_unknown))
    return _hours_sqlite_trigger(keyed_shadows=keyed_shadows, named_unknown=named_unknown)


def drop_hours_trigger(dialect: str) -> list[str]:
    """The statements that drop it."""
    return _drops(dialect, "calls_call_hours", "call_hours_add")
