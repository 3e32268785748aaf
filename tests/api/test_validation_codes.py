"""A request that fails validation gets OpenAI's error ``code`` for what is wrong
(``app.api.wire.parse``): ``missing_required_parameter``, ``invalid_type``, the range codes
(``integer_...`` / ``decimal_...``, ``above_max_value`` / ``below_min_value``), else
``invalid_value``. Unit tests: ``parse`` as the endpoints call it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from app import errors
from app.api.wire import parse
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


@pytest.mark.parametrize(("model", "body", "param", "code"), [
    (ChatRequest, {"model": "m"}, "messages", "missing_required_parameter"),
    (ChatRequest, {"messages": [USER]}, "model", "missing_required_parameter"),
    (ChatRequest, chat(messages=[USER, {"role": "tool", "content": "x"}]),
     "messages[1].tool_call_id", "missing_required_parameter"),
    (EmbeddingRequest, {"model": "m"}, "input", "missing_required_parameter"),
    (ChatRequest, chat(messages="hi"), "messages", "invalid_type"),
    (ChatRequest, chat(n="2"), "n", "invalid_type"),
    (ChatRequest, chat(n=1.5), "n", "invalid_type"),
    (ChatRequest, chat(max_tokens=True), "max_tokens", "invalid_type"),
    (ChatRequest, chat(temperature="hot"), "temperature", "invalid_type"),
    (ChatRequest, chat(temperature=3), "temperature", "decimal_above_max_value"),
    (ChatRequest, chat(temperature=2.5), "temperature", "decimal_above_max_value"),
    (ChatRequest, chat(top_p=-0.1), "top_p", "decimal_below_min_value"),
    (ChatRequest, chat(logit_bias={"50256": 101}), "logit_bias.50256",
     "decimal_above_max_value"),
    (ChatRequest, chat(n=0), "n", "integer_below_min_value"),
    (ChatRequest, chat(top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    (CompletionRequest, {"model": "m", "prompt": "hi", "logprobs": 6}, "logprobs",
     "integer_above_max_value"),
    (CompletionRequest, {"model": "m", "prompt": "hi", "max_tokens": -1}, "max_tokens",
     "integer_below_min_value"),
    (ChatRequest, chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role",
     "invalid_value"),
    (ChatRequest, chat(messages=[]), "messages", "invalid_value"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_each_problem_has_openais_code(model: type[BaseModel], body: dict[str, Any],
                                       param: str, code: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(model, body)
    assert (caught.value.param, caught.value.code) == (param, code)
    assert caught.value.body()["error"]["code"] == code
