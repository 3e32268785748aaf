"""The call-log writer alone: rows/s into Postgres and SQLite, against row-by-row inserts.

    .venv/bin/python bench/calllog_writer.py [--rows 100000] [--batch 500] [--concurrency 1]
        [--reference-rows 5000] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--no-sqlite]

For each backend: a fresh database (Postgres: a new database ``switchboard_bench_<pid>``, dropped
afterwards; SQLite: a temporary file) migrated to head, then

- ``store``: ``--rows`` realistic rows through ``PostgresStore``/``SqliteStore.write`` in batches
  of ``--batch``, one batch after another (as the background writer does), or ``--concurrency``
  batches in flight at once (client and database then work in parallel);
- ``replay``: the same rows written again (every one a duplicate, all skipped);
- ``row-by-row``: ``--reference-rows`` other rows, one ``INSERT ... ON CONFLICT DO NOTHING`` per
  row in its own transaction (the naive writer), measured in the same run.

The ratio column is rows/s over the row-by-row reference of the same backend. Wall-clock rates
move with whatever else the machine runs, so the CPU time per row is printed too: of this process
(``client``) and, when Postgres runs on this machine, of its backends serving the benchmark
(``server``); those do not depend on the neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `app` importable from the checkout
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from app.calllog.columns import COLUMNS, pg_record, sqlite_record  # noqa: E402
from app.calllog.postgres import PostgresStore  # noqa: E402
from app.calllog.record import Attempt, CallRecord, Row  # noqa: E402
from app.calllog.sqlite import SqliteStore  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.usage import Usage  # noqa: E402

MODELS = [("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct"), ("chat", "openai", "gpt-4o-mini"),
          ("embed", "openai", "text-embedding-3-small"), ("claude", "anthropic", "claude-3-5")]


def make_rows(count: int, *, prefix: str, seed: int = 7) -> list[Row]:
    """``count`` call rows shaped like production traffic (5% errors, some fallbacks, tags), made
    with 50 virtual keys in 5 teams (the spend ledger's trigger counts each row)."""
    rng = random.Random(seed)
    now = time.time()
    rows = []
    for i in range(count):
        public, provider, target = rng.choice(MODELS)
        failed = rng.random() < 0.05
        attempts = [Attempt(provider, target, 502 if failed else 200,
                            "upstream_error" if failed else None, rng.uniform(20, 900))]
        prompt, completion = rng.randint(10, 4000), rng.randint(0, 1000)
        key = rng.randint(1, 50)
        record = CallRecord(
            id=f"{prefix}-{i:08d}-{rng.getrandbits(64):016x}", endpoint="/v1/chat/completions",
            caller="key", key_id=f"key_{key:04d}", team_id=f"team_{key % 5}",
            stream=rng.random() < 0.6,
            created_at=now - rng.uniform(0, 3600), public_model=public, provider=provider,
            target_model=target, attempts=attempts, status="error" if failed else "ok",
            http_status=502 if failed else 200,
            error_type="upstream_error" if failed else None,
            error_message="upstream returned 502 Bad Gateway" if failed else None,
            latency_ms=rng.uniform(20, 900), ttft_ms=rng.uniform(5, 300),
            upstream_ms=rng.uniform(15, 890),
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion,
                        cached_tokens=rng.choice([0, 0, 128])),
            cost_usd=prompt * 1.5e-7 + completion * 6e-7, finish_reason="stop",
            response_model=target, system_fingerprint="fp_0123456789",
            end_user=f"user-{rng.randint(1, 1000)}", tags={"team": rng.choice("abc")})
        record.finished_at = record.created_at + (record.latency_ms or 0) / 1000
        rows.append(record.to_row())
    return rows


def backend_cpu(pids: Sequence[int]) -> float:
    """CPU seconds used so far by the local processes ``pids`` (0 for any not visible here)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def server_pids(engine: AsyncEngine) -> list[int]:
    """The Postgres backends now connected to the benchmark's database (none for SQLite)."""
    if engine.dialect.name != "postgresql":
        return []
    async with engine.connect() as connection:
        result = await connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        return [int(pid) for pid in result.scalars()]


async def timed(label: str, count: int, work: Callable[[], Awaitable[int]], *,
                engine: AsyncEngine) -> dict[str, Any]:
    """Run ``work`` once; return its label, rows asked, rows it reported new, seconds, rows/s,
    and CPU microseconds per row of this process and of the database's backends."""
    pids = await server_pids(engine)
    server, client, start = backend_cpu(pids), time.process_time(), time.perf_counter()
    new = await work()
    seconds = time.perf_counter() - start
    client = time.process_time() - client
    server = backend_cpu(pids) - server
    return {"method": label, "rows": count, "new": new, "seconds": seconds,
            "rate": count / seconds, "client_us": client / count * 1e6,
            "server_us": server / count * 1e6 if pids else None}


def batched(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


async def run_backend(engine: AsyncEngine, store: PostgresStore | SqliteStore,
                      args: argparse.Namespace) -> list[dict[str, Any]]:
    """The three measurements (see the module docstring) on one migrated database."""
    rows = make_rows(args.rows, prefix="store")
    reference = make_rows(args.reference_rows, prefix="ref", seed=8)
    batches = batched(rows, args.batch)

    async def store_all() -> int:
        pending = iter(batches)

        async def worker() -> int:
            return sum([await store.write(batch) for batch in pending])

        return sum(await asyncio.gather(*(worker() for _ in range(args.concurrency))))

    async def row_by_row() -> int:
        """One INSERT per row, each its own transaction (values encoded as the stores do)."""
        columns = ", ".join(COLUMNS)
        new = 0
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
                sql = f"INSERT INTO calls ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
                driver = (await connection.get_raw_connection()).driver_connection
                assert driver is not None
                for row in reference:
                    status = await driver.execute(sql, *pg_record(row))
                    new += int(status.rsplit(" ", 1)[-1])
                return new
            marks = ", ".join("?" for _ in COLUMNS)
            sql = f"INSERT OR IGNORE INTO calls ({columns}) VALUES ({marks})"
            for row in reference:
                new += (await connection.exec_driver_sql(sql, sqlite_record(row))).rowcount
                await connection.commit()
        return new

    # Warm up as many pooled connections as will be used (partitions, statement caches too).
    await asyncio.gather(*(store.write(make_rows(10, prefix=f"warm{i}", seed=9 + i))
                           for i in range(args.concurrency)))
    return [await timed(f"store x{args.concurrency}", len(rows), store_all, engine=engine),
            await timed(f"store replay x{args.concurrency} (all dup)", len(rows), store_all,
                        engine=engine),
            await timed("row-by-row INSERT", len(reference), row_by_row, engine=engine)]


async def report_disk(url: str) -> None:
    """The calls table's disk use (partitions, indexes and TOAST included) per million rows, after
    VACUUM ANALYZE: what retention costs (docs/scaling.md)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE calls")
        rows = await connection.fetchval("SELECT count(*) FROM calls")
        size = float(await connection.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE c.oid = 'calls'::regclass OR c.oid IN "
            "(SELECT inhrelid FROM pg_inherits WHERE inhparent = 'calls'::regclass)"))
    finally:
        await connection.close()
    if rows:
        print(f"postgres: calls table {size / 2**20:.1f} MiB for {rows:,} rows = "
              f"{size / rows * 1e6 / 2**30:.2f} GiB per million calls (indexes included)",
              flush=True)


async def bench_postgres(args: argparse.Namespace) -> list[dict[str, Any]]:
    admin_url = make_url(args.postgres)
    name = f"switchboard_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_url.set(drivername="postgresql").render_as_string(False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin_url.set(database=name)
        await upgrade(url)
        engine = make_engine(url)
        try:
            results = await run_backend(engine, PostgresStore(engine), args)
        finally:
            await engine.dispose()
        await report_disk(url.set(drivername="postgresql").render_as_string(False))
        return results
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench_sqlite(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/calls.db"
        await upgrade(url)
        engine = make_engine(url)
        try:
            return await run_backend(engine, SqliteStore(engine), args)
        finally:
            await engine.dispose()


def report(backend: str, results: list[dict[str, Any]]) -> None:
    reference = results[-1]["rate"]
    for result in results:
        server = result["server_us"]
        print(f"{backend:<9} {result['method']:<30} {result['rows']:>8} {result['new']:>8} "
              f"{result['seconds']:>8.2f} {result['rate']:>10,.0f} "
              f"{result['rate'] / reference:>7.1f}x {result['client_us']:>10.1f} "
              f"{'-' if server is None else f'{server:.1f}':>10}")


async def amain(args: argparse.Namespace) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'backend':<9} {'method':<30} {'rows':>8} {'new':>8} {'seconds':>8} "
          f"{'rows/s':>10} {'ratio':>8} {'client':>10} {'server':>10}")
    print(f"{'':<93}(CPU µs per row)")
    report("postgres", await bench_postgres(args))
    if not args.no_sqlite:
        report("sqlite", await bench_sqlite(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="rows through the store")
    parser.add_argument("--batch", type=int, default=500, help="rows per store.write")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="store.write calls in flight at once")
    parser.add_argument("--reference-rows", type=int, default=5_000,
                        help="rows for the row-by-row reference")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a Postgres URL allowed to CREATE/DROP DATABASE")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite runs")
    asyncio.run(amain(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
