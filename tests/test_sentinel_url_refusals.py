"""Sentinel URLs refuse what the plain form refuses: ``ssl_*`` without TLS, a repeated parameter."""

from __future__ import annotations

import re

import certifi
import pytest

from app.sentinel_url import SentinelUrl
from app.settings import redis_url_problem

CA = certifi.where()  # a readable PEM file wherever the tests run


@pytest.mark.parametrize("query", ["ssl_cert_reqs=required", f"ssl_ca_certs={CA}",
                                   f"ssl_cert_reqs=none&ssl_ca_certs={CA}"])
def test_ssl_options_without_tls_are_refused(query: str) -> None:
    """``redis+sentinel`` with ``ssl_*`` (a forgotten "s") is refused at start-up, naming them."""
    url = f"redis+sentinel://:hunter2@h1/mymaster?{query}"
    problem = redis_url_problem(url)
    assert problem is not None and problem.startswith("only rediss+sentinel:// URLs (TLS) take ")
    assert all(name.split("=")[0] in problem for name in query.split("&"))
    assert "hunter2" not in problem


@pytest.mark.parametrize("name", ["sentinel_password", "sentinel_username", "ssl_cert_reqs"])
def test_parameter_given_twice_is_refused(name: str) -> None:
    """A parameter given twice is refused, naming it, rather than the last one winning."""
    url = f"rediss+sentinel://:hunter2@h1/m?{name}=none&{name}=required"
    with pytest.raises(ValueError, match=re.escape(f"given more than once: {name}")):
        SentinelUrl.parse(url)
    assert redis_url_problem(url) == f"Redis Sentinel URL parameter(s) given more than once: {name}"


def test_ssl_options_with_tls_still_accepted() -> None:
    """``rediss+sentinel`` keeps its ``ssl_*`` options, each given once."""
    url = f"rediss+sentinel://:pw@h1/m?ssl_cert_reqs=optional&ssl_ca_certs={CA}"
    assert redis_url_problem(url) is None
    parsed = SentinelUrl.parse(url)
    assert (parsed.tls, parsed.ssl_cert_reqs, parsed.ssl_ca_certs) == (True, "optional", CA)
