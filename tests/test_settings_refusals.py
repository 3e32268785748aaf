"""Settings ``serve`` refuses at start with one line and status 2: an unusable
``SWITCHBOARD_REDIS_URL`` (``app.settings.redis_url_problem``) and a
``PROMETHEUS_MULTIPROC_DIR`` that is a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import certifi
import pytest

from app.settings import redis_url_problem
from tests.servers import free_port

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``switchboard serve`` with no SWITCHBOARD_ settings but ``env``; it should not start."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SWITCHBOARD_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.run([SWITCHBOARD, "serve", "--port", str(free_port())], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("url", "says"), [
    ("foo://x", "not a Redis URL: use redis://"),
    ("redis://h:99999/0", "its port is not a number from 1 to 65535"),
    ("redis://u:Pa/Ss@h:6379/0", "its port is not a number from 1 to 65535"),
    ("redis://h:6379/abc", "its database (the path: /0, /1...) is not a number"),
    ("redis+sentinel://h/", "a Redis Sentinel URL's path is /<master-name>[/<db>]"),
    ("redis://:Pa-Ss@h:6379/0?foo=bar", "unknown Redis URL parameter(s): foo"),
    ("rediss://:Pa-Ss@h:6380/0?ssl_ca_certs=/nonexistent/ca.pem",
     "ssl_ca_certs /nonexistent/ca.pem: No such file or directory"),
    ("rediss+sentinel://:Pa-Ss@h/m?ssl_ca_certs=/nonexistent/ca.pem",
     "ssl_ca_certs /nonexistent/ca.pem: No such file or directory"),
])
def test_an_unusable_redis_url_is_one_line_and_exit_2(tmp_path: Path, url: str,
                                                      says: str) -> None:
    """``serve`` with a Redis URL its clients cannot use exits 2 with one line saying why,
    before anything starts, and never quotes the password."""
    result = serve(tmp_path, SWITCHBOARD_REDIS_URL=url)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"switchboard: invalid SWITCHBOARD_REDIS_URL: "
                                                   f"{says}")
    assert "Pa" not in result.stderr and "Ss" not in result.stderr


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/13", "rediss://:pw@cache.example:6380/0?ssl_cert_reqs=none",
    "redis://h", "redis:///0", "redis://:pw@h:6379?db=2", "unix:///run/redis.sock?db=1",
    "redis+sentinel://s1:26379,s2/mymaster/1",
    "rediss://:pw@h:6380/0?ssl_cert_reqs=optional&socket_timeout=2.5&socket_connect_timeout=1"
    "&max_connections=20&health_check_interval=0&socket_keepalive=true&retry_on_timeout=no",
    "redis://u:p%3Fw@h:6379/0?db=3",
])
def test_usable_redis_urls_pass(url: str) -> None:
    """Every form the gateway's Redis clients take passes."""
    assert redis_url_problem(url) is None


@pytest.mark.parametrize(("query", "says"), [
    ("foo=bar", "unknown Redis URL parameter(s): foo"),
    ("ssl_ca_cert=/ca.pem", "unknown Redis URL parameter(s): ssl_ca_cert"),
    ("socket_timeout=abc", "socket_timeout must be a positive number of seconds"),
    ("socket_connect_timeout=0", "socket_connect_timeout must be a positive number of seconds"),
    ("max_connections=0", "max_connections must be a positive whole number"),
    ("health_check_interval=1.5", "health_check_interval must be a whole number of seconds"),
    ("socket_keepalive=maybe", "socket_keepalive must be true or false"),
    ("ssl_cert_reqs=bogus", "ssl_cert_reqs must be none, optional or required"),
    ("ssl_cert_reqs=NONE", "ssl_cert_reqs must be none, optional or required"),
    ("db=1&db=2", "Redis URL parameter(s) given more than once: db"),
    ("db=x", "its database (?db=) is not a number"),
])
def test_a_plain_redis_urls_query_is_checked(query: str, says: str) -> None:
    """A ``rediss://`` URL's query takes its database, its TLS settings and redis-py's socket
    and pool settings, each with a value its client reads (they reached redis-py's
    ``from_url`` once serving, and crashed it with a traceback); the message names the
    parameter, never the password."""
    problem = redis_url_problem(f"rediss://:Pa-Ss@h:6380/0?{query}")
    assert problem is not None and problem.startswith(says), problem
    assert "Pa-Ss" not in problem


def test_tls_parameters_are_only_for_rediss() -> None:
    """``ssl_cert_reqs`` on ``redis://`` or ``unix://`` (no TLS): redis-py's plain connection
    takes no such argument."""
    for url in ("redis://h/0?ssl_cert_reqs=none", "unix:///run/redis.sock?ssl_ca_certs=/x"):
        assert (redis_url_problem(url) or "").startswith("only rediss:// URLs (TLS) take ssl_")


def test_a_password_with_an_unescaped_question_mark_is_not_read_as_a_query() -> None:
    """``redis://:a?b=c@h``: the query would be the password's tail, and the message would
    name it."""
    problem = redis_url_problem("redis://:se?cret=x@h:6379/0")
    assert problem == "a '?' or '#' in the password must be written %3F or %23"


def test_the_ca_file_must_be_a_readable_pem_file(tmp_path: Path) -> None:
    """``ssl_ca_certs`` names a file both clients load at once (a missing one failed
    redis-py's connections with a network-like 'No such file or directory', or crashed the
    limiter's client without naming the file), for the plain and the Sentinel forms alike."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for form in ("rediss://:Pa-Ss@h:6380/0", "rediss+sentinel://:Pa-Ss@h/m"):
        assert redis_url_problem(f"{form}?ssl_ca_certs={garbage}") == (
            f"ssl_ca_certs {garbage}: holds no PEM certificate")
        assert redis_url_problem(f"{form}?ssl_ca_certs={tmp_path}") == (
            f"ssl_ca_certs {tmp_path}: Is a directory")
        assert redis_url_problem(f"{form}?ssl_ca_certs={certifi.where()}") is None


def test_a_metrics_dir_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` naming a file: one line saying so, status 2."""
    taken = tmp_path / "metrics"
    taken.write_text("")
    result = serve(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(taken),
                   SWITCHBOARD_CALL_LOG="false")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"switchboard: PROMETHEUS_MULTIPROC_DIR {taken}: File exists")
    assert "Traceback" not in result.stderr
