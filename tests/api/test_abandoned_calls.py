"""A call the client leaves while its request is with the upstream (a slow first token), before
any usage came back, is recorded with its prompt's estimated tokens and their cost, marked
estimated, and charged so against the key's TPM limit and budget: the provider has the prompt
and bills it. Such calls were charged nothing, so a key could send prompts past its limits by
leaving each call early."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.schemas import ChatRequest
from app.usage import estimate_prompt_tokens
from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

PRICE = 1000.0
"""USD per million tokens, input and output, of the simulator's model here."""
PROMPT = [{"role": "user", "content": "hello " * 2000}]
ESTIMATE = estimate_prompt_tokens(ChatRequest.model_validate({"model": "slow",
                                                              "messages": PROMPT}))


def _config(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator)
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1",
                                "api_key": "sk-slow", "headers": {"X-Sim-TTFT-Ms": "60000"}}
    raw["models"]["slow"] = {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]}
    raw["pricing"] = {"gpt-4o-mini": {"input": PRICE, "output": PRICE}}
    raw["streaming"] = {"keepalive_s": 0.1}
    return raw


def _key(gateway: RunningGateway, **limits: Any) -> str:
    made = gateway.http().post("/admin/keys", json={"name": "leaver", **limits})
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def _leave(gateway: RunningGateway, key: str, request_id: str, *, stream: bool) -> None:
    """Send a call for ``slow`` and leave before its first token (a stream after its first
    keep-alive; a plain call at a client timeout)."""
    headers = {"Authorization": f"Bearer {key}", "x-request-id": request_id}
    body = {"model": "slow", "messages": PROMPT, "max_tokens": 10, "stream": stream}
    if stream:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30,
                          headers=headers, json=body) as answer:
            assert answer.status_code == 200
            assert next(answer.iter_lines()) == ": keep-alive"
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gateway.url + "/v1/chat/completions", timeout=1, headers=headers,
                       json=body)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_call_left_before_its_first_token_counts_its_prompt(
        run_gateway: GatewayFactory, simulator: str, stream: bool) -> None:
    """The row: cancelled, the prompt's estimated tokens, no completion, their cost, marked
    estimated; the key's TPM (3,000 a minute) then refuses a second call of ~2,000 tokens,
    which it admitted when the first was charged nothing."""
    with run_gateway(_config(simulator)) as gateway:
        key = _key(gateway, tpm=3000)
        _leave(gateway, key, "left", stream=stream)
        record = gateway.sink.emitted("left")
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert [(a.provider, a.status) for a in record.attempts] == [("slow", 499)]
        assert record.usage is not None
        assert (record.usage.prompt_tokens, record.usage.completion_tokens,
                record.usage.estimated) == (ESTIMATE, 0, True)
        assert record.cost_usd == pytest.approx(ESTIMATE * PRICE / 1e6)
        again = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "chat", "messages": PROMPT, "max_tokens": 10})
        assert again.status_code == 429, again.text
        assert again.json()["error"]["type"] == "tokens"


def test_a_call_left_before_its_first_token_is_charged_to_the_budget(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A budget of $1: one left call's prompt (~2,000 tokens at $1,000 a million) spends it,
    and the key's next call is refused ``insufficient_quota``."""
    assert ESTIMATE * PRICE / 1e6 > 1
    with run_gateway(_config(simulator)) as gateway:
        key = _key(gateway, budget_usd=1, budget_period="day")
        _leave(gateway, key, "spent", stream=False)
        gateway.sink.emitted("spent")
        again = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        assert again.status_code == 429, again.text
        assert again.json()["error"]["code"] == "insufficient_quota"


def test_a_call_that_reached_no_upstream_counts_nothing(run_gateway: GatewayFactory,
                                                        simulator: str) -> None:
    """A call refused before any attempt (an unknown model) has no usage and no cost."""
    with run_gateway(_config(simulator)) as gateway:
        answer = gateway.http().post("/v1/chat/completions", headers={"x-request-id": "none"},
                                     json={"model": "nope", "messages": PROMPT})
        assert answer.status_code == 404
        record = gateway.sink.emitted("none")
        assert (record.usage, record.cost_usd) == (None, None)
