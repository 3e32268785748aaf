"""Bad input gets a precise 4xx in OpenAI's shape; upstream trouble maps to the right status."""

from __future__ import annotations

import gzip
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _post(gateway: RunningGateway, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with gateway.http() as http:
        response = http.post(path, **kwargs)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return response.status_code, body["error"]


@pytest.mark.parametrize(("payload", "param"), [
    ({"model": "chat"}, "messages"),
    ({"model": "chat", "messages": []}, "messages"),
    ({"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "chat", "messages": USER, "max_tokens": "5"}, "max_tokens"),
    ({"model": "chat", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "chat", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "chat", "messages": USER, "n": 1.5}, "n"),
    ({"model": "chat", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": 5, "messages": USER}, "model"),
    ({"model": "chat", "messages": "hi"}, "messages"),
    ({"model": "chat", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
     "messages[0].content"),
    ({"model": "chat", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_invalid_chat_fields_are_400_naming_the_field(
        gateway: RunningGateway, payload: dict[str, Any], param: str) -> None:
    """Each malformed field is a 400 invalid_request_error whose param names it."""
    status, error = _post(gateway, "/v1/chat/completions", json=payload)
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\"text\""])
def test_malformed_bodies_are_400(gateway: RunningGateway, raw: bytes) -> None:
    """Bodies that are not a JSON object are a 400, never a 500."""
    status, error = _post(gateway, "/v1/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert status == 400 and error["type"] == "invalid_request_error"


def test_compressed_or_non_utf8_bodies_are_told_what_is_wrong(gateway: RunningGateway) -> None:
    """A gzip body is a 415 saying the gateway takes bodies uncompressed; Latin-1 bytes a 400
    saying the body is not UTF-8 and where (not orjson's "surrogates not allowed")."""
    packed = gzip.compress(b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}')
    status, error = _post(gateway, "/v1/chat/completions", content=packed,
                          headers={"content-type": "application/json",
                                   "content-encoding": "gzip"})
    assert (status, error["code"]) == (415, "unsupported_content_encoding")
    assert "Content-Encoding: gzip" in error["message"]
    status, error = _post(gateway, "/v1/chat/completions",
                          content=b'{"model": "chat", "messages": [{"role": "user", '
                                  b'"content": "caf\xe9"}]}',
                          headers={"content-type": "application/json"})
    assert status == 400 and error["message"] == (
        "The request body is not valid UTF-8 (at byte 63); JSON must be sent as UTF-8.")


def test_bad_input_never_reaches_the_upstream(gateway: RunningGateway, simulator: str) -> None:
    """A rejected request makes no upstream call, and is still recorded."""
    import httpx

    before = httpx.get(simulator + "/_sim/stats").json()["requests"]
    status, _ = _post(gateway, "/v1/chat/completions", headers={"x-request-id": "bad-1"},
                      json={"model": "chat", "messages": [{"role": "robot", "content": "x"}]})
    after = httpx.get(simulator + "/_sim/stats").json()["requests"]
    assert status == 400
    assert before == after
    record = gateway.sink.by_id("bad-1")
    assert record.status == "error" and record.http_status == 400
    assert record.public_model == "chat"  # the body was read: the 400 counts under its model
    _post(gateway, "/v1/chat/completions", headers={"x-request-id": "bad-2"},
          json={"model": "made-up", "messages": "hi"})
    assert gateway.sink.by_id("bad-2").public_model is None  # not a label value
    _post(gateway, "/v1/chat/completions", headers={"x-request-id": "bad-3"},
          json={"model": "chat", "stream": True, "user": "u-1", "temperature": "hot",
                "messages": USER})
    streamed = gateway.sink.by_id("bad-3")
    # its user too: screened by the privacy policy when the record is sealed (none here)
    assert (streamed.public_model, streamed.stream, streamed.end_user) == ("chat", True, "u-1")


def test_a_list_too_long_says_so_not_that_it_is_no_string(gateway: RunningGateway) -> None:
    """``stop`` is a string or a list of at most 4: a list of 5 is told its length in OpenAI's
    words and code (counted before validation), not that it should have been a string."""
    status, error = _post(gateway, "/v1/chat/completions",
                          json={"model": "chat", "messages": USER, "stop": list("abcde")})
    assert (status, error["param"], error["code"]) == (400, "stop", "array_above_max_length")
    assert error["message"] == ("Invalid 'stop': array too long. Expected an array with maximum "
                                "length 4, but got an array with length 5 instead.")
    status, error = _post(gateway, "/v1/chat/completions",
                          json={"model": "chat", "messages": USER, "stop": 5})
    assert error["message"] == "Invalid value for 'stop': Input should be a valid string."


def test_caps_on_n_and_max_tokens(run_gateway: GatewayFactory, simulator: str) -> None:
    """n, max_tokens and max_completion_tokens above the configured caps are 400s naming the
    field, with OpenAI's code for a number past its bound, each limit checked on its own."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "sim", "model": "m"}],
                                      "max_tokens_cap": 100})
    raw["limits"] = {"max_n": 2}
    with run_gateway(raw) as gw:
        status, error = _post(gw, "/v1/chat/completions",
                              json={"model": "chat", "messages": USER, "n": 3})
        assert (status, error["param"], error["code"]) == (400, "n", "integer_above_max_value")
        status, error = _post(gw, "/v1/chat/completions",
                              json={"model": "chat", "messages": USER, "max_tokens": 101})
        assert (status, error["param"], error["code"]) == (
            400, "max_tokens", "integer_above_max_value")
        status, error = _post(gw, "/v1/chat/completions", json={
            "model": "chat", "messages": USER, "max_completion_tokens": 101})
        assert (status, error["param"]) == (400, "max_completion_tokens")
        # each limit on its own: a small one beside it does not let a huge one through
        for body in ({"max_tokens": 1_000_000_000, "max_completion_tokens": 5},
                     {"max_tokens": 5, "max_completion_tokens": 1_000_000_000}):
            huge = next(k for k, v in body.items() if v > 100)
            for stream in (False, True):
                status, error = _post(gw, "/v1/chat/completions", json={
                    "model": "chat", "messages": USER, "stream": stream, **body})
                assert (status, error["param"]) == (400, huge)


def test_oversize_body_is_413(run_gateway: GatewayFactory, simulator: str) -> None:
    """A body past limits.max_body_bytes is a 413, whether or not it declares its length."""
    raw = sim_config(simulator)
    raw["limits"] = {"max_body_bytes": 2048}
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]}
    with run_gateway(raw) as gw:
        status, error = _post(gw, "/v1/chat/completions", json=big)
        assert status == 413 and error["type"] == "invalid_request_error"

        def chunks() -> Any:
            yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
            yield b"y" * 4096
            yield b'"}]}'

        status, _ = _post(gw, "/v1/chat/completions", content=chunks())
        assert status == 413


@pytest.mark.parametrize(("upstream", "exception", "status"), [
    ("429", openai.RateLimitError, 429),
    ("503", openai.InternalServerError, 503),
    ("500", openai.InternalServerError, 502),
    ("400", openai.BadRequestError, 400),
    ("404", openai.NotFoundError, 404),
])
def test_upstream_errors_map_faithfully(run_gateway: GatewayFactory, simulator: str,
                                        upstream: str, exception: type[openai.APIStatusError],
                                        status: int) -> None:
    """An upstream error status reaches the client as the matching status and SDK exception."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "bad", "model": "m"}]})
    raw["providers"]["bad"] = {"type": "openai", "base_url": simulator + "/v1",
                               "api_key": "sk-upstream-secret",
                               "headers": {"X-Return-Error": upstream}}
    with run_gateway(raw) as gw, pytest.raises(exception) as info:
        gw.client().chat.completions.create(model="chat", messages=USER)
    assert info.value.status_code == status
    assert "sk-upstream-secret" not in str(info.value.body)


def test_upstream_credentials_refused_is_502_without_the_key(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """An upstream 401 is the gateway's problem (502), and its message never carries the key."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "bad", "model": "m"}]})
    raw["providers"]["bad"] = {"type": "openai", "base_url": simulator + "/v1",
                               "api_key": "sk-upstream-secret",
                               "headers": {"X-Return-Error": "401"}}
    with run_gateway(raw) as gw:
        status, error = _post(gw, "/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert status == 502
    assert "sk-upstream-secret" not in error["message"]


def test_upstream_hang_is_504(run_gateway: GatewayFactory, simulator: str) -> None:
    """An upstream that never answers within timeout_s is a 504."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "slow", "model": "m"}]})
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1",
                                "timeout_s": 0.5, "headers": {"X-Sim-Hang": "1"}}
    with run_gateway(raw) as gw:
        status, error = _post(gw, "/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert status == 504 and error["type"] == "timeout"


def test_unreachable_upstream_is_502(run_gateway: GatewayFactory, simulator: str) -> None:
    """A target that refuses connections is a 502."""
    from tests.servers import free_port

    raw = sim_config(simulator, chat={"targets": [{"provider": "gone", "model": "m"}]})
    raw["providers"]["gone"] = {"type": "openai",
                                "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    with run_gateway(raw) as gw:
        status, error = _post(gw, "/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert status == 502 and error["type"] == "upstream_error"


def test_unknown_route_and_method_are_openai_shaped(gateway: RunningGateway) -> None:
    """Unknown paths are 404 and wrong methods 405, both in OpenAI's error shape."""
    with gateway.http() as http:
        missing = http.get("/v1/nothing-here")
        wrong = http.get("/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_every_model_call_answer_names_its_config_version(run_gateway: GatewayFactory,
                                                          simulator: str) -> None:
    """Errors carry ``x-switchboard-config-version`` as answers do: an unknown model (404), a
    bad field (400), a deadline past (504), on chat and messages calls; a refused key (401)
    is not told it."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "slow", "model": "m"}]})
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1",
                                "headers": {"X-Sim-Hang": "1"}}
    with run_gateway(raw) as gw, gw.http() as http:
        version = http.get("/admin/config").json()["version"]
        chat = "/v1/chat/completions"
        answers = {
            "404": http.post(chat, json={"model": "nope", "messages": USER}),
            "400": http.post(chat, json={"model": "chat", "messages": USER, "n": 1.5}),
            "401": http.post(chat, json={"model": "chat", "messages": USER},
                             headers={"Authorization": "Bearer sk-wrong"}),
            "504": http.post(chat, json={"model": "chat", "messages": USER},
                             headers={"x-switchboard-deadline-s": "0.3"}),
            "404 messages": http.post("/v1/messages", json={
                "model": "nope", "max_tokens": 5, "messages": USER}),
        }
    assert {what: (answer.status_code, answer.headers.get("x-switchboard-config-version"))
            for what, answer in answers.items()} == {
        what: (int(what[:3]), None if what == "401" else version) for what in answers}


def test_a_reload_without_a_config_file_is_a_409_of_the_caller(gateway: RunningGateway) -> None:
    """A gateway given its config in code has no file to reload: a 409 the caller caused
    (``invalid_request_error``), not a server error."""
    status, error = _post(gateway, "/admin/config/reload")
    assert (status, error["type"], error["code"]) == (409, "invalid_request_error",
                                                      "no_config_file")
