# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""End to end, what the detectors cannot read in text alone: token ids (which no detector can
read at all) go to private targets only under a policy other than ``allow``, and a secret held
as a JSON object's value under a key that names one (``{"api_key": ...}``) is found as it is in
``api_key: ...`` text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import Upstream, config, upstream  # noqa: F401  (fixture)

IDS = [1031, 13, 8574, 31, 81827, 67871, 916]
SECRET = "Zq8vLm2xPw9kRt7Y"


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    settings = config(simulator)
    private = {"provider": "onprem", "model": "gpt-4o-mini"}
    settings["models"]["blocked-private"] = {"targets": [private],
                                             "privacy": {"action": "block"}}
    with run_gateway(settings) as running:
        yield running


def refused(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call(**kwargs)
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "token_ids_not_screened"
    return error


@pytest.mark.parametrize("ids", [IDS, [IDS, IDS[:3]]])
def test_token_ids_refused_where_a_third_party_could_get_them(
        gw: RunningGateway, upstream: Upstream, ids: list[Any]) -> None:
    """Under redact (embeddings: block) and block, token ids that could reach a third party
    are refused with a 400 naming the field and how to send text instead; the row says
    block, not none. Under private_only without a private target, the same."""
    client, marker = gw.client(), upstream.marker
    error = refused(client.embeddings.create, model="embed", input=ids, user=marker,
                    extra_headers={"x-request-id": marker})
    assert error["param"] == "input" and "check_embedding_ctx_length=False" in error["message"]
    record = gw.sink.by_id(marker)
    assert (record.http_status, record.privacy_action) == (400, "block")
    for model in ("blocked", "redacted", "no-private"):
        error = refused(client.completions.create, model=model, prompt=ids, user=marker)
        assert error["param"] == "prompt" and "as text" in error["message"]
    assert "has none" in error["message"]
    assert upstream.received() == []


def test_token_ids_go_to_private_targets_only(gw: RunningGateway, upstream: Upstream) -> None:
    """Under private_only (embeddings' too) token ids skip the third party (first in order)
    for the private target; under block a route of private targets only takes them. Each row
    says private_only. Under allow nothing changes; text goes its usual way."""
    client, marker = gw.client(), upstream.marker
    client.embeddings.create(model="embed-private", input=IDS, user=marker,
                             extra_headers={"x-request-id": marker + "e"})
    client.completions.create(model="private", prompt=IDS, user=marker,
                              extra_headers={"x-request-id": marker + "c"})
    client.completions.create(model="blocked-private", prompt=[IDS], user=marker,
                              extra_headers={"x-request-id": marker + "b"})
    client.completions.create(model="open", prompt=IDS, user=marker)
    client.completions.create(model="private", prompt="hello", user=marker,
                              extra_headers={"x-request-id": marker + "t"})
    assert [e["headers"]["x-who"] for e in upstream.received()] == \
        ["private", "private", "private", "third", "third"]
    assert [gw.sink.by_id(marker + k).privacy_action for k in "ecbt"] == \
        ["private_only", "private_only", "private_only", "none"]


def test_keyed_secrets_redacted_in_place_and_restored(gw: RunningGateway,
                                                     upstream: Upstream) -> None:
    """A secret as the value of a key named like one (``password``, ``api_key``) in
    ``metadata`` or a field of the client's own is replaced by its placeholder where it is,
    and so is its copy typed alone; the answer gets it back; the stored tags keep the
    placeholder. A value that is not random enough, or under another key, is left alone."""
    answer = gw.client().chat.completions.create(
        model="redacted", messages=[{"role": "user", "content": f"{SECRET} {upstream.marker}"}],
        metadata={"password": SECRET, "note": "Xk3pQ9vLm2Rt7YwZ", "api_key": "not secret"},
        extra_body={"creds": {"api_key": SECRET}},
        extra_headers={"x-request-id": upstream.marker})
    body = upstream.received()[0]["body"]
    assert SECRET not in str(body)
    assert body["metadata"] == {"password": "<SECRET_1>", "note": "Xk3pQ9vLm2Rt7YwZ",
                                "api_key": "not secret"}
    assert body["creds"] == {"api_key": "<SECRET_1>"}
    assert body["messages"][0]["content"].startswith("<SECRET_1> ")
    assert (answer.choices[0].message.content or "").startswith(
        f"Simulated reply to: {SECRET} ")
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_entities == {"SECRET": 3}
    assert record.tags is not None and record.tags["password"] == "<SECRET_1>"


def test_keyed_secrets_in_documents_and_mcp_servers(gw: RunningGateway,
                                                     upstream: Upstream) -> None:
    """Cohere ``documents`` and Anthropic ``mcp_servers`` hold secrets as key/value pairs
    too: found under block, replaced under redact."""
    ask = [{"role": "user", "content": f"summarise {upstream.marker}"}]
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="co-blocked", messages=ask, extra_body={  # type: ignore[arg-type]
            "documents": [{"id": "d1", "data": {"title": "creds", "api_key": SECRET}}]})
    assert isinstance(caught.value.body, dict) and "SECRET (1)" in caught.value.body["message"]
    client: Any = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    try:
        client.messages.create(model="claude", max_tokens=32, messages=ask, extra_body={
            "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m",
                             "authorization_token": SECRET}]})
    finally:
        client.close()
    seen = upstream.received()
    assert len(seen) == 1 and SECRET not in str(seen[0]["body"])
    assert seen[0]["body"]["mcp_servers"][0]["authorization_token"] == "<SECRET_1>"
