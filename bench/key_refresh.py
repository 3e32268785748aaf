"""The key directory's refresh: reading the key change log against re-reading every cached key.

    .venv/bin/python -m bench.key_refresh [--keys 20000] [--teams 200] [--rounds 3]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

A fresh Postgres database (``switchboard_bench_<pid>``, dropped afterwards) migrated to head gets
``--keys`` virtual keys in ``--teams`` teams (one ``INSERT``). Each round, a new
``KeyDirectory`` resolves every key (as a gateway that served them all would hold them), then
refreshes, timing each refresh's CPU in this process (``time.process_time``: the directory's own
work and the database driver's; the database's CPU is not counted) and its wall time:

- ``every key``: the directory's first refresh, which re-reads every cached entry. This is the
  reference: before the key change log, every refresh did it (every 30 s, in every process);
- ``nothing changed``: the log read finds no change;
- ``10 keys changed``: ten keys updated since the last refresh (by SQL, as the triggers see
  the admin API's updates);
- ``a team changed``: one team updated (its keys are re-read).

Printed: the median of the rounds for each, its ratio to the reference, and what the reference
costs a process as a share of one core at the default ``refresh_s`` (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from app.keys import KeyDirectory, KeyStore
from bench.reconcile import filled_database

REFRESH_S = 30.0
_FILL = """
WITH made AS (
    INSERT INTO teams (id, name, rpm, budget_period, metadata, created_at)
    SELECT 'team_' || t, 'team ' || t, 100000, 'month', '{}', now()
    FROM generate_series(0, $2::int - 1) t
    RETURNING id
)
INSERT INTO api_keys (id, key_hash, prefix, name, team_id, rpm, tpm, budget_usd, budget_period,
                      metadata, admin, created_at)
SELECT 'key_' || g, encode(sha256(convert_to('sk-sb-bench-' || g, 'UTF8')), 'hex'),
       'sk-sb-bench', 'key ' || g, 'team_' || (g % $2::int), 1000, 100000, 10, 'month', '{}',
       false, now()
FROM generate_series(0, $1::int - 1) g
"""


async def timed(action: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """CPU seconds of this process and wall seconds that ``action`` took."""
    cpu, wall = time.process_time(), time.perf_counter()
    await action()
    return time.process_time() - cpu, time.perf_counter() - wall


async def one_round(url: str, store: KeyStore, keys: int, teams: int,
                    round_no: int) -> dict[str, tuple[float, float]]:
    directory = KeyDirectory(store, None)
    for first in range(0, keys, 200):
        await asyncio.gather(*(directory.resolve(f"sk-sb-bench-{g}")
                               for g in range(first, min(keys, first + 200))))
    if len(directory) != keys:
        raise SystemExit(f"only {len(directory)} of {keys} keys cached")
    conn = await asyncpg.connect(url)
    try:
        out = {"every key": await timed(directory.refresh),
               "nothing changed": await timed(directory.refresh)}
        changed = [f"key_{(round_no * 10 + i) * 7 % keys}" for i in range(10)]
        await conn.execute("UPDATE api_keys SET rpm = rpm + 1 WHERE id = any($1::text[])",
                           changed)
        out["10 keys changed"] = await timed(directory.refresh)
        await conn.execute("UPDATE teams SET rpm = rpm + 1 WHERE id = $1",
                           f"team_{round_no % teams}")
        out["a team changed"] = await timed(directory.refresh)
    finally:
        await conn.close()
    return out


async def amain(args: argparse.Namespace) -> None:
    async with filled_database(args.postgres, 0, _FILL, args.keys,
                               args.teams) as (url, engine, took):
        print(f"{args.keys:,} keys in {args.teams} teams written in {took:.1f} s")
        store = KeyStore(engine)
        runs: dict[str, list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):
            for label, cost in (await one_round(url, store, args.keys, args.teams,
                                                round_no)).items():
                runs.setdefault(label, []).append(cost)
        reference = statistics.median(cpu for cpu, _ in runs["every key"])
        print(f"{'refresh':<18}{'CPU ms (median)':>17}{'wall ms':>10}{'ratio':>9}")
        for label, costs in runs.items():
            cpu = statistics.median(c for c, _ in costs)
            wall = statistics.median(w for _, w in costs)
            print(f"{label:<18}{cpu * 1000:>17.2f}{wall * 1000:>10.2f}{cpu / reference:>9.4f}")
        print(f"re-reading every key each {REFRESH_S:.0f} s (before the change log) cost "
              f"{reference / REFRESH_S:.2%} of a core per process at {args.keys:,} keys "
              f"(median of {args.rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a Postgres URL allowed to CREATE/DROP DATABASE")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
