"""``stop`` past OpenAI's 4 strings: its code ``array_above_max_length`` and its words, as
``tools`` gets (``app.schemas.MAX_STOP``), on chat and legacy completions alike."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from app import errors
from app.api.wire import parse
from app.schemas import ChatRequest, CompletionRequest
from tests.api.conftest import RunningGateway

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "chat", "prompt": "hi"}
FIVE = ["a", "b", "c", "d", "e"]
OPENAI_WORDS = ("Invalid 'stop': array too long. Expected an array with maximum length 4, but "
                "got an array with length 5 instead.")


@pytest.mark.parametrize(("schema", "body"), [(ChatRequest, CHAT),
                                              (CompletionRequest, COMPLETION)])
def test_five_stops_are_refused_in_openais_words(schema: type[BaseModel],
                                                 body: dict[str, Any]) -> None:
    """Five ``stop`` strings: a 400 naming ``stop`` with OpenAI's code and message; four parse."""
    assert isinstance(parse(schema, {**body, "stop": FIVE[:4]}), schema)
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(schema, {**body, "stop": FIVE})
    error = caught.value
    assert (error.status_code, error.param, error.code) == (400, "stop", "array_above_max_length")
    assert error.message == OPENAI_WORDS


def test_a_stop_of_the_wrong_type_keeps_its_own_error() -> None:
    """Within the count, a non-string stop is still refused by validation, not by the count."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(ChatRequest, {**CHAT, "stop": [1]})
    assert caught.value.param is not None and caught.value.param.startswith("stop")
    assert caught.value.code != "array_above_max_length"


@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT),
                                            ("/v1/completions", COMPLETION)])
def test_five_stops_through_the_gateway(gateway: RunningGateway, path: str,
                                        body: dict[str, Any]) -> None:
    """The wire answer is OpenAI's error object for ``stop``, as the tester expected."""
    with gateway.http() as http:
        response: httpx.Response = http.post(path, content=orjson.dumps({**body, "stop": FIVE}),
                                             headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": OPENAI_WORDS, "type": "invalid_request_error", "param": "stop",
        "code": "array_above_max_length"}
