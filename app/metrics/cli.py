"""``switchboard drift ...``: drift baselines from the command line.

``drift baseline list`` shows the stored baselines; ``drift baseline reset MODEL`` deletes a
public model's (one provider's with ``--provider``) and leaves a reset marker. Running gateways
notice within ``drift.sync_interval_s`` and capture a new baseline from the answers that follow
(restarting a capture in progress: its answers came before the reset). Exit status:
0 done, 1 the database refused or is not migrated, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from app.db.cli import _resolve, database_url_option
from app.metrics.baselines import Baseline, DatabaseBaselines, baselines

T = TypeVar("T")


def _fail(message: str, *, status: int = 1) -> NoReturn:
    click.echo(f"switchboard: {message}", err=True)
    sys.exit(status)


def _with_store(url: str, work: Callable[[DatabaseBaselines], Awaitable[T]]) -> T:
    """Run ``work`` against the baselines in the database at ``url`` (checked current first)."""
    from app.db.engine import DATABASE_ERRORS, UnsupportedDatabaseUrl, describe_error, make_engine
    from app.db.migrate import MigrationError, check_current

    async def run() -> T:
        await check_current(url)
        engine = make_engine(url)
        try:
            return await work(DatabaseBaselines(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except UnsupportedDatabaseUrl as exc:
        _fail(str(exc), status=2)
    except MigrationError as exc:
        _fail(str(exc))
    except DATABASE_ERRORS as exc:
        _fail(describe_error(exc))


@click.group("drift", context_settings={"help_option_names": ["-h", "--help"]})
def drift() -> None:
    """Drift detection: the baselines that answers are compared with."""


@drift.group("baseline")
def baseline() -> None:
    """Stored drift baselines (one per public model, target and signal)."""


@baseline.command("list")
@database_url_option
def list_baselines(database_url: str | None) -> None:
    """Show every stored baseline."""
    rows = baselines(_with_store(_resolve(database_url), lambda store: store.load_all()))
    if not rows:
        click.echo("no drift baselines stored (gateways capture them from the first answers)")
        return
    click.echo(f"{'MODEL':<24} {'PROVIDER':<16} {'UPSTREAM MODEL':<24} {'SIGNAL':<10} "
               f"{'SAMPLES':>7}  CAPTURED")
    for item in sorted(rows.values(), key=lambda b: b.key):
        click.echo(f"{item.model:<24} {item.provider:<16} {item.upstream_model:<24} "
                   f"{item.signal:<10} {item.samples:>7}  {_when(item)}")


def _model_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():  # "no baseline stored for ;" and exit 0 read as done
        raise click.BadParameter("a public model's name is not empty")
    return value


@baseline.command("reset")
@click.argument("model", callback=_model_name)
@click.option("--provider", help="Only this provider's baselines (default: all of the model's).")
@database_url_option
def reset(model: str, provider: str | None, database_url: str | None) -> None:
    """Forget MODEL's baselines: gateways capture new ones from the answers that follow."""
    removed = _with_store(_resolve(database_url),
                          lambda store: store.delete(model, provider))
    scope = f"{model}/{provider}" if provider else model
    if removed == 0:
        click.echo(f"switchboard: no baseline stored for {scope}; running gateways restart "
                   "any capture in progress within their drift.sync_interval_s")
        return
    click.echo(f"switchboard: removed {removed} baseline(s) of {scope}; running gateways "
               "capture new ones within their drift.sync_interval_s")


def _when(item: Baseline) -> str:
    from app.cli import table_time

    return table_time(item.captured_at)
