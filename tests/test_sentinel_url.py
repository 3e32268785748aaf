"""``app.sentinel_url``: the Sentinel URL format, parsed in one place."""

from __future__ import annotations

import re

import pytest

from app.limits.resp import Address
from app.sentinel_url import SentinelUrl, is_sentinel


def test_hosts_master_db_and_login() -> None:
    """Several sentinels (default port 26379), the master's name, the db and the login."""
    url = SentinelUrl.parse("redis+sentinel://bob:s%40cret@a:26380,b,[::1]:7/mymaster/3")
    assert url.sentinels == (("a", 26380), ("b", 26379), ("::1", 7))
    assert (url.master, url.db, url.username, url.password, url.tls) == (
        "mymaster", 3, "bob", "s@cret", False)


def test_password_alone_and_no_db() -> None:
    """``:pw@`` and ``pw@`` are a password without a user; no db is 0."""
    assert SentinelUrl.parse("redis+sentinel://:pw@h/m").password == "pw"
    url = SentinelUrl.parse("redis+sentinel://pw@h/m")
    assert (url.username, url.password, url.db) == (None, "pw", 0)


def test_tls_and_sentinel_login() -> None:
    """``rediss+sentinel`` is TLS to the data nodes; the sentinels' login is in the query."""
    url = SentinelUrl.parse("rediss+sentinel://h/m?ssl_cert_reqs=none"
                            "&sentinel_username=s&sentinel_password=sp")
    assert (url.tls, url.ssl_cert_reqs, url.sentinel_username, url.sentinel_password) == (
        True, "none", "s", "sp")


def test_node_url_round_trips_through_resp_address() -> None:
    """The data node's URL carries the login, db and TLS to the limiter's client."""
    url = SentinelUrl.parse("rediss+sentinel://u:p%2Fw@h/m/2?ssl_cert_reqs=none")
    address = Address.parse(url.node_url("10.0.0.5", 6380))
    assert (address.host, address.port, address.username, address.password, address.db) == (
        "10.0.0.5", 6380, "u", "p/w", 2)
    assert address.tls is not None


@pytest.mark.parametrize(("url", "message"), [
    ("redis://h/m", "scheme 'redis'"),
    ("redis+sentinel:///m", "at least one sentinel"),
    ("redis+sentinel://h", "/<master-name>[/<db>]"),
    ("redis+sentinel://h/m/x", "database is not a number"),
    ("redis+sentinel://h:port/m", "port is not a number"),
    ("redis+sentinel://h:70000/m", "out of range"),
    ("redis+sentinel://h/m?pool=1", "unknown Redis Sentinel URL parameter(s): pool"),
    ("rediss+sentinel://h/m?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
])
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    """A wrong URL is refused with what is wrong."""
    with pytest.raises(ValueError, match=re.escape(message)):
        SentinelUrl.parse(url)


def test_errors_never_show_the_password() -> None:
    """The password is not in the error of a URL refused for another part."""
    with pytest.raises(ValueError) as caught:
        SentinelUrl.parse("redis+sentinel://u:hunter2@h:bad/m")
    assert "hunter2" not in str(caught.value)


def test_is_sentinel() -> None:
    """Only the two Sentinel schemes are Sentinel URLs."""
    assert is_sentinel("redis+sentinel://h/m") and is_sentinel("rediss+sentinel://h/m")
    assert not is_sentinel("redis://h:6379/0")
