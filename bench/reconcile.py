"""The budget reconcile's read of the call log: the spend ledger against a scan of ``calls``.

    .venv/bin/python -m bench.reconcile [--rows 2000000] [--days 30] [--keys 1000]
        [--teams 100] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

A fresh Postgres database (``switchboard_bench_<pid>``, dropped afterwards) migrated to head gets
``--rows`` call rows spread over the last ``--days`` days (every key in one of ``--teams``
teams, every row priced), written by one ``INSERT ... SELECT`` (the ledger's trigger runs as it
would for the writer's batches). Then, three times each, alternating:

- ``ledger``: ``app.limits.budget.log_spend``, what the reconcile reads every
  ``reconcile_interval_s`` (60 s; before, in every gateway process): one pass over
  ``spend_days``;
- ``scan``: the reference, what it ran before the ledger: for the day, the month and all time,
  one ``GROUP BY key_id, team_id`` over ``calls`` since the period's start.

Printed: the median wall time of each, their ratio, and that both found the same sums.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.migrate import ensure_partitions, upgrade
from app.db.models import Call
from app.limits.budget import log_spend
from app.limits.model import period_start

_calls = Call.__table__
_FILL = """
INSERT INTO calls (id, created_at, caller, key_id, team_id, endpoint, attempts, status,
                   http_status, stream, tokens_estimated, cost_usd)
SELECT 'bench-' || g, now() - random() * ($2::int * interval '1 day'), 'key',
       'key_' || (g % $3::int), 'team_' || (g % $3::int % $4::int), 'chat', '[]', 'ok', 200,
       false, false, 0.00001 * (1 + g % 7)
FROM generate_series(1, $1::int) g
"""


async def scan(engine: AsyncEngine, now: datetime) -> dict[tuple[str, str, str], int]:
    """The reference: the three ``GROUP BY`` scans of ``calls`` the reconcile made before."""
    out: dict[tuple[str, str, str], int] = {}
    async with engine.connect() as conn:
        for period in ("day", "month", "total"):
            query = (select(_calls.c.key_id, _calls.c.team_id, func.sum(_calls.c.cost_usd))
                     .where(_calls.c.cost_usd.is_not(None))
                     .group_by(_calls.c.key_id, _calls.c.team_id))
            start = period_start(period, now)
            if start is not None:
                query = query.where(_calls.c.created_at >= start)
            for key_id, team_id, total in (await conn.execute(query)).all():
                out[(period, key_id, team_id)] = int(total * 1_000_000_000)
    return out


async def ledger(engine: AsyncEngine, now: datetime) -> dict[tuple[str, str, str], int]:
    """What the reconcile reads now (keys only: the teams' sums are those added up)."""
    return {(s.period, s.id, s.tag): s.nano_usd
            for s in await log_spend(engine, now=now) if s.scope == "key"}


@asynccontextmanager
async def filled_database(admin_url: str, days: int, fill: str,
                          *args: object) -> AsyncIterator[tuple[str, AsyncEngine, float]]:
    """A fresh database (``switchboard_bench_<pid>``) migrated to head, with partitions for the
    last ``days`` days, filled by the statement ``fill`` with ``args`` and analysed: its URL,
    an engine on it, and the seconds the fill took. Dropped on exit."""
    name = f"switchboard_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        await upgrade(url)
        today = datetime.now(UTC).date()
        await ensure_partitions(engine, [today - timedelta(days=d) for d in range(days + 1)])
        conn = await asyncpg.connect(url)
        began = time.perf_counter()
        await conn.execute(fill, *args)
        await conn.execute("ANALYZE")
        await conn.close()
        yield url, engine, time.perf_counter() - began
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def amain(args: argparse.Namespace) -> None:
    async with filled_database(args.postgres, args.days, _FILL, args.rows, args.days,
                               args.keys, args.teams) as (url, engine, took):
        conn = await asyncpg.connect(url)
        ledger_rows = await conn.fetchval("SELECT count(*) FROM spend_days")
        await conn.close()
        print(f"{args.rows:,} rows over {args.days} days written in {took:.0f} s; the ledger "
              f"holds {ledger_rows:,} rows")
        now = datetime.now(UTC)
        times: dict[str, list[float]] = {"ledger": [], "scan": []}
        found: dict[str, dict[tuple[str, str, str], int]] = {}
        for _ in range(3):
            for label, reader in (("scan", scan), ("ledger", ledger)):
                began = time.perf_counter()
                found[label] = await reader(engine, now)
                times[label].append(time.perf_counter() - began)
        same = found["scan"] == found["ledger"]
        scanned, read = statistics.median(times["scan"]), statistics.median(times["ledger"])
        print(f"scan of calls (reference): {scanned * 1000:9.1f} ms (median of 3)\n"
              f"spend ledger:              {read * 1000:9.1f} ms (median of 3)\n"
              f"ratio: the ledger takes {read / scanned:.4f}x the scan's time "
              f"({scanned / read:,.0f}x faster); same sums: {same}")
        if not same:
            raise SystemExit("the ledger and the scan disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a Postgres URL allowed to CREATE/DROP DATABASE")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
