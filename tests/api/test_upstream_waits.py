"""An upstream's "try later" as the client gets it: its ``Retry-After`` passed on (on
``/v1/chat/completions`` and ``/v1/messages``, streamed or not, after a fallback too), and
an upstream's 529 (Anthropic's ``overloaded_error``) kept a 529 whatever the target's type."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest

from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

CLAUDE_MODEL = "claude-sonnet-4-20250514"
USER: list[Any] = [{"role": "user", "content": "hi"}]
KINDS = ["openai", "anthropic", "cohere", "gemini"]
GEMINI_KEY = "AIzaSySimulatorTestKey0123456789abcdefg"  # the simulator's


def _provider(kind: str, simulator: str, headers: dict[str, str]) -> dict[str, Any]:
    """A provider of type ``kind`` on the simulator, sending it ``headers``."""
    if kind == "openai":
        return {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-o",
                "headers": headers}
    if kind == "cohere":
        return {"type": "cohere", "base_url": simulator, "api_key": "co-k", "headers": headers}
    if kind == "gemini":
        return {"type": "gemini", "base_url": simulator + "/gemini/v1beta",
                "api_key": GEMINI_KEY, "headers": headers}
    assert kind == "anthropic"
    return {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-k",
            "headers": headers}


_MODELS = {"openai": "gpt-4o-mini", "cohere": "command-r-plus", "gemini": "gemini-2.5-flash",
           "anthropic": CLAUDE_MODEL}


def _failing(simulator: str, *faults: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """Model ``m``: one target per fault (provider kind, its fault headers), tried in order."""
    raw = sim_config(simulator, m={"targets": [
        {"provider": f"p{i}", "model": _MODELS[kind]} for i, (kind, _) in enumerate(faults)]})
    for i, (kind, headers) in enumerate(faults):
        raw["providers"][f"p{i}"] = _provider(kind, simulator, headers)
    return raw


def _ask(gw: RunningGateway, path: str, *, stream: bool) -> httpx.Response:
    """A call to model ``m`` on ``path``, its answer read whole."""
    body: dict[str, Any] = {"model": "m", "messages": USER, "stream": stream}
    if path == "/v1/messages":
        body["max_tokens"] = 20
    with gw.http().stream("POST", path, json=body,
                          headers={"anthropic-version": "2023-06-01"}) as answer:
        answer.read()
    return answer


PATHS = ["/v1/chat/completions", "/v1/messages"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_an_upstream_429_passes_on_its_retry_after(run_gateway: GatewayFactory, simulator: str,
                                                   kind: str, path: str, stream: bool) -> None:
    """An upstream 429 with ``Retry-After: 60`` is a 429 with ``retry-after: 60``, whatever the
    provider type and endpoint, streamed or not."""
    fault = {"X-Return-Error": "429", "X-Sim-Retry-After": "60"}
    with run_gateway(_failing(simulator, (kind, fault))) as gw:
        answer = _ask(gw, path, stream=stream)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "60"


@pytest.mark.parametrize("path", PATHS)
def test_an_upstream_503_passes_on_its_retry_after(run_gateway: GatewayFactory, simulator: str,
                                                   path: str) -> None:
    """A 503 that says when to retry says it to the client too (a 503 without one says
    nothing)."""
    faults = ("openai", {"X-Return-Error": "503", "X-Sim-Retry-After": "30"})
    with run_gateway(_failing(simulator, faults)) as gw:
        answer = _ask(gw, path, stream=False)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    with run_gateway(_failing(simulator, ("openai", {"X-Return-Error": "503"}))) as gw:
        assert "retry-after" not in _ask(gw, path, stream=False).headers


@pytest.mark.parametrize(("given", "passed"), [
    ("2.5", "3"),  # whole seconds, rounded up
    ("0", "1"),
    ("86400", "3600"),  # an hour at most
    ("in a while", "1"),  # unreadable: the gateway's own default for a 429
    ("date-in-a-day", "3600"),
], ids=["fraction", "zero", "a-day", "unreadable", "http-date"])
def test_the_retry_after_passed_on_is_whole_seconds_within_an_hour(
        run_gateway: GatewayFactory, simulator: str, given: str, passed: str) -> None:
    """The upstream's wait, in seconds or as an HTTP date, is passed on rounded up to whole
    seconds, from 1 to 3600."""
    if given == "date-in-a-day":
        given = email.utils.formatdate(time.time() + 86400, usegmt=True)
    fault = {"X-Return-Error": "429", "X-Sim-Retry-After": given}
    with run_gateway(_failing(simulator, ("openai", fault))) as gw:
        answer = _ask(gw, "/v1/chat/completions", stream=False)
    assert answer.status_code == 429 and answer.headers["retry-after"] == passed


@pytest.mark.parametrize("path", PATHS)
def test_after_a_fallback_the_answered_errors_retry_after_is_passed_on(
        run_gateway: GatewayFactory, simulator: str, path: str) -> None:
    """When every target fails, the last one's error is the answer, with its own
    ``Retry-After``, not the first's."""
    raw = _failing(simulator,
                   ("openai", {"X-Return-Error": "429", "X-Sim-Retry-After": "60"}),
                   ("anthropic", {"X-Return-Error": "429", "X-Sim-Retry-After": "45"}))
    with run_gateway(raw) as gw:
        answer = _ask(gw, path, stream=True)
        assert [a.status for a in gw.sink.records[-1].attempts] == [429, 429]
    assert answer.status_code == 429 and answer.headers["retry-after"] == "45"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_an_upstream_529_is_a_529_on_both_endpoints(
        run_gateway: GatewayFactory, simulator: str, kind: str, stream: bool) -> None:
    """An upstream's 529 (Anthropic's ``overloaded_error`` or another's) is a 529 whatever the
    target's type: Anthropic's ``overloaded_error`` on ``/v1/messages``, passed on as any 5xx
    on ``/v1/chat/completions``; the call is recorded with it."""
    fault = {"X-Return-Error": "529", "X-Sim-Retry-After": "5"}
    with run_gateway(_failing(simulator, (kind, fault))) as gw:
        answer = _ask(gw, "/v1/messages", stream=stream)
        recorded = gw.sink.records[-1].http_status
        chat = _ask(gw, "/v1/chat/completions", stream=stream)
        assert [r.http_status for r in gw.sink.records] == [529, 529]
    assert answer.status_code == 529 and recorded == 529
    assert answer.json()["error"]["type"] == "overloaded_error"
    assert answer.headers["retry-after"] == "5"
    assert chat.status_code == 529 and chat.headers["retry-after"] == "5"
    if kind == "anthropic":
        assert chat.json()["error"]["code"] == "overloaded_error"
