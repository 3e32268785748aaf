"""The admin CLIs (``logs``, ``spend``, ``experiments report``) find the gateway that
``switchboard serve`` would start with the same environment when ``--url`` is not given, refuse
a ``--url`` that is no gateway URL or holds a login, and never show a credential in it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from app.calllog.cli import experiments, logs, spend
from app.config import parse_config
from app.db.migrate import upgrade
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.servers import free_port, serve


@pytest.mark.parametrize(("host", "port", "url"), [
    ("127.0.0.1", 8080, "http://127.0.0.1:8080"),
    ("0.0.0.0", 18402, "http://127.0.0.1:18402"),
    ("::", 9000, "http://[::1]:9000"),
    ("::1", 9000, "http://[::1]:9000"),
    ("gw.internal", 80, "http://gw.internal:80"),
])
def test_the_local_url_is_where_serve_listens(host: str, port: int, url: str) -> None:
    """The URL of a gateway bound to host:port, loopback for an all-addresses host."""
    assert Settings(host=host, port=port).local_url() == url


def test_admin_commands_default_to_switchboard_host_and_port(tmp_path: Path,
                                                               simulator: str) -> None:
    """Without --url, logs, spend and experiments report ask the gateway at
    SWITCHBOARD_HOST:SWITCHBOARD_PORT (0.0.0.0 meaning this machine), not a fixed port."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    asyncio.run(upgrade(database_url))
    raw = sim_config(simulator)
    raw["experiments"] = {"ab": {"model": "chat", "variants": {
        "a": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "b": {"targets": [{"provider": "sim", "model": "gpt-4o"}]}}}}
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=database_url,
                        spool_dir=tmp_path / "spool")
    app = create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)
    with serve(app) as url:
        env: dict[str, str | None] = {k: None for k in os.environ
                                      if k.startswith("SWITCHBOARD_")}
        env.update(SWITCHBOARD_HOST="0.0.0.0", SWITCHBOARD_PORT=str(urlsplit(url).port),
                   SWITCHBOARD_MASTER_KEY=MASTER_KEY)
        runner = CliRunner()
        for command, args in ((logs, ["query", "--json"]), (spend, ["--by", "model", "--json"]),
                              (experiments, ["report", "ab", "--json"])):
            result = runner.invoke(command, args, env=env)
            assert result.exit_code == 0, result.output
        assert json.loads(result.output)["experiment"] == "ab"


@pytest.mark.parametrize("args", [["logs", "query", "--limit", "1"], ["spend", "--by", "model"],
                                  ["experiments", "report", "ab"]])
def test_a_bad_setting_is_one_line_that_never_quotes_it(args: list[str]) -> None:
    """A malformed SWITCHBOARD_REDIS_URL in the environment these commands read their defaults
    from is the root command's one line and exit 2, without the URL (pydantic's message quoted
    it, password and all)."""
    from app.cli import main

    env = {"SWITCHBOARD_REDIS_URL": "redis://:Secr3t/Pw@redis:6379/0"}
    result = CliRunner().invoke(main, [*args, "--url", "http://127.0.0.1:9"], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("switchboard: invalid SWITCHBOARD_REDIS_URL: ")
    assert "Secr3t" not in result.output


COMMANDS = [["logs", "query"], ["logs", "tail"], ["spend", "--by", "key"],
            ["experiments", "report", "ab"]]
PASSWORD = "S3cretPassw0rd"


@pytest.mark.parametrize("args", COMMANDS, ids=["query", "tail", "spend", "report"])
def test_a_login_in_the_url_is_refused_masked(args: list[str]) -> None:
    """A user and password in --url are a usage error (exit 2) that shows the URL with the
    password as ***: httpx would have sent them as Basic auth in place of the key."""
    from app.cli import main

    url = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, [*args, "--url", url, "--key", "sk-anything"])
    assert result.exit_code == 2, result.output
    assert PASSWORD not in result.output
    assert "http://admin:***@127.0.0.1:" in result.output
    assert "holds a user or password" in result.output


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:notaport", "not a URL (Invalid port: 'notaport')"),
    ("127.0.0.1:8080", "not an http:// or https:// URL with a host"),
    ("ftp://127.0.0.1:8080", "not an http:// or https:// URL with a host"),
], ids=["port", "no-scheme", "ftp"])
def test_a_url_that_is_no_gateway_url_is_a_usage_error(url: str, says: str) -> None:
    """--url must be http:// or https:// with a host: otherwise exit 2 saying so (a port that
    is no number was a traceback)."""
    from app.cli import main

    result = CliRunner().invoke(main, ["spend", "--by", "key", "--url", url])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unreachable_gateway_is_named_with_its_credentials_masked() -> None:
    """The connection error names the URL with a credential in its query masked, as
    ``switchboard db`` shows a database URL."""
    from app.cli import main

    url = f"http://127.0.0.1:{free_port()}/?token={PASSWORD}"
    result = CliRunner().invoke(main, ["spend", "--by", "key", "--url", url])
    assert result.exit_code == 1, result.output
    assert "cannot connect to http://127.0.0.1:" in result.output
    assert "?token=***" in result.output and PASSWORD not in result.output
