"""``switchboard logs``, ``switchboard spend`` and ``switchboard experiments report``: read the
call log through a running gateway's admin API.

(Past 400 lines: three read-outs sharing one admin client, its connection options and its table
printing.)

``logs query`` prints one page (or, with ``--all``, every page) of calls matching the filters;
``logs tail`` polls for new calls until Ctrl-C; ``spend`` prints spend per key, team or model.
They talk HTTP to ``/admin/calls`` and ``/admin/spend`` with the master key or an admin
virtual key, so they work
against a remote gateway and never touch the database themselves.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import quote

import click
import httpx

from app.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
Row = dict[str, Any]

MAX_PAGE = 1000
"""The most calls ``/admin/calls`` answers in one page."""
SEEN_CAP = 100_000
"""Most call ids ``tail`` remembers for de-duplication, whatever the traffic."""


class AdminApiError(click.ClickException):
    """The gateway could not be asked, or refused; the message says what to do. Exit status 1,
    one ``switchboard: ...`` line on stderr, as every other command's failures."""

    def show(self, file: Any = None) -> None:
        click.echo(f"switchboard: {self.format_message()}", err=True)


class Refused(AdminApiError):
    """The gateway refused a value of the command line (its 400, or a 404 naming what it does
    not know): a usage error, exit status 2 as click's own."""

    exit_code = 2


class Unreachable(AdminApiError):
    """A failure that may pass by itself (gateway down, restarting, database unavailable)."""


def _error(response: httpx.Response) -> dict[str, Any] | None:
    """The ``error`` of an answer in OpenAI's error shape (``{"error": {"message": ...}}``, as
    every error of a Switchboard gateway is); ``None`` for any other answer."""
    try:
        error = response.json()["error"]
        return error if isinstance(error, dict) and "message" in error else None
    except (ValueError, KeyError, TypeError):
        return None


def _message(response: httpx.Response) -> str:
    error = _error(response)
    return str(error["message"]) if error is not None else (
        response.text[:200] or response.reason_phrase)


_TOKEN = re.compile(r"[\x21-\x7e]+")
"""What a key can be to travel in ``Authorization: Bearer``: visible ASCII."""


class AdminClient:
    """A thin client for ``/admin/calls`` and ``/admin/spend``; raises ``AdminApiError`` with a
    readable message, which shows the URL masked (``shown_url``).

    ``url`` should hold no user or password (``gateway_url`` refuses one): httpx would send it
    as Basic auth in place of the key's ``Authorization: Bearer`` header."""

    def __init__(self, url: str, *, key: str | None, timeout: float = 30.0) -> None:
        if key and not _TOKEN.fullmatch(key):  # never shown: httpx's refusal would quote it
            raise AdminApiError(
                "the key holds a character an HTTP header cannot carry (a space, a non-ASCII "
                "character, or a line ending such as an env file saved with Windows line "
                "endings leaves): check --key or SWITCHBOARD_MASTER_KEY.")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.shown = shown_url(self.url)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def page(self, params: dict[str, Any]) -> tuple[list[Row], str | None]:
        """One page of calls (newest first) and the next cursor."""
        body = self.get("/admin/calls", params, keys={"data": list})
        return list(body["data"]), body.get("next_cursor")

    def get(self, path: str, params: dict[str, Any], *,
            keys: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
        """The JSON body of the admin API's answer to ``GET path``: an object holding each of
        ``keys`` with a value of its type, else ``AdminApiError`` (a 200 from something that is
        no gateway, a login page say, is not read as one)."""
        try:
            response = self._http.get(path, params=params)
        except httpx.ConnectError as exc:
            if _tls_failed(exc):
                raise Unreachable(
                    f"TLS with {self.shown} failed ({exc}): is the gateway serving plain "
                    "HTTP? Use an http:// URL.") from None
            raise Unreachable(f"cannot connect to {self.shown}: is the gateway running? Start it "
                              "with 'switchboard serve', or point --url at it.") from None
        except httpx.TimeoutException:
            raise Unreachable(f"the gateway at {self.shown} did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"request to {self.shown} failed: {exc}") from None
        self._check(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or any(
                not isinstance(body.get(name), kind) for name, kind in (keys or {}).items()):
            raise AdminApiError(f"{self.shown} answered {path} with something other than the "
                                "admin API's answer; is it a Switchboard gateway of this "
                                "version?")
        return body

    def rows(self, params: dict[str, Any]) -> Iterator[Row]:
        """Every matching call, newest first, following cursors page by page."""
        params = dict(params)
        while True:
            page, cursor = self.page(params)
            yield from page
            if cursor is None:
                return
            params["cursor"] = cursor

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        detail = _message(response)
        if status == 401:
            raise AdminApiError(f"the gateway refused the key (401: {detail}) Pass the master "
                                "key (or an admin key) with --key or SWITCHBOARD_MASTER_KEY.")
        if status == 403:
            raise AdminApiError(f"this key may not read the call log (403: {detail}) The admin "
                                "API needs the master key or a key created with --admin.")
        error = _error(response)
        # a 404 of the API itself (an unknown experiment, call...) says what was not found;
        # one of a path the server does not serve, or not from a gateway, is no API at all
        if status == 404 and (error is None or error.get("code") == "unsupported_endpoint"):
            raise AdminApiError(f"{self.shown} has no call log API (404); is it a Switchboard "
                                "gateway of this version?")
        if status >= 500:
            raise Unreachable(f"the gateway answered {status}: {detail}")
        if status in (400, 404):  # a value of the command line: a filter, a name
            raise Refused(f"the gateway answered {status}: {detail}")
        raise AdminApiError(f"the gateway answered {status}: {detail}")


def _tls_failed(exc: httpx.ConnectError) -> bool:
    """Whether the connection failed in the TLS handshake (an https:// URL to a plain-HTTP
    gateway, say), not in reaching the host."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


# ---- output


def _cell(value: Any, fmt: Callable[[Any], str]) -> str:
    return "-" if value is None else fmt(value)


COLUMNS: tuple[tuple[str, int], ...] = (
    ("TIME (UTC)", -23), ("ID", -32), ("MODEL", -20), ("PROVIDER", -14), ("STATUS", -9),
    ("HTTP", 4), ("TOKENS", 8), ("COST", 11), ("LATENCY", 9))
"""Header and width of each table column; a negative width means left-aligned."""


def _line(cells: list[str], columns: tuple[tuple[str, int], ...] = COLUMNS) -> str:
    parts = [c.ljust(-w) if w < 0 else c.rjust(w) for c, (_, w) in zip(cells, columns,
                                                                     strict=True)]
    return "  ".join(parts).rstrip()


def header() -> str:
    return _line([name for name, _ in COLUMNS])


def table_row(row: Row) -> str:
    """One call as a table line (see ``COLUMNS``); ``~`` marks estimated token counts."""
    tokens = _cell(row.get("total_tokens"), str)
    if row.get("tokens_estimated") and tokens != "-":
        tokens = "~" + tokens
    from app.cli import table_time

    return _line([
        table_time(str(row["created_at"])),
        str(row.get("id")),
        _cell(row.get("public_model"), str),
        _cell(row.get("provider"), str),
        str(row.get("status")),
        _cell(row.get("http_status"), str),
        tokens,
        _cell(row.get("cost_usd"), lambda c: usd(float(c))),
        _cell(row.get("latency_ms"), lambda ms: f"{float(ms):.0f}ms"),
    ])


def usd(amount: float) -> str:
    """``amount`` dollars to the micro-dollar, or in two significant digits when smaller
    (``$0.000000`` read as free for a call that cost $0.00000004)."""
    if amount == 0 or abs(amount) >= 0.0000005:
        return f"${amount:.6f}"
    return f"${amount:.2g}"


def json_line(row: Row) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


# ---- options


def _settings() -> Settings:
    """The settings in the environment; a bad one is the root command's one line per problem
    (``app.cli``), never its value (pydantic's own message quotes it: a Redis URL's password
    reached the terminal)."""
    return Settings()


def _master_key() -> str | None:
    key = _settings().master_key
    return None if key is None else key.get_secret_value()


def default_url() -> str:
    """The gateway ``switchboard serve`` would start with this environment
    (``SWITCHBOARD_HOST`` and ``SWITCHBOARD_PORT``; loopback for a host of 0.0.0.0 or ::)."""
    return _settings().local_url()


def shown_url(url: str) -> str:
    """``url`` as a message shows it: a password, and the value of a query parameter named as a
    credential (``?token=``), masked as ``***``, as ``switchboard db`` shows a database URL."""
    from app.db.engine import mask_url  # SQLAlchemy's URL parser, loaded only when needed

    masked = mask_url(url)
    # one it cannot parse is "<unparseable database URL>": not a database's, and not shown
    return masked if "://" in masked else "the URL given"


def gateway_url(_ctx: click.Context | None, _param: click.Parameter | None, value: str) -> str:
    """``--url`` checked: an http:// or https:// URL with a host, and no user or password in it.

    A login in the URL is refused rather than dropped or sent: httpx would send it as Basic
    auth in place of the key's ``Authorization: Bearer`` header (the gateway then saw no key at
    all), and the admin API takes no login, only the key. Raises ``click.BadParameter`` (exit
    2), showing the URL masked (``shown_url``)."""
    try:
        parsed = httpx.URL(value)
    except httpx.InvalidURL as exc:  # a port that is no number, say
        raise click.BadParameter(f"not a URL ({exc}); expected http://HOST:PORT") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise click.BadParameter("not an http:// or https:// URL with a host; expected "
                                 "http://HOST:PORT")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise click.BadParameter(f"port {parsed.port} is out of range (1 to 65535)")
    if parsed.userinfo:
        raise click.BadParameter(
            f"{shown_url(value)} holds a user or password: leave them out of the URL; the "
            "admin API takes no login, only the master key or an admin key (--key, or "
            "$SWITCHBOARD_MASTER_KEY)")
    return value


def _when(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--since``/``--until`` checked here with the admin API's own grammar
    (``app.times.parse_when``), so that a bad one is a usage error (exit 2) before any request,
    the gateway down or not; passed on as written (an age counts from the gateway's now)."""
    if value is not None:
        from app.times import WHEN_FORMS, TooFarBack, parse_when

        try:
            parse_when(value)
        except TooFarBack:
            raise click.BadParameter(f"{_quoted(value)} reaches too far back") from None
        except ValueError:
            raise click.BadParameter(f"{_quoted(value)}: expected {WHEN_FORMS}") from None
    return value


def _quoted(value: str) -> str:
    return repr(value) if len(value) <= 64 else repr(value[:64]) + "..."


def _in_order(since: str | None, until: str | None) -> None:
    """A usage error when ``until`` is earlier than ``since`` (both already ``_when``-checked)."""
    if since is None or until is None:
        return
    from app.times import parse_when

    now = datetime.now(UTC)
    if parse_when(until, now=now) < parse_when(since, now=now):
        raise click.BadParameter("is earlier than --since", param_hint="'--until'")


def _cursor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--cursor`` checked here as the admin API checks it: a usage error before any request."""
    if value is not None:
        from app import errors
        from app.calllog.query import decode_cursor  # SQLAlchemy: only when a cursor is given

        try:
            decode_cursor(value)
        except errors.InvalidRequest:
            raise click.BadParameter("not a cursor: pass back a next_cursor exactly as it was "
                                     "printed") from None
    return value


def _connection_options(command: F) -> F:
    command = click.option(
        "--key", metavar="KEY",
        help="Master key or an admin key (default: $SWITCHBOARD_MASTER_KEY; none needed for a "
             "gateway in "
             "loopback-only mode queried from the same machine).")(command)
    return click.option(
        "--url", default=default_url, callback=gateway_url,
        show_default="where 'switchboard serve' would listen: $SWITCHBOARD_HOST (127.0.0.1 "
                     "for 0.0.0.0) and $SWITCHBOARD_PORT, else http://127.0.0.1:8080",
        help="Base URL of the running gateway, http:// or https://; a user or password in it "
             "is refused (the key goes in --key).")(command)


def _filter_options(command: F) -> F:
    for name, help_text in reversed((
            ("--model", "Only calls for this public model (as clients send it)."),
            ("--provider", "Only calls served by this provider (config name), or last tried on"
                           " it when no target answered."),
            ("--caller", CALLER_HELP),
            ("--key-id", "Only calls made with this virtual key (its id)."),
            ("--team-id", "Only calls made with a key of this team (its id)."),
            ("--request-id", "Only calls the client sent with this x-request-id."),
            ("--config-version", "Only calls served by this version of the config "
                                 "(GET /admin/config)."),
            ("--experiment", "Only calls split by this A/B experiment."),
            ("--variant", "Only calls sent to this variant of it."),
            ("--prompt-id", "Only calls that rendered this prompt template."))):
        if name == "--caller":  # a typo would match nothing, silently
            command = click.option(name, type=click.Choice(CALLERS), help=help_text)(command)
            continue
        metavar = {"--config-version": "VERSION"}.get(
            name, "ID" if name.endswith("-id") else "NAME")
        command = click.option(name, metavar=metavar, help=help_text)(command)
    command = click.option("--prompt-version", type=click.IntRange(min=1), metavar="N",
                           help="Only calls that rendered this version of it.")(command)
    return click.option("--status", type=click.Choice(["ok", "error", "cancelled"]),
                        help="Only calls that ended so.")(command)


CALLERS = ("master", "key", "anonymous", "unauthenticated")
"""The callers a call row names (the Glossary's)."""
CALLER_HELP = ('Only calls from this caller: "master", "key", "anonymous" (loopback-only mode, '
               'no key) or "unauthenticated" (refused at authentication: no key, or one '
               'unknown, revoked or expired).')


def _filters(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _client(url: str, key: str | None) -> AdminClient:
    return AdminClient(url, key=key if key is not None else _master_key())


# ---- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def logs() -> None:
    """Read the call log of a running gateway (through its admin API; needs the master key or
    an admin key)."""


@logs.command("query")
@_connection_options
@click.option("--since", metavar="WHEN", callback=_when,
              help="Calls at or after WHEN: ISO 8601 (2025-01-31T12:00:00Z; naive = UTC) or an "
                   "age such as 30m, 1h, 7d.")
@click.option("--until", metavar="WHEN", callback=_when,
              help="Calls before WHEN (same forms as --since).")
@_filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Calls per page.")
@click.option("--cursor", metavar="CURSOR", callback=_cursor,
              help="Start at this next_cursor of an earlier query.")
@click.option("--all", "follow", is_flag=True,
              help="Follow cursors and print every matching call, not just one page.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def query_command(url: str, key: str | None, since: str | None, until: str | None,
                  limit: int, cursor: str | None, follow: bool, as_json: bool,
                  **filters: Any) -> None:
    """Print calls matching the filters, newest first, as a table (or JSON lines).

    Without --all one page is printed; when more calls match, the cursor of the next page is
    printed on stderr."""
    _in_order(since, until)
    params = _filters(since=since, until=until, **filters, limit=limit, cursor=cursor)
    client = _client(url, key)
    try:
        if follow:
            rows: Iterator[Row] = client.rows(params)
            next_cursor = None
        else:
            page, next_cursor = client.page(params)
            rows = iter(page)
        if not as_json:
            click.echo(header())
        for row in rows:
            click.echo(json_line(row) if as_json else table_row(row))
    finally:
        client.close()
    if next_cursor is not None:
        click.echo(f"more calls match: add --all, or --cursor {next_cursor}", err=True)


class Seen:
    """Ids of calls already printed, with their ``created_at``, to print each call once.

    Ids older than the polling window are forgotten (they cannot come back), and at most ``cap``
    are kept (the oldest-inserted go first), so memory stays bounded whatever the traffic."""

    def __init__(self, *, cap: int = SEEN_CAP) -> None:
        self._ids: dict[str, datetime] = {}
        self._cap = cap
        self.newest: datetime | None = None

    def add(self, call_id: str, created_at: datetime) -> bool:
        """Remember a call; ``True`` when it was not seen before."""
        if call_id in self._ids:
            return False
        self._ids[call_id] = created_at
        if len(self._ids) > self._cap:
            del self._ids[next(iter(self._ids))]
        if self.newest is None or created_at > self.newest:
            self.newest = created_at
        return True

    def forget_before(self, moment: datetime) -> None:
        self._ids = {i: at for i, at in self._ids.items() if at >= moment}

    def __len__(self) -> int:
        return len(self._ids)


def _created(row: Row) -> datetime:
    return datetime.fromisoformat(str(row["created_at"]))


def _poll(client: AdminClient, filters: dict[str, Any], seen: Seen, *,
          lookback: timedelta) -> list[Row]:
    """Calls not seen before, oldest first. Asks for everything since the newest call seen
    minus ``lookback``: a call's row is written when it ends, stamped with its start."""
    params = dict(filters, limit=MAX_PAGE)
    since = None if seen.newest is None else seen.newest - lookback
    if since is not None:
        params["since"] = since.isoformat()
    fresh = [row for row in client.rows(params) if seen.add(str(row["id"]), _created(row))]
    if since is not None:
        seen.forget_before(since)
    fresh.reverse()
    return fresh


def _start(client: AdminClient, filters: dict[str, Any], seen: Seen, *,
           lookback: timedelta, lines: int) -> list[Row]:
    """The ``lines`` most recent calls, oldest first (as ``tail -n``), and any logged since
    they were read; marks them, and the calls already in the window before the newest, as
    seen, so that polling prints only calls logged later."""
    wanted = max(lines, 1)  # the newest, even for -n 0: polling starts from it
    recent = list(islice(client.rows(dict(filters, limit=min(wanted, MAX_PAGE))), wanted))
    if not recent:
        return []
    for row in recent:
        seen.add(str(row["id"]), _created(row))
    oldest_shown = _created(recent[-1]) if lines else seen.newest
    # the window's calls older than those shown stay unprinted; one logged meanwhile is new
    later = [row for row in _poll(client, filters, seen, lookback=lookback)
             if oldest_shown is not None and _created(row) >= oldest_shown]
    recent.reverse()
    return recent[max(0, len(recent) - lines):] + later


@logs.command("tail")
@_connection_options
@_filter_options
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between polls.")
@click.option("--lookback", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds before the newest call seen that each poll looks at again, so that "
                   "calls that ran that long and were logged late still show.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=10, show_default=True,
              help="Recent calls to print first (the N newest, as tail -n).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def tail_command(url: str, key: str | None, interval: float, lookback: float, lines: int,
                 as_json: bool, **filters: Any) -> None:
    """Print calls as they are logged, until Ctrl-C.

    Polls /admin/calls. A call is logged when it ends, stamped with its start time: calls that
    ran longer than --lookback may be missed. A gateway unreachable at the start is an error
    (exit 1: a mistyped --url says so at once); once started, while the gateway is
    unreachable, tail says so on stderr and keeps polling."""
    filters = _filters(**filters)
    client = _client(url, key)
    seen, window = Seen(), timedelta(seconds=lookback)
    emit: Callable[[Row], str] = json_line if as_json else table_row
    try:
        if not as_json:
            click.echo(header())
        for row in _start(client, filters, seen, lookback=window, lines=lines):
            click.echo(emit(row))
        _follow(client, filters, seen, window=window, interval=interval, emit=emit)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how tail ends
    finally:
        client.close()


def _follow(client: AdminClient, filters: dict[str, Any], seen: Seen, *, window: timedelta,
            interval: float, emit: Callable[[Row], str]) -> None:
    down = False
    while True:
        time.sleep(interval)
        try:
            fresh = _poll(client, filters, seen, lookback=window)
        except Unreachable as exc:
            if not down:
                click.echo(f"switchboard: {exc.message} (still trying)", err=True)
            down = True
            continue
        if down:
            click.echo("switchboard: gateway reachable again", err=True)
            down = False
        for row in fresh:
            click.echo(emit(row))


NO_MODEL = "(no model)"
"""``spend --by model``'s name for the calls refused before a model was read (the API's
``null`` group), apart from ``-``, the calls naming a model the gateway does not serve."""
SPEND_COLUMNS: tuple[tuple[str, int], ...] = (
    ("GROUP", -32), ("REQUESTS", 9), ("PROMPT", 11), ("COMPLETION", 11), ("COST", 14),
    ("ERRORS", 7))


@click.command("spend", context_settings={"help_option_names": ["-h", "--help"]})
@_connection_options
@click.option("--by", type=click.Choice(["key", "team", "model"]), required=True,
              help="Group by virtual key id, team id or public model.")
@click.option("--since", metavar="WHEN", callback=_when, help="Calls at or after WHEN: ISO "
              "8601 or an age such as 7d (default: the start of this month, UTC).")
@click.option("--until", metavar="WHEN", callback=_when,
              help="Calls before WHEN (same forms as --since).")
@click.option("--key-id", metavar="ID", help="Only calls made with this virtual key (its id).")
@click.option("--team-id", metavar="ID", help="Only calls made with a key of this team.")
@click.option("--model", metavar="NAME", help="Only calls for this public model.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON array.")
def spend(url: str, key: str | None, by: str, since: str | None, until: str | None,
          key_id: str | None, team_id: str | None, model: str | None, as_json: bool) -> None:
    """Print requests, tokens, cost and errors per key, team or model, costliest first, from
    the call log of a running gateway, of the calls matching every filter given.

    \b
    --by key:   "-" is the calls without a key (the master key, loopback-only
                mode, calls refused at authentication, shadow copies).
    --by team:  "-" is the calls without a team (those, and keys of no team).
    --by model: "-" is the calls naming a model the gateway does not serve
                (its 404 model_not_found); "(no model)" the calls refused
                before a model was read (a body that is no JSON object, a 401,
                a 415...). --json gives them as "-" and null."""
    _in_order(since, until)
    client = _client(url, key)
    try:
        body = client.get("/admin/spend", _filters(by=by, since=since, until=until,
                                                   key_id=key_id, team_id=team_id,
                                                   model=model), keys={"data": list})
    finally:
        client.close()
    rows: list[Row] = body["data"]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    click.echo(_line([name for name, _ in SPEND_COLUMNS], SPEND_COLUMNS))
    # With --by model, "-" is a group of its own (unknown models), so the calls without a
    # model cannot print as "-" too; a key or team id is never "-".
    no_group = NO_MODEL if by == "model" else "-"
    for row in rows:
        click.echo(_line([
            no_group if row["group"] is None else str(row["group"]), str(row["requests"]),
            str(row["prompt_tokens"]), str(row["completion_tokens"]), usd(float(row["cost_usd"])),
            str(row["errors"])], SPEND_COLUMNS))


@click.group("experiments", context_settings={"help_option_names": ["-h", "--help"]})
def experiments() -> None:
    """A/B experiments of a running gateway (through its admin API; needs the master key or an
    admin key)."""


def _experiment_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("an experiment's name is not empty (the config's "
                                 "`experiments:` names them)")
    return value


@experiments.command("report")
@_connection_options
@click.argument("name", callback=_experiment_name)
@click.option("--since", metavar="WHEN", callback=_when, help="Calls at or after WHEN: ISO "
              "8601 or an age such as 7d (default: all).")
@click.option("--control", metavar="VARIANT", help="The variant the others are compared with "
              "(default: the first listed in the config; none for an ended experiment).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def experiment_report(url: str, key: str | None, name: str, since: str | None,
                      control: str | None, as_json: bool) -> None:
    """Per variant: calls, the prompt template versions they rendered, error rate, latency,
    tokens, cost per call, refusal rate, JSON validity and feedback, each mean
    with its 95% confidence sequence, and whether it differs from the control. An experiment
    no longer in the gateway's config (ended) is reported from its calls."""
    client = _client(url, key)
    try:
        # one path segment whatever the name holds (a '/', '?', '..' or control character)
        body = client.get(f"/admin/experiments/{quote(name, safe='')}",
                          _filters(since=since, control=control),
                          keys={"experiment": str, "method": str, "variants": dict,
                                "control": (str, type(None))})
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False))
        return
    ended = "ended: not in the config serving now, its variants are those of its calls; " \
        if body.get("ended") else ""
    chosen = body["control"] if body["control"] is not None else "none, name one with --control"
    click.echo(f"experiment {body['experiment']} ({ended}control: {chosen})")
    click.echo(f"  {body['method']}")
    for variant, data in body["variants"].items():
        differs = data["differs_from_control"] or {}
        refused = data.get("refused_before_provider") or 0
        click.echo(f"{variant}: {data['calls']} calls"
                   + (f" ({refused} refused before any provider, not in the metrics)"
                      if refused else "")
                   + f", p50 {_ms(data['latency_ms']['p50'])}, "
                   f"p95 {_ms(data['latency_ms']['p95'])}, "
                   f"time to first token p50 {_ms(data['ttft_ms']['p50'])}")
        if data.get("prompt_versions"):
            click.echo("  prompt versions    " + ", ".join(
                f"{version} ({n})" for version, n in sorted(data["prompt_versions"].items())))
        # every metric the API compares (its differs_from_control), and the tokens
        for metric in ("error_rate", "latency_ms", "cost_usd", "completion_tokens",
                       "refusal_rate", "json_validity", "feedback_score"):
            m = data[metric]
            ci = "" if m["ci95"] is None else f" [{m['ci95'][0]:.4g}, {m['ci95'][1]:.4g}]"
            verdict = {True: " differs from control", False: " no difference shown",
                       None: ""}[differs.get(metric)]
            mean = "-" if m["mean"] is None else f"{m['mean']:.4g}"
            click.echo(f"  {metric:<18} n={m['n']:<7} mean {mean}{ci}{verdict}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


if __name__ == "__main__":  # pragma: no cover - ``python -m app.calllog.cli``
    logs()
