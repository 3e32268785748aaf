"""Numbers past what the JSON parser reads get a 400 that says so, naming the parameter, in
OpenAI's error shape: an integer of 400 digits (valid JSON, past a double) is "number too large",
not "not valid JSON"; an integer past 64 bits (read as a float) is "integer too large (at most
...)", not "should be a valid integer"; under ``/v1/messages``, ``max_tokens`` too large says so."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config

HI = b'[{"role": "user", "content": "hi"}]'


@pytest.fixture
def gateway(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(sim_config(simulator)) as running:
        yield running


def _post(gateway: RunningGateway, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(gateway.url + path, content=raw, timeout=30,
                      headers={"Authorization": f"Bearer {MASTER_KEY}",
                               "Content-Type": "application/json"})


@pytest.mark.parametrize(("tail", "param"), [
    (b'"seed": ' + b"1" * 400, "seed"),
    (b'"seed": 1e400', "seed"),
    (b'"tools": [{"type": "function", "function": {"name": "f", "parameters": '
     b'{"type": "object", "maximum": ' + b"9" * 400 + b"}}}]",
     "tools[0].function.parameters.maximum"),
], ids=["integer", "exponent", "nested"])
def test_a_number_past_a_double_is_too_large(gateway: RunningGateway, tail: bytes,
                                             param: str) -> None:
    """Valid JSON the parser cannot read: a 400 naming the first such number's path."""
    raw = b'{"model": "chat", "messages": ' + HI + b", " + tail + b"}"
    answer = _post(gateway, "/v1/chat/completions", raw)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", param, "integer_above_max_value")
    assert error["message"] == f"Invalid value for '{param}': number too large."


@pytest.mark.parametrize(("number", "words", "code"), [
    (b"1" + b"0" * 30, "too large (at most 18446744073709551615)", "integer_above_max_value"),
    (b"-1" + b"0" * 30, "too small (at least -9223372036854775808)", "integer_below_min_value"),
])
def test_an_integer_past_64_bits_is_too_large(gateway: RunningGateway, number: bytes,
                                              words: str, code: str) -> None:
    """``seed`` of 31 digits (read as a float past 64 bits) is an integer too large (or too
    small), not "should be a valid integer"."""
    raw = b'{"model": "chat", "messages": ' + HI + b', "seed": ' + number + b"}"
    answer = _post(gateway, "/v1/chat/completions", raw)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("seed", code)
    assert error["message"] == f"Invalid value for 'seed': integer {words}."


def test_messages_max_tokens_too_large_says_so(gateway: RunningGateway) -> None:
    """``/v1/messages`` with ``max_tokens`` of 31 digits: too large, with the bound (not "at
    least 1")."""
    raw = b'{"model": "chat", "messages": ' + HI + b', "max_tokens": 1' + b"0" * 30 + b"}"
    answer = _post(gateway, "/v1/messages", raw)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        "max_tokens: too large: must be an integer within the model's output limit")
