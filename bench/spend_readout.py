"""Spend read-outs (``GET /admin/spend``): the call hours against a scan of ``calls``.

    .venv/bin/python -m bench.spend_readout [--rows 3000000] [--days 8] [--keys 1000]
        [--teams 100] [--models 3] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

A fresh Postgres database (``switchboard_bench_<pid>``, dropped afterwards) migrated to head gets
``--rows`` call rows spread over the last ``--days`` days (every key in one of ``--teams`` teams,
calling one of ``--models`` models; one call in 50 an error), written by one ``INSERT ...
SELECT`` (the call hours' trigger runs as it would for the writer's batches). Then, for each
grouping (key, team, model) and each of two ranges (from ``--days`` ago on the hour, and from a
moment off the hour), three times each, alternating:

- ``hours``: ``app.calllog.spend.spend``, what the endpoint answers with: the call hours for the
  whole hours, ``calls`` for a partial hour at the start;
- ``scan``: the reference, what it ran before the call hours: one ``GROUP BY`` over ``calls``
  for the whole range.

Printed: the median wall time of each, their ratio, and that both found the same totals.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.spend import SpendRow, _check_by, _from_calls, _merged, spend
from bench.reconcile import filled_database

_FILL = """
INSERT INTO calls (id, created_at, caller, key_id, team_id, public_model, endpoint, attempts,
                   status, http_status, stream, tokens_estimated, prompt_tokens,
                   completion_tokens, cost_usd)
SELECT 'bench-' || g, now() - random() * ($2::int * interval '1 day'), 'key',
       'key_' || (g % $3::int), 'team_' || (g % $3::int % $4::int), 'model_' || (g % $5::int),
       'chat', '[]', CASE WHEN g % 50 = 0 THEN 'error' ELSE 'ok' END, 200, false, false,
       20 + g % 13, 30 + g % 17, 0.00001 * (1 + g % 7)
FROM generate_series(1, $1::int) g
"""


async def scan(engine: AsyncEngine, by: str, since: datetime) -> list[SpendRow]:
    """The reference: one ``GROUP BY`` over ``calls`` since ``since``."""
    async with engine.connect() as conn:
        found = (await conn.execute(_from_calls(_check_by(by), since, None))).all()
    return _merged(found)


def _same(a: list[SpendRow], b: list[SpendRow]) -> bool:
    def key(rows: list[SpendRow]) -> list[tuple[Any, ...]]:
        return sorted((r["group"] or "", r["requests"], r["prompt_tokens"],
                       r["completion_tokens"], round(r["cost_usd"], 6), r["errors"])
                      for r in rows)
    return key(a) == key(b)


async def amain(args: argparse.Namespace) -> None:
    async with filled_database(args.postgres, args.days, _FILL, args.rows, args.days, args.keys,
                               args.teams, args.models) as (url, engine, took):
        conn = await asyncpg.connect(url)
        hour_rows = await conn.fetchval("SELECT count(*) FROM call_hours")
        await conn.close()
        print(f"{args.rows:,} rows over {args.days} days written in {took:.0f} s; the call "
              f"hours hold {hour_rows:,} rows")
        start = datetime.now(UTC) - timedelta(days=args.days)
        ranges = {"on the hour": start.replace(minute=0, second=0, microsecond=0),
                  "off the hour": start.replace(minute=17, second=3)}
        agree = True
        for label, since in ranges.items():
            for by in ("key", "team", "model"):
                times: dict[str, list[float]] = {"hours": [], "scan": []}
                found: dict[str, list[SpendRow]] = {}
                for _ in range(3):
                    for reader in ("scan", "hours"):
                        began = time.perf_counter()
                        found[reader] = (await scan(engine, by, since) if reader == "scan"
                                         else await spend(engine, by=by, since=since))
                        times[reader].append(time.perf_counter() - began)
                same = _same(found["scan"], found["hours"])
                agree = agree and same
                scanned = statistics.median(times["scan"])
                read = statistics.median(times["hours"])
                print(f"{label:13} by {by:5}  scan of calls (reference) {scanned * 1000:8.1f} ms"
                      f"  call hours {read * 1000:7.1f} ms  ratio {read / scanned:.3f}x "
                      f"({scanned / read:.1f}x faster)  same totals: {same}")
        if not agree:
            raise SystemExit("the call hours and the scan disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a Postgres URL allowed to CREATE/DROP DATABASE")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
