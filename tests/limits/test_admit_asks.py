"""What a keyed call asks of its TPM limits (the admit stage on the real limiters): a call asking
for more than a limit is refused on what it asked, uncapped, with the limit's headers; a list of
completion prompts reserves output for each; a refusal's ``type`` names the limit that refused,
as OpenAI's do."""

from __future__ import annotations

from typing import Any

import pytest

from app import errors
from app.api.incoming import Incoming
from app.config import parse_config
from app.gateway import Gateway
from app.limits import Bucket, Limiter, LocalLimiter, RedisLimiter
from app.limits.resp import RespClient
from app.pipeline import Caller, ModelCall, Pipeline
from app.pricing import PriceBook
from app.schemas import ChatRequest, CompletionRequest
from app.stages.admit import Admit
from app.usage import estimate_prompt_tokens
from tests.api.conftest import ListSink
from tests.limits.text import text_headers

CONFIG = parse_config({
    "providers": {"mock": {"type": "mock"}},
    "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}]}},
}, {})
HI = [{"role": "user", "content": "hi"}]
RESERVATION = 4096


def _call(caller: Caller | None = None, **request: Any) -> ModelCall:
    gateway = Gateway(config=CONFIG, providers={}, prices=PriceBook({}), sink=ListSink(),
                      pipeline=Pipeline())

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    call = gateway.open(Incoming(path="/v1/chat/completions", headers={}, receive=receive))
    kind = CompletionRequest if "prompt" in request else ChatRequest
    call.request = kind.model_validate({"model": "chat", **request})
    if caller is not None:
        call.caller = caller
    return call


def _prompt(**request: Any) -> int:
    """The prompt's estimated tokens (``app.usage``'s estimate, as the stage reads it)."""
    built = _call(**request).request
    assert built is not None
    return estimate_prompt_tokens(built)


def _caller(*, rpm: int | None = None, tpm: int | None = None, id: str = "k1") -> Caller:
    return Caller("key", key_id=id, buckets=(Bucket("key", id, rpm, tpm, None),))


def _redis(resp: RespClient, prefix: str) -> RedisLimiter:
    return RedisLimiter(resp, timeout_s=0.5, fail_open=True, budget_fail_open=False,
                        prefix=prefix)


async def _refused(admit: Admit, call: ModelCall) -> errors.GatewayError:
    with pytest.raises(errors.RateLimited) as caught:
        await admit.on_request(call)
    return caught.value


# ---- too large is what the request asks, not the capped charge


async def test_max_tokens_past_the_tpm_limit_is_too_large_though_the_charge_is_capped() -> None:
    """TPM 5,000 with the 4,096 reservation: ``max_tokens: 8000`` is refused "Request too
    large" quoting the prompt plus 8,000 (not the capped 4,096), as is
    ``max_completion_tokens: 5000`` on TPM 1,000; nothing is charged."""
    limiter = LocalLimiter()
    admit = Admit(limiter, output_reservation=RESERVATION)
    prompt = _prompt(messages=HI)
    for tpm, field, asked in ((5000, "max_tokens", 8000), (5000, "max_tokens", 20_000),
                              (1000, "max_completion_tokens", 5000)):
        caller = _caller(tpm=tpm, id=f"k{tpm}-{asked}")
        call = _call(caller, messages=HI, **{field: asked})
        refused = await _refused(admit, call)
        assert refused.code == "rate_limit_exceeded" and refused.body()["error"]["type"] == \
            "tokens"
        assert (f"Request too large for this key's tokens per minute: limit {tpm}, "
                f"requested {prompt + asked} ") in refused.message
        assert text_headers(call.headers)["x-should-retry"] == "false"
        assert "retry-after" not in text_headers(call.headers)
        fits = _call(caller, messages=HI, max_tokens=10)
        await admit.on_request(fits)
        assert text_headers(fits.headers)["x-ratelimit-remaining-tokens"] == \
            str(tpm - prompt - 10)  # the refusal charged nothing


async def test_the_ask_counts_every_choice_and_the_charge_stays_capped() -> None:
    """``n: 3`` of ``max_tokens: 2000`` asks 6,000 and more: too large for TPM 6,000; under a
    limit that holds the ask, the charge is the capped reservation per choice."""
    admit = Admit(LocalLimiter(), output_reservation=RESERVATION)
    prompt = _prompt(messages=HI)
    refused = await _refused(admit, _call(_caller(tpm=6000), messages=HI, max_tokens=2000, n=3))
    assert f"limit 6000, requested {prompt + 6000} " in refused.message
    big = _call(_caller(tpm=100_000, id="k2"), messages=HI, max_tokens=8000)
    await admit.on_request(big)
    assert big.tokens == prompt + RESERVATION


# ---- a list of completion prompts reserves output for each


def test_a_list_of_prompts_reserves_output_per_prompt_and_choice() -> None:
    """K prompts of n choices reserve K x n x max_tokens (capped per choice by the reservation),
    as they are generated and billed; token-id prompts alike; one list of ids is one prompt."""
    admit = Admit(LocalLimiter(), output_reservation=100)
    for prompts, count in ((["hello there"] * 7, 7), ([[1, 2, 3], [4, 5]], 2), ([1, 2, 3], 1),
                           ("hello there", 1)):
        prompt = _prompt(prompt=prompts)
        assert admit.estimate(_call(prompt=prompts, max_tokens=10)) == prompt + count * 10
        assert admit.estimate(_call(prompt=prompts, max_tokens=10, n=2, best_of=3)) == \
            prompt + count * 30
        assert admit.estimate(_call(prompt=prompts, max_tokens=500)) == prompt + count * 100


async def test_a_hundred_prompts_past_the_tpm_limit_are_too_large_as_n_100_is() -> None:
    """TPM 500: 100 prompts of ``max_tokens: 10`` ask the prompts plus 1,000 tokens, refused
    "Request too large" exactly as one prompt with ``n: 100`` is."""
    admit = Admit(LocalLimiter(), output_reservation=RESERVATION)
    prompts = ["hello there"] * 100
    refused = await _refused(admit, _call(_caller(tpm=500), prompt=prompts, max_tokens=10))
    assert f"limit 500, requested {_prompt(prompt=prompts) + 1000} " in refused.message
    as_n = await _refused(admit, _call(_caller(tpm=500), prompt="hello there", max_tokens=10,
                                       n=100))
    assert f"requested {_prompt(prompt='hello there') + 1000} " in as_n.message


# ---- a call too large carries the x-ratelimit-* headers


async def _too_large_headers(limiter: Limiter) -> None:
    caller = _caller(rpm=10, tpm=1000)
    admit = Admit(limiter, output_reservation=RESERVATION)
    first = _call(caller, messages=HI, max_tokens=100)
    await admit.on_request(first)
    used = first.tokens
    for _ in range(2):  # twice: the refusal charges nothing, so both read the same windows
        big = _call(caller, messages=HI, max_tokens=5000)
        await _refused(admit, big)
        headers = text_headers(big.headers)
        assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"],
                headers["x-ratelimit-limit-requests"],
                headers["x-ratelimit-remaining-requests"]) == ("1000", str(1000 - used), "10",
                                                               "9")
        assert headers["x-ratelimit-reset-tokens"].endswith("s")
        assert headers["x-should-retry"] == "false" and "retry-after" not in headers


async def test_too_large_carries_the_windows_headers_in_process() -> None:
    """The in-process limiter: the 429 "Request too large" carries the request and token
    trios of the windows as they stand, and ``x-should-retry: false``."""
    await _too_large_headers(LocalLimiter())


async def test_too_large_carries_the_windows_headers_on_redis(resp: RespClient,
                                                              prefix: str) -> None:
    """The Redis limiter likewise, read by an admission that charges nothing."""
    await _too_large_headers(_redis(resp, prefix))


async def test_too_large_with_redis_down_has_no_headers_but_is_refused() -> None:
    """Redis unreachable: the call is still refused too large (it could never fit), without
    the headers no one could read."""
    down = RedisLimiter(RespClient.from_url("redis://127.0.0.1:1/0"), timeout_s=0.2,
                        fail_open=True, budget_fail_open=False, prefix="sbtest-down")
    big = _call(_caller(tpm=1000), messages=HI, max_tokens=5000)
    refused = await _refused(Admit(down, output_reservation=RESERVATION), big)
    assert "Request too large" in refused.message
    headers = text_headers(big.headers)
    assert headers["x-should-retry"] == "false"
    assert not any(name.startswith("x-ratelimit-") for name in headers)


# ---- the refusal's type names the limit, as OpenAI's does


async def _types(limiter: Limiter) -> None:
    admit = Admit(limiter, output_reservation=RESERVATION)
    by_rpm = _caller(rpm=1, tpm=10_000, id="rpm")
    await admit.on_request(_call(by_rpm, messages=HI, max_tokens=10))
    refused = await _refused(admit, _call(by_rpm, messages=HI, max_tokens=10))
    assert refused.body()["error"] | {"message": ""} == {
        "message": "", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    assert refused.message.startswith("Rate limit reached for this key on requests per minute")
    by_tpm = _caller(rpm=100, tpm=200, id="tpm")
    await admit.on_request(_call(by_tpm, messages=HI, max_tokens=150))
    refused = await _refused(admit, _call(by_tpm, messages=HI, max_tokens=150))
    assert refused.body()["error"] | {"message": ""} == {
        "message": "", "type": "tokens", "param": None, "code": "rate_limit_exceeded"}
    assert refused.message.startswith("Rate limit reached for this key on tokens per minute")


async def test_a_refusal_names_requests_or_tokens_in_process() -> None:
    """RPM refusals are ``type: requests``, TPM ones ``type: tokens`` (in-process limiter)."""
    await _types(LocalLimiter())


async def test_a_refusal_names_requests_or_tokens_on_redis(resp: RespClient,
                                                           prefix: str) -> None:
    """The same on the Redis limiter."""
    await _types(_redis(resp, prefix))
