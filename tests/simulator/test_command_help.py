"""``switchboard simulate --help`` lists every route and per-request header the simulator
serves, as it says it does (the Entra ID and managed-identity token paths, and ten headers,
were served and not listed)."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from app.simulator import app as simulator_app
from app.simulator import azure_entra
from app.simulator.command import simulate

SOURCES = Path(simulator_app.__file__).parent


def help_text() -> str:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0, result.output
    return result.output


def served_headers() -> set[str]:
    """Every ``X-Sim-*`` header (and ``X-Return-Error``) a simulator module reads."""
    names: set[str] = set()
    for source in SOURCES.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        names |= {m.lower() for m in re.findall(r"[\"'](x-sim-[a-z0-9-]+|x-return-error)",
                                                text, re.I)}
    return names


def test_every_header_read_is_listed() -> None:
    """Each header the simulator reads is named in --help (ten were missing)."""
    listed = help_text().lower()
    headers = served_headers()
    assert {"x-sim-garbage", "x-sim-usage-count", "x-sim-azure-filter"} <= headers
    assert sorted(h for h in headers if h not in listed) == []


def test_every_route_is_listed() -> None:
    """Each exact route, and Entra ID's and App Service's token paths, is in --help."""
    text = " ".join(help_text().split())
    paths = {path for _, path in simulator_app._ROUTES}
    assert sorted(p for p in paths if p not in text) == []
    assert f"POST /{{tenant}}{azure_entra.TOKEN_SUFFIX}" in text
    assert f"GET {azure_entra.MSI_PATH}" in text
