"""Settings ``serve`` refuses at start with one line and status 2: an unusable
``SWITCHBOARD_REDIS_URL`` (``app.settings.redis_url_problem``) and a
``PROMETHEUS_MULTIPROC_DIR`` that is a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
])
def test_usable_redis_urls_pass(url: str) -> None:
    """Every form the gateway's Redis clients take passes."""
    assert redis_url_problem(url) is None


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
