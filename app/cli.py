"""The ``switchboard`` command line."""

from __future__ import annotations

import asyncio
import importlib
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

if TYPE_CHECKING:
    from app.config import GatewayConfig
    from app.settings import Settings

# Each command imports what it needs when it runs, and the command groups of other modules are
# imported only when named (``_ELSEWHERE``), so that `--help` and a command answer without
# importing the whole gateway (1.6 s of imports once; each command's own now).


_SERVE_OPTIONS = {"config": "--config", "host": "--host", "port": "--port", "workers": "--workers",
                  "max_concurrency": "--max-concurrency"}
"""The settings ``serve`` also takes as options (a bad value may have come from either)."""


def setting_problem(problem: Any) -> str:
    """One line for one of ``Settings``' validation problems, naming the variable (and the
    ``serve`` option) it came from; never the value, which may be a secret."""
    field = str(problem["loc"][0]) if problem.get("loc") else "?"
    name = field if field.isupper() else f"SWITCHBOARD_{field.upper()}"  # upper: an alias
    option = _SERVE_OPTIONS.get(field)
    return f"invalid {name}{f' (or serve {option})' if option else ''}: {problem['msg']}"


def table_time(moment: float | datetime | str) -> str:
    """A moment as every CLI's table prints it (the README Glossary's "time"): UTC to the
    millisecond, ``2026-12-06 23:00:00.123``. Takes epoch seconds, a datetime (naive = UTC) or
    the admin API's ISO 8601 text (``app.times.iso``'s form), so that ``logs``, ``keys`` and
    ``drift`` print one form whichever way they hold the moment."""
    from app.times import iso

    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return iso(when)[:23].replace("T", " ")  # cut, not rounded: a row never reads later


_ELSEWHERE: dict[str, tuple[str, str]] = {
    "db": ("app.db.cli", "Manage the call log's database: schema migrations and retention."),
    "drift": ("app.metrics.cli", "Drift detection: the baselines that answers are compared with."),
    "experiments": ("app.calllog.cli", "A/B experiments of a running gateway (through its admin "
                    "API; needs the master key or an admin key)."),
    "keys": ("app.keys.cli", "Create, list, change, rotate and revoke virtual keys."),
    "logs": ("app.calllog.cli", "Read the call log of a running gateway (through its admin API; "
             "needs the master key or an admin key)."),
    "prompts": ("app.prompts.cli", "Versioned prompt templates: list, show, create, add versions, "
                "move labels, sync."),
    "simulate": ("app.simulator.command", "Play upstream LLM providers on HTTP, every wire "
                 "format the gateway speaks."),
    "spend": ("app.calllog.cli", "Print requests, tokens, cost and errors per key, team or model, "
              "costliest first, from the call log of a running gateway, of the calls matching "
              "every filter given."),
    "teams": ("app.keys.cli", "Create, list, change and delete teams (limits, budgets and a "
              "privacy setting their keys share)."),
}
"""The commands defined in other modules: each one's module (the command is the module's
attribute of the same name) and the first paragraph of its help, which `switchboard --help`
lists without importing it (``tests/test_cli.py`` checks it against the command's own)."""


class _Commands(click.Group):
    """The root group: commands of other modules are imported when named (``_ELSEWHERE``); a
    bad setting, in the environment or given to ``serve``, is one line per problem and exit
    status 2, not a traceback, whichever command read the settings."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _ELSEWHERE:
            module = importlib.import_module(_ELSEWHERE[cmd_name][0])
            command = getattr(module, cmd_name)
            assert isinstance(command, click.Command)
            self.add_command(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing of `--help`, with the commands of other modules described from
        ``_ELSEWHERE`` rather than imported."""
        width = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=_ELSEWHERE[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(width)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != "Settings":  # app.settings.Settings, not imported for every command
                raise
            for problem in exc.errors(include_url=False, include_input=False):
                click.echo(f"switchboard: {setting_problem(problem)}", err=True)
            ctx.exit(2)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="switchboard", prog_name="switchboard",
                      message="%(prog)s %(version)s")
def main() -> None:
    """Switchboard: one OpenAI-compatible API over many model providers."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Gateway YAML config (default: $SWITCHBOARD_CONFIG, else the embedded "
                   "offline default with mock models).")
@click.option("--host", help="Address to bind (default: $SWITCHBOARD_HOST or 127.0.0.1). "
                             "A non-loopback address requires SWITCHBOARD_MASTER_KEY.")
@click.option("--port", type=int, help="Port (default: $SWITCHBOARD_PORT or 8080).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes (default: $SWITCHBOARD_WORKERS or 1).")
@click.option("--max-concurrency", type=click.IntRange(min=1),
              help="Requests each worker serves at once; past it, 503 with Retry-After "
                   "(default: $SWITCHBOARD_MAX_CONCURRENCY or 1024).")
def serve(config_path: Path | None, host: str | None, port: int | None,
          workers: int | None, max_concurrency: int | None) -> None:
    """Run the gateway."""
    import uvicorn

    from app.calllog.runtime import CHECK_TIMEOUT_S, UNREACHABLE_AT_START
    from app.config import ConfigError
    from app.db.engine import UnsupportedDatabaseUrl, is_sqlite, normalize_url
    from app.db.migrate import DatabaseUnreachable, MigrationError, check_current, upgrade
    from app.main import resolve_config
    from app.settings import Settings, UnsafeSettings

    overrides = {k: v for k, v in {"config": config_path, "host": host, "port": port,
                                   "workers": workers,
                                   "max_concurrency": max_concurrency}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    try:
        settings.check_exposure()
        config = resolve_config(settings)
        unbuildable = _build_problems(config)
        if unbuildable:
            raise ConfigError("\n".join(unbuildable))
        os.environ.pop(UNREACHABLE_AT_START, None)
        normalize_url(settings.database_url)  # a malformed URL: one line, exit 2
        if is_sqlite(settings.database_url):
            if settings.call_log:
                # The embedded SQLite migrates itself (each worker's start-up again, a no-op
                # then): here first, so that a failure is one line, not a start-up traceback.
                asyncio.run(upgrade(settings.database_url))
        else:
            try:
                asyncio.run(check_current(settings.database_url, timeout_s=CHECK_TIMEOUT_S))
            except DatabaseUnreachable as exc:  # an unmigrated one (SchemaNotReady) exits
                click.echo(f"switchboard: warning: {exc}; serving anyway, spooling call "
                           "records until it answers (see /readyz)", err=True)
                # the workers need not wait for a hung database again (app.calllog.runtime)
                os.environ[UNREACHABLE_AT_START] = f"switchboard serve {exc}"
    except (UnsafeSettings, ConfigError, MigrationError, UnsupportedDatabaseUrl) as exc:
        for line in str(exc).splitlines():  # a config's problems: one line each
            click.echo(f"switchboard: {line}", err=True)
        sys.exit(2)
    served = ", ".join(config.models) or "no model (every model call is a 404 until a reload " \
        "adds one)"
    click.echo(f"switchboard: serving {served} on "
               f"http://{settings.host}:{settings.port} ({_config_source(settings, config)})",
               err=True)
    # Workers re-read the settings from the environment: hand the CLI's choices down that way.
    for key, value in overrides.items():
        os.environ[f"SWITCHBOARD_{key.upper()}"] = str(value)
    made_dir: Path | None = None
    if settings.workers > 1 or settings.metrics_dir is not None:
        # prometheus-client picks multiprocess mode from this variable when a worker imports it.
        try:
            metrics_dir = _fresh_metrics_dir(settings.metrics_dir)
        except OSError as exc:  # a file, or a folder it may not write to
            click.echo(f"switchboard: PROMETHEUS_MULTIPROC_DIR {exc.filename}: {exc.strerror}",
                       err=True)
            sys.exit(2)
        made_dir = metrics_dir if settings.metrics_dir is None else None
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # log_config is applied by uvicorn in every worker process too (basicConfig here would
    # reach the parent only). The HTTP protocol is uvicorn's httptools one plus a header
    # deadline (app.serving); limit_concurrency is uvicorn's plain-text 503 past
    # max_connections, a backstop above the gateway's own max_concurrency.
    options: dict[str, Any] = dict(
        factory=True, host=settings.host, port=settings.port, workers=settings.workers,
        loop="uvloop", http="app.serving:HeaderDeadlineProtocol", access_log=False,
        log_config=log_config, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections,
        proxy_headers=False)
    started = False
    try:
        if settings.workers > 1:  # uvicorn's supervisor: it signals its workers on SIGTERM
            from app.serving import SUPERVISOR_PID

            os.environ[SUPERVISOR_PID] = str(os.getpid())  # app.serving.follow_supervisor
            uvicorn.run("app.main:from_environment", **options)  # exits 3 if it cannot start
            started = True
        else:  # readyz red first, drain, exit 0 (app.serving.DrainingServer)
            from app.serving import DrainingServer

            server = DrainingServer(uvicorn.Config("app.main:from_environment", **options),
                                    drain_s=settings.shutdown_drain_s)
            server.run()  # exits 3 itself when it cannot listen
            started = server.started
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
        if not started:  # the reason is logged above
            click.echo(f"switchboard: could not start serving on {settings.host}:"
                       f"{settings.port} (see the error above)", err=True)
    if not started:
        sys.exit(3)  # uvicorn's status for a failed start-up


def _config_source(settings: Settings, config: GatewayConfig) -> str:
    """Where the served config came from, for the start-up line: the file, or the embedded
    default, offline unless API keys in the environment added online providers."""
    if settings.config:
        return f"config {settings.config}"
    online = [name for name in config.providers if name != "mock"]
    if not online:
        return "embedded default, offline"
    return f"embedded default, with {' and '.join(online)} from their API keys"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str) -> dict[str, Any]:
    """One line format, ``time level logger: message``, on stderr for every logger (uvicorn's
    included), as a ``logging.config.dictConfig`` dict: uvicorn applies it in each worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's loggers log through the root handler, not handlers of their own.
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def _fresh_metrics_dir(given: Path | None) -> Path:
    """The folder where workers keep metric values, emptied: values of an earlier run would
    otherwise be summed into this one's."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="switchboard-metrics-"))
    from app.metrics.versions import VERSIONS_DIR

    given.mkdir(parents=True, exist_ok=True)
    for stale in given.glob("*.db"):
        stale.unlink()
    shutil.rmtree(given / VERSIONS_DIR, ignore_errors=True)  # app.metrics.versions
    return given


def _build_problems(config: GatewayConfig) -> list[str]:
    """What building ``config``'s providers refuses, as ``serve``'s workers and a reload build
    them (no network: credentials are only made, not used), one line each naming the provider:
    the ``ConfigError`` of a builder (settings a credential library reads from the
    environment)."""
    from app.config import ConfigError
    from app.providers import build_provider
    from app.providers.http import new_session

    async def build() -> list[str]:
        problems = []
        async with new_session() as session:
            for name, settings in config.providers.items():
                try:
                    provider = build_provider(settings, session)
                except ConfigError as exc:
                    problems.append(f"providers.{name}: {exc}")
                else:
                    await provider.aclose()
        return problems

    return asyncio.run(build())


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def check_config(path: Path) -> None:
    """Validate a gateway config file, and build its providers as serve would (no network);
    exit 1 with every problem listed if it is invalid."""
    from app.config import ConfigError, load_config
    from app.settings import environment

    try:
        config = load_config(path, environment())
        unbuildable = _build_problems(config)
        if unbuildable:
            raise ConfigError("\n".join(unbuildable))
    except ConfigError as exc:
        click.echo(f"{path}: invalid", err=True)
        for line in str(exc).splitlines():
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    models = _count(len(config.models), 'model')
    if config.models:
        models += f": {', '.join(config.models)}"
    click.echo(f"{path}: ok ({_count(len(config.providers), 'provider')}, {models})")
    if not config.models:  # valid, but a gateway on it answers every call 404
        click.echo(f"{path}: warning: it serves no model", err=True)
    from app.config_warnings import warnings
    for line in warnings(config):
        click.echo(f"{path}: warning: {line}", err=True)


def _count(n: int, noun: str) -> str:
    """``1 model``, ``3 models``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@main.group("config")
def config_group() -> None:
    """Config files: what a reload would change."""


@config_group.command("diff")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
def config_diff(old: Path, new: Path) -> None:
    """What loading NEW in place of OLD would change, one line each (credentials never
    shown); exit 1 if either file is invalid."""
    from app.config import ConfigError, load_config
    from app.config_diff import changes
    from app.settings import environment

    loaded = []
    for path in (old, new):
        try:
            loaded.append(load_config(path, environment()))
        except ConfigError as exc:
            click.echo(f"{path}: invalid", err=True)
            for line in str(exc).splitlines():
                click.echo(f"  {line}", err=True)
            sys.exit(1)
    from app.pipeline import config_version  # the app's modules: only for this command

    found = changes(*loaded)
    old_version, new_version = (config_version(c) for c in loaded)
    click.echo(f"{old} ({old_version}) -> {new} ({new_version}): "
               + (_count(len(found), "change") if found else "no changes"))
    for line in found:
        click.echo(f"  {line}")
