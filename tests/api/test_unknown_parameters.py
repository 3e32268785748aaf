"""Every admin route refuses a query parameter it does not take (400 ``unknown_parameter``
naming it) instead of answering as if it had not been sent, on a whole gateway (call log, keys,
prompts) over SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.main import create_app
from tests.api.conftest import MASTER_KEY, settings_in, sim_config
from tests.servers import serve


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, simulator: str) -> Iterator[str]:
    """A whole gateway (call log, key directory, prompt library on SQLite); its base URL."""
    directory: Path = tmp_path_factory.mktemp("unknown-parameters")
    app = create_app(settings_in(directory), config=parse_config(sim_config(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url:
        yield url


def get(url: str, path: str, params: dict[str, Any], *,
        key: str | None = MASTER_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(url + path, params=params, headers=headers, timeout=10)


@pytest.mark.parametrize(("path", "params", "unknown"), [
    ("/admin/calls", {"teamid": "team_1"}, "teamid"),
    ("/admin/calls", {"model": "chat", "limt": "5"}, "limt"),
    ("/admin/spend", {"by": "model", "team": "team_1"}, "team"),
    ("/admin/calls/call_x", {"verbose": "1"}, "verbose"),
    ("/admin/calls/call_x/feedback", {"since": "1h"}, "since"),
    ("/admin/calllog", {"reset": "1"}, "reset"),
    ("/admin/config", {"version": "x"}, "version"),
    ("/admin/routing", {"model": "chat"}, "model"),
    ("/admin/keys", {"team": "t"}, "team"),
    ("/admin/keys/key_x", {"x": ""}, "x"),
    ("/admin/teams", {"name": "search"}, "name"),
    ("/admin/prompts", {"label": "prod"}, "label"),
    ("/admin/prompts/summarise/diff", {"from": "1", "to": "2", "format": "u"}, "format"),
])
def test_an_unknown_query_parameter_is_400(gateway: str, path: str, params: dict[str, Any],
                                           unknown: str) -> None:
    """An admin GET sent a parameter it does not take answers 400 unknown_parameter naming it,
    in OpenAI's error shape."""
    response = get(gateway, path, params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unknown_parameter" and error["param"] == unknown
    assert repr(unknown) in error["message"]


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/admin/calls", {"team_id": "team_1", "limit": "5"}, 200),
    ("/admin/spend", {"by": "model", "team_id": "team_1", "model": "chat",
                      "key_id": "key_1"}, 200),
    ("/admin/keys", {"team_id": "t", "limit": "2"}, 200),
    ("/admin/prompts/summarise/diff", {"from": "1", "to": "2"}, 404),  # no such template
])
def test_the_parameters_a_route_takes_pass(gateway: str, path: str, params: dict[str, Any],
                                           status: int) -> None:
    """Declared parameters, aliases (``from``/``to``) included, are not refused."""
    response = get(gateway, path, params)
    assert response.status_code == status, response.text


def test_authentication_comes_before_the_parameter_check(gateway: str) -> None:
    """Without a key the answer is the 401, whatever the parameters: the route's parameter
    names are not shown to someone who may not call it."""
    response = get(gateway, "/admin/calls", {"teamid": "x"}, key=None)
    assert response.status_code == 401


def test_a_long_unknown_name_is_cut_in_the_error(gateway: str) -> None:
    """The error names at most 64 characters of the parameter."""
    response = get(gateway, "/admin/calls", {"x" * 500: "1"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x" * 64
