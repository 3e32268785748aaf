"""The client's ``anthropic-beta`` and ``anthropic-version`` on a native Messages call, and how
each Claude provider sends them on."""

from __future__ import annotations

import pytest

from app import errors
from app.providers.anthropic import client_headers
from app.providers.base import MessagesCall, Target
from app.providers.bedrock import anthropic_body

BODY = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_betas_are_read_as_a_list() -> None:
    """Comma-separated names, blanks dropped; the version kept as sent."""
    call = MessagesCall.from_client(BODY, {"anthropic-beta": " a-1 ,, b.2_x ",
                                           "anthropic-version": "2023-06-01"})
    assert call.betas == ("a-1", "b.2_x") and call.version == "2023-06-01"
    assert MessagesCall.from_client(BODY, {}) == MessagesCall(BODY)


@pytest.mark.parametrize(("headers", "param"), [
    ({"anthropic-beta": "a b"}, "anthropic-beta"),
    ({"anthropic-beta": "a\r\nx-api-key: k"}, "anthropic-beta"),
    ({"anthropic-beta": ",".join(f"b{i}" for i in range(33))}, "anthropic-beta"),
    ({"anthropic-version": "2023-6-1"}, "anthropic-version"),
])
def test_malformed_headers_are_refused(headers: dict[str, str], param: str) -> None:
    """Names that are not tokens, too many of them, a version that is not a date."""
    with pytest.raises(errors.InvalidRequest) as raised:
        MessagesCall.from_client(BODY, headers)
    assert raised.value.param == param


def test_anthropic_takes_them_as_headers() -> None:
    """Both as headers; none when the client sent none."""
    call = MessagesCall(BODY, betas=("a", "b"), version="2024-01-01")
    assert client_headers(call) == {"anthropic-beta": "a,b", "anthropic-version": "2024-01-01"}
    assert client_headers(MessagesCall(BODY)) == {}


def test_bedrock_takes_betas_in_the_body() -> None:
    """InvokeModel's ``anthropic_beta`` list, unless the client's body carries its own."""
    target = Target(provider="aws", model="anthropic.claude-sonnet-4-5-v1:0")
    body = anthropic_body(MessagesCall(BODY, betas=("a", "b")), target=target)
    assert body["anthropic_beta"] == ["a", "b"] and "model" not in body
    own = anthropic_body(MessagesCall({**BODY, "anthropic_beta": ["c"]}, betas=("a",)),
                         target=target)
    assert own["anthropic_beta"] == ["c"]
    assert "anthropic_beta" not in anthropic_body(MessagesCall(BODY), target=target)
