"""Redis Sentinel URLs, parsed in one place for both Redis clients (``app.resources``).

Format::

    redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/<master-name>[/<db>]
    rediss+sentinel://...   (TLS to the data nodes, the master; the sentinels are asked in clear)

Ports default to 26379. The user and password are the data nodes' (``AUTH`` on the master);
the sentinels get ``?sentinel_username=...&sentinel_password=...`` when they need a login
(none by default). For ``rediss+sentinel`` the query may set ``ssl_cert_reqs`` and
``ssl_ca_certs`` as on ``rediss://`` (``app.limits.resp``); ``redis+sentinel`` refuses them.
Other query parameters, and a parameter given twice, are refused.
Errors name the part that is wrong, never the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379
_QUERY = ("sentinel_username", "sentinel_password", "ssl_cert_reqs", "ssl_ca_certs")
_URL = re.compile(r"^(?P<scheme>[a-z+]+)://(?:(?P<auth>[^@/]*)@)?(?P<hosts>[^/?#]*)"
                  r"(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?$")


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names a Sentinel-managed Redis (``redis+sentinel://``/``rediss+...``)."""
    return url.split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed Sentinel URL (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """``ValueError`` naming what is wrong (never the password) when ``url`` is not one."""
        match = _URL.match(url.strip())
        scheme = match["scheme"].lower() if match else url.split("://", 1)[0]
        if match is None or scheme not in SCHEMES:
            raise ValueError(f"not a Redis Sentinel URL: scheme {scheme!r}")
        sentinels = tuple(_host_port(part) for part in match["hosts"].split(",") if part)
        if not sentinels:
            raise ValueError("a Redis Sentinel URL needs at least one sentinel host")
        path = [unquote(p) for p in (match["path"] or "").split("/") if p]
        if not path or len(path) > 2:
            raise ValueError("a Redis Sentinel URL's path is /<master-name>[/<db>]")
        db = 0
        if len(path) == 2:
            if not path[1].isdigit():
                raise ValueError(f"the Redis Sentinel URL's database is not a number: {path[1]!r}")
            db = int(path[1])
        username = password = None
        if match["auth"] is not None:
            user, sep, secret = match["auth"].partition(":")
            username = unquote(user) or None
            password = unquote(secret) if sep else None
            if not sep:  # "redis://secret@host" is the password alone, as redis-py reads it
                username, password = None, unquote(user) or None
        tls = scheme == "rediss+sentinel"
        values = parse_qs(match["query"] or "")
        unknown = sorted(set(values) - set(_QUERY))
        if unknown:
            raise ValueError(f"unknown Redis Sentinel URL parameter(s): {', '.join(unknown)}")
        # ``ssl_*`` on the clear-text scheme most likely means a forgotten "s": refused, as the
        # plain form refuses it, since honouring the URL would send the password in clear.
        tls_only = sorted(name for name in values if name.startswith("ssl_"))
        if tls_only and not tls:
            raise ValueError(f"only rediss+sentinel:// URLs (TLS) take {', '.join(tls_only)}")
        # A repeated parameter is ambiguous (which one wins depends on the reader): refused.
        twice = sorted(name for name, given in values.items() if len(given) > 1)
        if twice:
            raise ValueError(
                f"Redis Sentinel URL parameter(s) given more than once: {', '.join(twice)}")
        query = {name: given[0] for name, given in values.items()}
        reqs = query.get("ssl_cert_reqs", "required").lower()
        if reqs not in ("none", "optional", "required"):
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {reqs!r}")
        return cls(sentinels=sentinels, master=path[0], db=db, username=username,
                   password=password, tls=tls, ssl_cert_reqs=reqs,
                   ssl_ca_certs=query.get("ssl_ca_certs"),
                   sentinel_username=query.get("sentinel_username"),
                   sentinel_password=query.get("sentinel_password"))

    def node_url(self, host: str, port: int) -> str:
        """The plain ``redis://``/``rediss://`` URL of one data node (the master found), with
        this URL's login, database and TLS options: what ``app.limits.resp`` parses."""
        auth = ""
        if self.password is not None:
            auth = f"{_q(self.username or '')}:{_q(self.password)}@"
        elif self.username is not None:
            auth = f"{_q(self.username)}@"
        host_text = f"[{host}]" if ":" in host else host
        url = f"{'rediss' if self.tls else 'redis'}://{auth}{host_text}:{port}/{self.db}"
        if self.tls:
            url += f"?ssl_cert_reqs={self.ssl_cert_reqs}"
            if self.ssl_ca_certs:
                url += f"&ssl_ca_certs={_q(self.ssl_ca_certs)}"
        return url


def _q(text: str) -> str:
    return quote(text, safe="")


def _host_port(text: str) -> tuple[str, int]:
    host, port_text = text, ""
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not host:
        raise ValueError(f"a sentinel address lacks its host: {text!r}")
    if port_text and not port_text.isdigit():
        raise ValueError(f"a sentinel's port is not a number: {text!r}")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError(f"a sentinel's port is out of range: {text!r}")
    return host, port
