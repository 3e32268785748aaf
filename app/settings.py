"""Process settings from the environment (prefix ``SWITCHBOARD_``).

The only module that reads the environment."""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.sentinel_url import SentinelUrl, is_sentinel


class UnsafeSettings(ValueError):
    """The settings would expose the gateway unsafely; the message says how to fix it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore", frozen=True,
                                      populate_by_name=True, env_ignore_empty=True)
    """A variable set to the empty string counts as unset (``VAR=`` in an env file or a compose
    file: the default applies, rather than an empty database URL, or the working directory as
    the spool)."""

    config: Path | None = None
    """YAML config path; unset: the embedded default (mock models plus keyed providers)."""
    config_poll_s: float = Field(default=1.0, ge=0)
    """Seconds between checks of the config file (and the files it references) for changes,
    which are then loaded live (``app.reload``); 0: only on a signal or ``POST
    /admin/config/reload``."""
    database_url: str = "sqlite+aiosqlite:///switchboard.db"
    """The call log's database: Postgres in production, a SQLite file by default."""
    redis_url: str | None = None
    """Redis for the call-log spool, live tail and counters; unset: local file spool only.
    Checked at start-up (``redis_url_problem``); reached only once serving."""
    call_log: bool = True
    """Record every call (database, Redis, spool). Off only for benchmarks and debugging: then
    records go to the ``switchboard.calls`` debug log and nowhere else."""
    metrics: bool = True
    """Prometheus metrics and drift signals. Off only for benchmarks (the cost of metrics is
    measured against it): then ``/metrics`` answers 404."""
    spool_dir: Path = Path("switchboard-spool")
    """Where call records wait when neither the database nor Redis can take them."""
    master_key: SecretStr | None = None
    metrics_key: SecretStr | None = None
    """A key that may read ``GET /metrics`` and nothing else (give it to Prometheus). Unset:
    ``/metrics`` takes the master key; with no key at all it is open (loopback-only mode)."""
    metrics_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    """Where worker processes keep their metric values (prometheus-client's multiprocess mode).
    ``switchboard serve --workers N`` sets it; it must be set before any worker starts."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1)] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Any case (``INFO`` as ``info``)."""
    docs: bool = False
    """Serve the API reference (``/docs``, ``/redoc``, ``/openapi.json``) to anyone who can reach
    the port. Off: those paths answer 404. ``/docs`` and ``/redoc`` load their scripts from a
    public CDN."""
    max_concurrency: Annotated[int, Field(ge=1)] = 1024
    """Requests one worker process serves at once (streams count until they end); past it a
    request is answered 503 with ``Retry-After`` at once. ``/healthz``, ``/readyz`` and
    ``/metrics`` are never refused."""
    max_connections: Annotated[int, Field(ge=1)] = 4096
    """Open connections per worker (the requesting one included) at which uvicorn answers every
    request with its own plain-text 503 and closes the connection (uvicorn's
    ``limit_concurrency``); a backstop above ``max_concurrency``."""
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A connection that has not sent a request's complete headers this long after it opened
    (or after the request's first byte) is closed. Checked once a second."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    """The most bytes a request's request line and header lines may take; past it (or past 100
    header fields) the request is answered 431 and the connection closed."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """A model call whose body has not fully arrived this long after the gateway started
    reading it is answered 408 (and recorded). Checked once a second."""
    keep_alive_s: Annotated[int, Field(ge=1)] = 75
    """An idle keep-alive connection is closed after this many seconds. Keep it above the idle
    timeout of any load balancer or proxy in front (60 s for AWS's ALB, ingress-nginx and
    nginx's upstream ``keepalive_timeout``; 600 s for Google Cloud's balancers): when the
    gateway closes an idle connection first, a request the balancer sends on it at that moment
    fails, and a balancer does not retry a POST, so the client gets a 502 (uvicorn's own 5 s
    default does this)."""
    shutdown_drain_s: Annotated[float, Field(ge=0)] = 0.0
    """On SIGTERM, ``/readyz`` answers 503 at once and the server keeps accepting connections
    this many seconds (so a load balancer polling readiness takes the replica out), then stops
    accepting and waits for in-flight requests and streams (``shutdown_grace_s``). 0: stop
    accepting at once (a Kubernetes ``preStop`` sleep can play this part instead)."""
    shutdown_grace_s: Annotated[int, Field(ge=1)] = 30
    """How long in-flight requests and streams may take to finish after the server stopped
    accepting; past it they are cancelled. Keep the orchestrator's grace period above
    ``shutdown_drain_s + shutdown_grace_s`` plus the call log's flush."""

    def local_url(self) -> str:
        """Where a client on this machine reaches the gateway ``switchboard serve`` would bind
        with these settings: ``host`` and ``port``, the loopback address for a host that binds
        every address (``0.0.0.0``, ``::`` or empty)."""
        host = self.host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "::1" if host == "::" else "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _usable_redis_url(cls, value: str | None) -> str | None:
        problem = None if value is None else redis_url_problem(value)
        if problem is not None:  # a custom error: its message alone, no "Value error, "
            raise PydanticCustomError("redis_url", problem)
        return value

    def check_exposure(self) -> None:
        """Refuse to serve without a master key on anything but a loopback address, with a
        weak or placeholder key (``weak_secret``), or with a placeholder database password."""
        if self.master_key is None and not is_loopback(self.host):
            raise UnsafeSettings(
                f"refusing to serve on {self.host} without SWITCHBOARD_MASTER_KEY: anyone who "
                "can reach the port could spend your provider credit. Set a master key, or bind "
                "to 127.0.0.1."
            )
        for name, key in (("MASTER_KEY", self.master_key), ("METRICS_KEY", self.metrics_key)):
            if key is None:
                continue
            problem = weak_secret(key.get_secret_value())
            if problem is not None:
                raise UnsafeSettings(f"SWITCHBOARD_{name} {problem}. {_GENERATE}")
        if self.metrics_key is not None and self.master_key is not None and hmac.compare_digest(
                self.metrics_key.get_secret_value(), self.master_key.get_secret_value()):
            raise UnsafeSettings(
                "SWITCHBOARD_METRICS_KEY is the master key: whoever reads /metrics with it (a "
                "Prometheus config, a scrape log) could use the admin API and spend your "
                f"provider credit. Give the metrics key a value of its own. {_GENERATE}")
        if any(is_placeholder(p) for p in _url_passwords(self.database_url)):
            raise UnsafeSettings(
                "the password in SWITCHBOARD_DATABASE_URL is a placeholder (from .env.example: "
                "anyone can read it). Set POSTGRES_PASSWORD in .env to a value of your own, e.g. "
                "the output of: python3 -c 'import secrets; print(secrets.token_hex(24))'")


MIN_KEY_CHARS = 16
MIN_DISTINCT_CHARS = 6
_GENERATE = ("Generate one with: python3 -c 'import secrets; print(\"sk-\" + "
             "secrets.token_urlsafe(32))' and set it in the environment (.env for docker compose)")
# Words that mark a value someone was meant to replace, or one everybody tries first. Searched
# for in the key lower-cased and stripped of everything but letters, digits and the look-alike
# signs, each letter of a word also matching its look-alikes (p@ssw0rd, examp1e, 1etme1n: a 1
# reads as an i or an l).
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "placeholder", "yourkey", "yoursecret",
                      "example", "password", "letmein", "qwerty")
_LOOK_ALIKES = {"a": "@4", "e": "3", "i": "1!|", "l": "1|", "o": "0", "s": "$5"}
_SIGNS = frozenset("".join(_LOOK_ALIKES.values()))
_PLACEHOLDER = re.compile("|".join(
    "".join(f"[{re.escape(c + _LOOK_ALIKES.get(c, ''))}]" for c in word)
    for word in _PLACEHOLDER_WORDS))


def _plain(value: str) -> str:
    return "".join(c for c in value.lower() if c.isalnum())


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a placeholder (every secret in .env.example starts ``change-me``)
    or a well-known default such as ``password``, look-alike spellings included."""
    kept = "".join(c for c in value.lower() if c.isalnum() or c in _SIGNS)
    # Both with the signs and without them (``pass!word`` is password with a sign put in).
    return any(_PLACEHOLDER.search(text) for text in (kept, _plain(value)))


def _mostly_sequence(plain: str) -> bool:
    """Whether most neighbouring characters step by one (``abcdef``, ``987654``, ``12345``)."""
    steps = sum(1 for a, b in itertools.pairwise(plain) if abs(ord(a) - ord(b)) <= 1)
    return steps >= 0.6 * (len(plain) - 1)


def weak_secret(value: str) -> str | None:
    """Why ``value`` is unfit for a gateway key (the key itself never named), or ``None``."""
    if len(value) < MIN_KEY_CHARS:
        return f"must be at least {MIN_KEY_CHARS} characters"
    if is_placeholder(value):
        return "is a placeholder or a well-known value (anyone can guess it)"
    plain = _plain(value)
    if len(set(value)) < MIN_DISTINCT_CHARS or _mostly_sequence(plain):
        return (f"is too easy to guess (fewer than {MIN_DISTINCT_CHARS} distinct characters, "
                "or mostly runs such as aaaa, abcd or 4321)")
    return None


def _url_passwords(url: str) -> list[str]:
    """The passwords in a database URL: ``scheme://user:password@host/...`` and
    ``?password=...`` (asyncpg takes either)."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = urllib.parse.parse_qs(parts.query).get("password", [])
    return found if password is None else [urllib.parse.unquote(password), *found]


_REDIS_FORMS = ("redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to.sock "
                "or redis+sentinel://host[:port][,host...]/master[/db]")


_REDIS_PY_QUERY = {
    "socket_timeout": "a positive number of seconds",
    "socket_connect_timeout": "a positive number of seconds",
    "health_check_interval": "a whole number of seconds",
    "max_connections": "a positive whole number",
    "socket_keepalive": "true or false",
    "retry_on_timeout": "true or false",
}
"""The query parameters of a plain Redis URL that tune redis-py's clients only (the limiter's
own client has its own timeouts and one connection), and what each must be."""
_TLS_QUERY = ("ssl_cert_reqs", "ssl_ca_certs")
_BOOLEANS = ("true", "false", "yes", "no", "1", "0")


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL the gateway's clients can use (``app.resources``), or
    ``None``. The message never quotes the URL's parts, but for a query parameter's name and
    the CA file's path: a password holding an unescaped ``@``, ``:`` or ``/`` lands in any of
    them (one holding a ``?`` or ``#`` is refused before the query is read)."""
    if is_sentinel(url):
        try:
            sentinel = SentinelUrl.parse(url)  # its messages name the part, never the password
        except ValueError as exc:
            return str(exc)
        return _ca_file_problem(sentinel.ssl_ca_certs)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"not a Redis URL: use {_REDIS_FORMS}"
    if "@" in parts.query or parts.fragment:
        return "a '?' or '#' in the password must be written %3F or %23"
    query = urllib.parse.parse_qs(parts.query)
    problem = _redis_query_problem(query, tls=parts.scheme == "rediss")
    if problem is not None:
        return problem
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// Redis URL needs the socket's path"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return ("its port is not a number from 1 to 65535 (an '@', ':' or '/' in the password "
                "must be written %40, %3A or %2F)")
    db = query["db"][-1] if "db" in query else parts.path.lstrip("/")
    if db and not db.isdigit():
        return "its database (the path: /0, /1...) is not a number"
    return None


def _redis_query_problem(query: dict[str, list[str]], *, tls: bool) -> str | None:
    """What is wrong with a plain Redis URL's query (each name parsed, ``parse_qs``): a
    parameter neither client takes (redis-py fails on it with a ``TypeError`` once serving),
    one given twice (the two clients would read different ones), or a bad value."""
    known = {"db", *_REDIS_PY_QUERY, *(_TLS_QUERY if tls else ())}
    unknown = sorted(set(query) - known)
    if unknown:
        tls_only = [name for name in unknown if name in _TLS_QUERY]
        if tls_only:
            return f"only rediss:// URLs (TLS) take {', '.join(tls_only)}"
        return (f"unknown Redis URL parameter(s): {', '.join(unknown)} (known: db, "
                f"ssl_cert_reqs, ssl_ca_certs, {', '.join(_REDIS_PY_QUERY)})")
    twice = sorted(name for name, values in query.items() if len(values) > 1)
    if twice:
        return f"Redis URL parameter(s) given more than once: {', '.join(twice)}"
    value = {name: values[0] for name, values in query.items()}
    if value.get("db", "0").isdigit() is False:
        return "its database (?db=) is not a number"
    for name, must in _REDIS_PY_QUERY.items():
        if name in value and not _fits(value[name], must):
            return f"{name} must be {must}"
    if value.get("ssl_cert_reqs", "required") not in ("none", "optional", "required"):
        return "ssl_cert_reqs must be none, optional or required"
    return _ca_file_problem(value.get("ssl_ca_certs"))


def _fits(text: str, must: str) -> bool:
    """Whether a redis-py parameter's value is what ``_REDIS_PY_QUERY`` says it must be."""
    if must == "true or false":
        return text.lower() in _BOOLEANS
    if must == "a whole number of seconds":
        return text.isdigit()
    if must == "a positive whole number":
        return text.isdigit() and int(text) > 0
    try:
        seconds = float(text)
    except ValueError:
        return False
    return math.isfinite(seconds) and seconds > 0


def _ca_file_problem(path: str | None) -> str | None:
    """Why ``ssl_ca_certs`` (a plain or Sentinel URL's) is not a CA file both clients can load
    (a file missing or unreadable, or holding no PEM certificate), or ``None``."""
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        return f"ssl_ca_certs {path}: holds no PEM certificate"
    except OSError as exc:
        return f"ssl_ca_certs {path}: {exc.strerror or 'cannot be read'}"
    return None


def environment() -> Mapping[str, str]:
    """The process environment, for ``${ENV}`` references in the config and provider keys."""
    return os.environ
