"""The call hours (``call_hours``) and the spend read-outs that sum them: the database adds each
stored call row to its UTC hour, key, team and model, once however often a batch is replayed;
``app.calllog.spend.spend`` then answers exactly what summing the call rows of the range answers,
whole hours from the call hours and the ends of a range off the hour from ``calls``; the
migration fills the table from the rows already stored."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.calllog.postgres import PostgresStore
from app.calllog.record import Attempt, CallRecord, Row, Status
from app.calllog.spend import SpendRow, spend
from app.db.migrate import alembic_config, prune
from app.db.models import CallHour
from app.prompts.store import template_not_found
from app.usage import Usage
from tests.db.test_ledger import store_of

NOON = datetime(2026, 12, 5, 12, tzinfo=UTC)
STATUSES: tuple[Status, ...] = ("ok", "ok", "ok", "error", "cancelled")


def call(id: str, at: datetime, *, key: str | None = "k1", team: str | None = "t1",
         model: str | None = "chat", status: Status = "ok", cost: float | None = 0.5,
         tokens: tuple[int, int] | None = (10, 4), shadow_of: str | None = None) -> Row:
    record = CallRecord(id=id, endpoint="/v1/chat/completions", caller="key" if key else "master",
                        created_at=at.timestamp(), key_id=key, team_id=team, public_model=model,
                        status=status, cost_usd=cost, shadow_of=shadow_of)
    if tokens is not None:
        record.usage = Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1])
    return record.to_row()


def not_served(id: str, at: datetime, model: str, *, key: str | None = "k1") -> Row:
    """A call naming ``model``, which the gateway does not serve: the routing table's 404,
    before any provider, as the gateway records it (its row keeps the name sent)."""
    exc = errors.ModelNotFound(model)
    return CallRecord(id=id, endpoint="/v1/chat/completions", caller="key" if key else "master",
                      created_at=at.timestamp(), key_id=key, team_id="t1", public_model=model,
                      status="error", http_status=exc.status_code, error_type=exc.error_type,
                      error_message=exc.message).to_row()


def served_404s(at: datetime) -> list[Row]:
    """404s of the served model ``chat`` that count under it: an upstream's (after an attempt,
    naming its provider) and an unknown prompt template's (a ``not_found_error``)."""
    upstream = errors.from_upstream_status(404, "no such deployment")
    template = template_not_found("no-such-template")
    return [CallRecord(id="upstream-404", endpoint="/v1/chat/completions", caller="key",
                       created_at=at.timestamp(), key_id="k1", team_id="t1",
                       public_model="chat", status="error", http_status=404,
                       error_type=upstream.error_type, provider="sim", target_model="m",
                       attempts=[Attempt("sim", "m", 404, upstream.error_type, 2.0)],
                       cost_usd=0.25).to_row(),
            CallRecord(id="template-404", endpoint="/v1/chat/completions", caller="key",
                       created_at=at.timestamp(), key_id="k1", team_id="t1",
                       public_model="chat", status="error", http_status=404,
                       error_type=template.error_type).to_row()]


def random_calls(seed: int, count: int) -> list[Row]:
    """Calls over the 30 hours around ``NOON``, of assorted keys, teams, models, statuses,
    costs and tokens (none of each included)."""
    rng = random.Random(seed)
    return [call(f"c{seed}-{i}", NOON + timedelta(seconds=rng.uniform(-15 * 3600, 15 * 3600)),
                 key=rng.choice(["k1", "k2", "k3", None]), team=rng.choice(["t1", "t2", None]),
                 model=rng.choice(["chat", "embed", None]), status=rng.choice(STATUSES),
                 cost=rng.choice([None, 0.0, 0.001, 0.25, 1.5]),
                 tokens=rng.choice([None, (0, 0), (12, 7), (300, 41)]))
            for i in range(count)]


def summed(rows: list[Row], by: str, start: datetime, end: datetime | None
           ) -> list[tuple[Any, ...]]:
    """What ``spend`` should answer, summed here from the rows, costliest first."""
    column = {"key": "key_id", "team": "team_id", "model": "public_model"}[by]
    totals: dict[str | None, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
    for r in rows:
        at = datetime.fromtimestamp(r["created_at"], UTC)
        if at < start or (end is not None and at >= end):
            continue
        sums = totals[r[column]]
        sums[0] += 1
        sums[1] += r["prompt_tokens"] or 0
        sums[2] += r["completion_tokens"] or 0
        sums[3] += r["cost_usd"] or 0.0
        sums[4] += r["status"] != "ok"
    ordered = sorted(totals.items(), key=lambda t: (-t[1][3], t[0] is None, t[0] or ""))
    return [(group, *values) for group, values in ordered]


def answered(rows: list[SpendRow]) -> list[tuple[Any, ...]]:
    return [(r["group"], r["requests"], r["prompt_tokens"], r["completion_tokens"],
             r["cost_usd"], r["errors"]) for r in rows]


def assert_same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert [(g[0], *g[1:4], g[5]) for g in got] == [(w[0], *w[1:4], w[5]) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[4] == pytest.approx(w[4], abs=1e-9), g[0]


RANGES = {
    "whole hours": (NOON - timedelta(hours=5), NOON + timedelta(hours=3)),
    "off the hour at both ends": (NOON - timedelta(hours=7, minutes=41, seconds=3.5),
                                  NOON + timedelta(hours=2, minutes=17)),
    "off the hour at the start, open end": (NOON - timedelta(hours=9, minutes=1), None),
    "on the hour, open end": (NOON - timedelta(hours=20), None),
    "within one hour": (NOON + timedelta(minutes=5), NOON + timedelta(minutes=50)),
    "across one hour's edge": (NOON - timedelta(minutes=20), NOON + timedelta(minutes=20)),
    "an hour and a bit": (NOON - timedelta(minutes=10), NOON + timedelta(hours=1, minutes=5)),
    "empty": (NOON, NOON),
    "before every call": (NOON - timedelta(days=3), NOON - timedelta(days=2)),
}


@pytest.mark.parametrize("name", RANGES)
async def test_spend_answers_what_the_rows_of_its_range_add_up_to(engine: AsyncEngine,
                                                                  name: str) -> None:
    """Replayed and partly stored batches included, for every grouping."""
    rows = random_calls(1, 400)
    store = store_of(engine)
    assert await store.write(rows[:150]) == 150
    assert await store.write(rows) == 250
    assert await store.write(rows[100:300]) == 0
    start, end = RANGES[name]
    for by in ("key", "team", "model"):
        got = answered(await spend(engine, by=by, since=start, until=end))
        assert_same(got, summed(rows, by, start, end))
    if name == "whole hours":  # not a vacuous check: the range holds calls of every kind
        assert {g for g, *_ in summed(rows, "model", start, end)} == {"chat", "embed", None}


async def test_each_stored_row_is_added_to_its_utc_hour_once(engine: AsyncEngine) -> None:
    rows = [call("a", NOON - timedelta(seconds=1)), call("b", NOON),
            call("c", NOON + timedelta(minutes=59, seconds=59.9), status="error", tokens=None,
                 cost=None),
            call("d", NOON, key=None, team=None, model=None)]
    store = store_of(engine)
    assert await store.write(rows) == 4
    assert await store.write(rows) == 0
    async with engine.connect() as connection:
        got = {(r.hour, r.key_id, r.team_id, r.public_model):
               (r.requests, r.prompt_tokens, r.completion_tokens, float(r.cost_usd), r.errors)
               for r in (await connection.execute(select(CallHour.__table__))).all()}
    noon = NOON.replace(tzinfo=None)
    assert got == {(noon - timedelta(hours=1), "k1", "t1", "chat"): (1, 10, 4, 0.5, 0),
                   (noon, "k1", "t1", "chat"): (2, 10, 4, 0.5, 1),
                   (noon, "", "", ""): (1, 10, 4, 0.5, 0)}


async def test_shadow_copies_count_under_their_model_and_no_key_or_team(
        engine: AsyncEngine) -> None:
    """A shadow copy's row keeps its original's key and team, but the call hours add it under
    none (``''``), under its model: spend by key leaves it out, spend by model has it, and the
    two still add up to every call."""
    rows = [call("orig", NOON), call("copy", NOON, cost=2.0, shadow_of="orig"),
            call("other", NOON, key="k2", team=None, cost=1.0, status="error",
                 shadow_of="elsewhere")]
    await store_of(engine).write(rows)
    async with engine.connect() as connection:
        got = {(r.key_id, r.team_id, r.public_model): (r.requests, float(r.cost_usd), r.errors)
               for r in (await connection.execute(select(CallHour.__table__))).all()}
    assert got == {("k1", "t1", "chat"): (1, 0.5, 0), ("", "", "chat"): (2, 3.0, 1)}
    wants = {"key": [(None, 2, 3.0), ("k1", 1, 0.5)], "team": [(None, 2, 3.0), ("t1", 1, 0.5)],
             "model": [("chat", 3, 3.5)]}
    for since, until in ((NOON, NOON + timedelta(hours=1)),  # whole hours: the call hours
                         (NOON - timedelta(minutes=5), NOON + timedelta(minutes=5))):  # calls
        for by, want in wants.items():
            found = await spend(engine, by=by, since=since, until=until)
            assert [(r["group"], r["requests"], r["cost_usd"]) for r in found] == want, by
        # filtered to the key: its own call only, not its copy, from the hours and the calls
        found = await spend(engine, by="model", since=since, until=until, key_id="k1")
        assert [(r["group"], r["requests"], r["cost_usd"]) for r in found] == [("chat", 1, 0.5)]


async def test_the_hour_is_utc_whatever_the_session_time_zone(migrated_pg: str) -> None:
    """A Postgres session at UTC+5:30 writing a row at 23:45 UTC adds it to 23:00 UTC."""
    conn = await asyncpg.connect(migrated_pg.replace("postgresql+asyncpg", "postgresql"),
                                 server_settings={"timezone": "Asia/Kolkata"})
    try:
        await conn.copy_records_to_table(
            "calls", columns=["id", "created_at", "caller", "endpoint", "attempts", "status",
                              "http_status", "stream", "tokens_estimated"],
            records=[("late", datetime(2026, 12, 5, 23, 45, tzinfo=UTC), "master", "chat", "[]",
                      "ok", 200, False, False)])
        got = await conn.fetch("SELECT hour, requests FROM call_hours")
    finally:
        await conn.close()
    assert [tuple(r) for r in got] == [(datetime(2026, 12, 5, 23), 1)]


async def test_pruned_calls_stay_in_the_whole_hours(engine: AsyncEngine) -> None:
    """``switchboard db prune`` removes old rows; a range of whole hours still counts them."""
    old = datetime(2019, 3, 15, 10, 30, tzinfo=UTC)
    await store_of(engine).write([call("old", old), call("new", NOON)])
    assert await prune(engine.url.render_as_string(hide_password=False),
                       older_than=timedelta(days=90), now=NOON) != []
    whole = await spend(engine, by="key", since=datetime(2019, 1, 1, tzinfo=UTC))
    assert [(r["group"], r["requests"]) for r in whole] == [("k1", 2)]


async def test_prune_removes_the_call_hours_that_ended_long_enough_ago(
        engine: AsyncEngine) -> None:
    """``hours_older_than``: the hours that ended that long before now go, the hour that ends
    just after the cut-off stays; it may not be shorter than ``older_than``."""
    url = engine.url.render_as_string(hide_password=False)
    now = NOON + timedelta(days=10, minutes=30)  # ten days on: the cut-off is 12:30 on NOON's day
    await store_of(engine).write([call("gone", NOON - timedelta(minutes=1)),
                                  call("kept", NOON + timedelta(minutes=10))])
    with pytest.raises(ValueError, match="at least as long"):
        await prune(url, older_than=timedelta(days=30), hours_older_than=timedelta(days=10),
                    now=now)
    days = timedelta(days=10)
    dry = await prune(url, older_than=days, hours_older_than=days, now=now, dry_run=True)
    assert dry[-1] == "call_hours (1 rows)"
    removed = await prune(url, older_than=days, hours_older_than=days, now=now)
    assert removed[-1] == "call_hours (1 rows)"
    whole = await spend(engine, by="key", since=NOON - timedelta(days=1))
    assert [(r["group"], r["requests"]) for r in whole] == [("k1", 1)]


async def hour_rows(engine: AsyncEngine) -> dict[tuple[Any, ...], tuple[int, float, int]]:
    """The call hours: (key, team, model) -> (requests, cost, errors), of one hour's rows."""
    async with engine.connect() as connection:
        return {(r.key_id, r.team_id, r.public_model): (r.requests, float(r.cost_usd), r.errors)
                for r in (await connection.execute(select(CallHour.__table__))).all()}


async def test_calls_naming_models_not_served_count_under_one_model(engine: AsyncEngine) -> None:
    """Made-up model names (the routing table's 404s) add to one row per hour, key and team,
    under the model ``-``, not a row each; a served model's 404s count under it; spend by model
    and a ``model`` filter read the same from the whole hours and from the calls."""
    rows = [not_served(f"made-up-{n}", NOON + timedelta(minutes=n), f"made-up-{n}")
            for n in range(20)]
    later = NOON + timedelta(minutes=1)
    rows += [not_served("master", NOON, "made-up-master", key=None), *served_404s(later),
             call("ok", later)]
    await store_of(engine).write(rows)
    assert await hour_rows(engine) == {
        ("k1", "t1", "-"): (20, 0.0, 20), ("", "t1", "-"): (1, 0.0, 1),
        ("k1", "t1", "chat"): (3, 0.75, 2)}
    for since, until in ((NOON, NOON + timedelta(hours=1)),  # whole hours: the call hours
                         (NOON + timedelta(seconds=1), NOON + timedelta(minutes=50))):  # calls
        found = await spend(engine, by="model", since=since, until=until)
        grouped = {r["group"]: (r["requests"], r["errors"]) for r in found}
        whole = since == NOON
        unknown = 21 if whole else 19
        assert grouped == {"chat": (3, 2), "-": (unknown, unknown)}
        found = await spend(engine, by="key", since=since, until=until, model="-")
        assert {r["group"]: r["requests"] for r in found} == (
            {"k1": 20, None: 1} if whole else {"k1": 19})
        assert await spend(engine, by="model", since=since, until=until, model="made-up-3") == []


def _migrate(connection: Connection, config: Config, direction: str, revision: str) -> None:
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_the_migration_fills_the_call_hours_and_its_downgrade_removes_them(
        engine: AsyncEngine) -> None:
    """Upgrading to 0015 adds the rows already stored; later rows come by the trigger;
    downgrading drops table and trigger, and rows can still be written."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0014")
    before = random_calls(2, 60)
    await store_of(engine).write(before)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    after = random_calls(3, 40)
    await store_of(engine).write(after)
    start = NOON - timedelta(days=1)
    assert_same(answered(await spend(engine, by="team", since=start)),
                summed(before + after, "team", start, None))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0014")
    assert await store_of(engine).write([call("late", NOON)]) == 1


async def test_the_unknown_models_migration_folds_the_hours_already_counted(
        engine: AsyncEngine) -> None:
    """Upgrading to 0021 moves the calls of models not served, still stored, from their names'
    rows to ``-`` (a name also served keeps its served calls); one whose hour an hours prune
    removed is left alone; later calls come by the new trigger; its downgrade puts the old
    trigger back and unfolds the calls still stored, so that upgrading again folds each once."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0020")
    earlier = NOON - timedelta(days=40)
    before = [*(not_served(f"u{n}", NOON, f"made-up-{n}") for n in range(5)),
              not_served("gone", NOON, "chat"), call("ok", NOON),  # "chat" once not served
              not_served("pruned", earlier, "made-up-old")]
    await store_of(engine).write(before)
    assert len(await hour_rows(engine)) == 7
    async with engine.begin() as connection:  # as an hours prune that left its calls (on
        # Postgres, in the partition straddling its cut-off)
        await connection.execute(text("DELETE FROM call_hours WHERE public_model = 'made-up-old'"))
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    assert await hour_rows(engine) == {("k1", "t1", "-"): (6, 0.0, 6),
                                       ("k1", "t1", "chat"): (1, 0.5, 0)}
    await store_of(engine).write([not_served("after", NOON, "made-up-after")])
    assert (await hour_rows(engine))["k1", "t1", "-"] == (7, 0.0, 7)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "downgrade", "0020")
    await store_of(engine).write([not_served("old-again", NOON, "made-up-again")])
    assert await hour_rows(engine) == {
        **{("k1", "t1", f"made-up-{n}"): (1, 0.0, 1) for n in (0, 1, 2, 3, 4, "after", "again")},
        ("k1", "t1", "chat"): (2, 0.5, 1)}
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, config, "upgrade", "head")
    assert await hour_rows(engine) == {("k1", "t1", "-"): (8, 0.0, 8),
                                       ("k1", "t1", "chat"): (1, 0.5, 0)}


async def test_concurrent_writers_of_the_same_hours_lose_nothing(pg_engine: AsyncEngine) -> None:
    """Eight batches at once over the same keys, teams and models in their own orders: none
    deadlocks on the two tables' row locks, and the hours hold every call."""
    batches = [random_calls(10 + b, 120) for b in range(8)]
    stores = [PostgresStore(pg_engine) for _ in batches]
    written = await asyncio.gather(*(s.write(rows) for s, rows in zip(stores, batches,
                                                                       strict=True)))
    assert written == [120] * 8
    start = NOON - timedelta(days=1)
    every = [r for rows in batches for r in rows]
    for by in ("key", "model"):
        assert_same(answered(await spend(engine=pg_engine, by=by, since=start)),
                    summed(every, by, start, None))
