"""The authenticate, admit and account stages in milliseconds, on the in-process limiter (and on
a Redis that is not there, for the fail modes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from app import errors
from app.api.incoming import Incoming
from app.config import parse_config
from app.gateway import Gateway
from app.keys import Entry
from app.keys.model import KeyRecord, TeamRecord
from app.limits import Bucket, LocalLimiter, RedisLimiter
from app.pipeline import ANONYMOUS, MASTER, Caller, ModelCall, Pipeline
from app.pricing import PriceBook
from app.privacy.config import PrivacySetting
from app.resources import RedisPools
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.stages.admit import Account, Admit
from app.stages.authenticate import Authenticate, caller_of
from app.usage import Usage
from tests.api.conftest import ListSink
from tests.limits.text import text_headers
from tests.servers import free_port

CONFIG = parse_config({
    "providers": {"mock": {"type": "mock"}},
    "models": {"chat": {"targets": [{"provider": "mock", "model": "m"}],
                        "max_tokens_default": 300},
               "bare": {"targets": [{"provider": "mock", "model": "m"}]},
               "embed": {"targets": [{"provider": "mock", "model": "e"}]}},
}, {})
HI = [{"role": "user", "content": "hello there"}]


def _call(pipeline: Pipeline | None = None, headers: dict[str, str] | None = None,
          **request: Any) -> ModelCall:
    gateway = Gateway(config=CONFIG, providers={}, prices=PriceBook({}), sink=ListSink(),
                      pipeline=pipeline or Pipeline())

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    call = gateway.open(Incoming(path="/v1/chat/completions", headers=headers or {},
                                 receive=receive))
    if request:
        kind = EmbeddingRequest if "input" in request \
            else CompletionRequest if "prompt" in request else ChatRequest
        call.request = kind.model_validate(request)
    return call


def _prompt_only(model: str) -> int:
    return Admit(LocalLimiter(), output_reservation=1000).estimate(
        _call(model=model, messages=HI, max_tokens=1)) - 1


# ---- admit: the estimate


def test_the_estimate_is_prompt_plus_asked_output_capped_by_the_reservation_times_n() -> None:
    admit = Admit(LocalLimiter(), output_reservation=1000)
    prompt = _prompt_only("chat")
    assert prompt > 0
    assert admit.estimate(_call(model="chat", messages=HI, max_tokens=40)) == prompt + 40
    assert admit.estimate(_call(model="chat", messages=HI,
                                max_completion_tokens=50, max_tokens=900)) == prompt + 50
    assert admit.estimate(_call(model="chat", messages=HI, max_tokens=32_000)) == prompt + 1000
    assert admit.estimate(_call(model="chat", messages=HI, max_tokens=40, n=3)) == \
        prompt + 120


def test_without_max_tokens_the_model_default_else_the_reservation_is_charged() -> None:
    admit = Admit(LocalLimiter(), output_reservation=1000)
    assert admit.estimate(_call(model="chat", messages=HI)) == _prompt_only("chat") + 300
    assert admit.estimate(_call(model="bare", messages=HI)) == _prompt_only("bare") + 1000


def test_a_completion_charges_max_tokens_0_as_nothing_and_best_of_as_its_candidates() -> None:
    """A completion's ``max_tokens: 0`` (the prompt scored) charges the prompt alone, not the
    reservation; ``best_of`` candidates are generated and billed as ``n``'s choices are."""
    admit = Admit(LocalLimiter(), output_reservation=1000)
    prompt = admit.estimate(_call(model="chat", prompt="hello there", max_tokens=0, echo=True))
    assert prompt == admit.estimate(_call(model="chat", prompt="hello there", max_tokens=1)) - 1
    assert admit.estimate(_call(model="chat", prompt="hello there", max_tokens=10,
                                best_of=3)) == prompt + 30


def test_embeddings_are_charged_their_input_only() -> None:
    admit = Admit(LocalLimiter(), output_reservation=1000)
    small = admit.estimate(_call(model="embed", input="hi"))
    large = admit.estimate(_call(model="embed", input=["hello there " * 50] * 2))
    assert 0 < small < large


# ---- admit and account: decisions


async def test_a_rate_limit_refusal_is_429_with_retry_after_and_openai_headers() -> None:
    limiter = LocalLimiter()
    caller = Caller("key", key_id="k1", buckets=(Bucket("key", "k1", 2, None, None),))
    admit = Admit(limiter, output_reservation=100)
    for _ in range(2):
        call = _call(model="chat", messages=HI, max_tokens=5)
        call.caller = caller
        await admit.on_request(call)
        assert text_headers(call.headers)["x-ratelimit-limit-requests"] == "2"
    assert text_headers(call.headers)["x-ratelimit-remaining-requests"] == "0"
    refused = _call(model="chat", messages=HI, max_tokens=5)
    refused.caller = caller
    with pytest.raises(errors.RateLimited) as caught:
        await admit.on_request(refused)
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert int(text_headers(refused.headers)["retry-after"]) >= 1
    assert "x-should-retry" not in text_headers(refused.headers)


async def test_a_spent_budget_is_429_insufficient_quota_that_sdks_do_not_retry() -> None:
    limiter = LocalLimiter()
    team = Bucket("team", "t1", None, None, 1.0)
    caller = Caller("key", key_id="k1", team_id="t1", buckets=(team,))
    admit, account = Admit(limiter, output_reservation=100), Account(limiter)
    call = _call(model="chat", messages=HI, max_tokens=5)
    call.caller = caller
    await admit.on_request(call)
    call.record.usage = Usage(prompt_tokens=10, completion_tokens=5)
    call.record.cost_usd = 1.25
    account.on_end(call)
    assert limiter.spent_usd(team) == pytest.approx(1.25)
    refused = _call(model="chat", messages=HI)
    refused.caller = caller
    with pytest.raises(errors.QuotaExceeded) as caught:
        await admit.on_request(refused)
    assert caught.value.code == "insufficient_quota"
    assert text_headers(refused.headers)["x-should-retry"] == "false"


async def test_a_total_budget_spent_has_no_retry_after_a_daily_one_says_when_it_renews(
) -> None:
    """A spent ``total`` budget never renews: no Retry-After for a client to wait on (only
    ``x-should-retry: false``); a day's budget says how long until midnight UTC."""
    limiter = LocalLimiter()
    for period, message in (("total", "The key's total budget is spent."),
                            ("day", "The key's budget for this period is spent.")):
        bucket = Bucket("key", f"k-{period}", None, None, 0.01, period)  # type: ignore[arg-type]
        caller = Caller("key", key_id=bucket.id, buckets=(bucket,))
        limiter.settle(caller.buckets, 0, 0, 0.02)
        refused = _call(model="chat", messages=HI, max_tokens=5)
        refused.caller = caller
        with pytest.raises(errors.QuotaExceeded) as caught:
            await Admit(limiter, output_reservation=100).on_request(refused)
        assert caught.value.message == message
        headers = text_headers(refused.headers)
        assert headers["x-should-retry"] == "false"
        if period == "total":
            assert "retry-after" not in headers
        else:
            assert 0 < int(headers["retry-after"]) <= 86_400


async def test_a_call_asking_for_more_than_a_tpm_limit_is_refused_at_once_not_retried(
) -> None:
    """A prompt plus max_tokens over the smallest TPM limit (here the team's) could never fit:
    429 "Request too large" naming both numbers, ``x-should-retry: false``, no Retry-After,
    nothing charged. Without max_tokens the default reservation is charged as the limit, so
    the call runs (and never more than the limit is charged)."""
    limiter = LocalLimiter()
    team = Bucket("team", "t1", None, 60, None)
    caller = Caller("key", key_id="k1", team_id="t1",
                    buckets=(Bucket("key", "k1", 100, 1000, None, team="t1"), team))
    assert caller.largest_call == 60
    admit = Admit(limiter, output_reservation=4096)
    big = _call(model="chat", messages=HI, max_tokens=2000)
    big.caller = caller
    with pytest.raises(errors.RateLimited) as caught:
        await admit.on_request(big)
    requested = _prompt_only("chat") + 2000
    assert caught.value.code == "rate_limit_exceeded" and caught.value.status_code == 429
    assert f"team's tokens per minute: limit 60, requested {requested}" in caught.value.message
    headers = text_headers(big.headers)
    assert headers["x-should-retry"] == "false" and "retry-after" not in headers
    implicit = _call(model="bare", messages=HI)
    implicit.caller = caller
    await admit.on_request(implicit)
    assert implicit.tokens == 60
    assert text_headers(implicit.headers)["x-ratelimit-remaining-tokens"] == "0"
    assert text_headers(implicit.headers)["x-ratelimit-remaining-requests"] == "99"


async def test_account_replaces_the_estimate_with_the_real_usage() -> None:
    limiter = LocalLimiter()
    caller = Caller("key", key_id="k1", buckets=(Bucket("key", "k1", None, 10_000, None),))
    admit, account = Admit(limiter, output_reservation=5000), Account(limiter)
    call = _call(model="chat", messages=HI, max_tokens=4000)
    call.caller = caller
    await admit.on_request(call)
    remaining = int(text_headers(call.headers)["x-ratelimit-remaining-tokens"])
    assert 10_000 - remaining == call.tokens > 4000
    call.record.usage = Usage(prompt_tokens=10, completion_tokens=20)
    account.on_end(call)
    probe = _call(model="chat", messages=HI, max_tokens=1)
    probe.caller = caller
    await admit.on_request(probe)
    remaining = int(text_headers(probe.headers)["x-ratelimit-remaining-tokens"])
    assert 10_000 - remaining == 30 + probe.tokens


async def test_callers_without_buckets_are_neither_charged_nor_settled() -> None:
    limiter = LocalLimiter()
    admit, account = Admit(limiter, output_reservation=100), Account(limiter)
    for caller in (MASTER, ANONYMOUS, Caller("key", key_id="k2")):
        call = _call(model="chat", messages=HI)
        call.caller = caller
        await admit.on_request(call)
        account.on_end(call)
        assert call.headers == [] and call.tokens == 0 and not call.extras


@pytest.mark.parametrize(("limits_open", "budgets_open", "outcome"), [
    (True, False, "admitted"), (False, False, "refused"), (True, True, "admitted")])
async def test_redis_down_admits_or_refuses_per_the_fail_mode(
        limits_open: bool, budgets_open: bool, outcome: str) -> None:
    pools = RedisPools.open(f"redis://127.0.0.1:{free_port()}/0")
    try:
        limiter = RedisLimiter(pools.limiter, timeout_s=0.05, fail_open=limits_open,
                               budget_fail_open=budgets_open)
        admit = Admit(limiter, output_reservation=100)
        call = _call(model="chat", messages=HI)
        call.caller = Caller("key", key_id="k1", buckets=(Bucket("key", "k1", 10, None, None),))
        started = asyncio.get_running_loop().time()
        if outcome == "admitted":
            await admit.on_request(call)
        else:
            with pytest.raises(errors.GatewayError) as caught:
                await admit.on_request(call)
            assert caught.value.status_code == 503 and caught.value.code == "limiter_unavailable"
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await pools.aclose()


# ---- authenticate


async def test_master_missing_wrong_and_anonymous_keys() -> None:
    guarded = Authenticate(SecretStr("sk-master-0123456789abcdef"), None)
    assert await guarded.identify({"authorization": "Bearer sk-master-0123456789abcdef"}) \
        is MASTER
    assert await guarded.identify({"x-api-key": "sk-master-0123456789abcdef"}) is MASTER
    with pytest.raises(errors.AuthenticationFailed) as missing:
        await guarded.identify({})
    assert missing.value.code == "missing_api_key"
    assert "'x-api-key: KEY'" in missing.value.message  # Anthropic's clients send that header
    for wrong in ("Bearer sk-master-0123456789abcdeX", "Basic sk-master-0123456789abcdef",
                  "Bearer sk-sb-unknown"):
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await guarded.identify({"authorization": wrong})
        assert caught.value.code in {"invalid_api_key", "missing_api_key"}
    open_ = Authenticate(None, None)
    assert await open_.identify({}) is ANONYMOUS
    assert await open_.identify({"authorization": "Bearer anything"}) is ANONYMOUS


async def test_a_model_outside_the_allow_list_is_403_naming_it() -> None:
    auth = Authenticate(None, None)
    call = _call(model="chat", messages=HI)
    call.caller = Caller("key", key_id="k1", models=frozenset({"embed"}))
    with pytest.raises(errors.PermissionDenied) as caught:
        await auth.on_request(call)
    assert caught.value.code == "model_not_allowed" and "'chat'" in caught.value.message
    call.caller = Caller("key", key_id="k1", models=frozenset({"chat"}))
    await auth.on_request(call)


async def test_a_refused_call_is_recorded_with_its_model_user_and_stream() -> None:
    """A call a stage refuses (here a rate limit of 0 left) still says which public model,
    which end user and whether it streamed."""
    caller = Caller("key", key_id="k1", buckets=(Bucket("key", "k1", 1, None, None),))
    pipeline = Pipeline([Admit(LocalLimiter(), output_reservation=100)])
    for n in range(2):
        call = _call(pipeline, model="chat", messages=HI, max_tokens=5, user="u-7", stream=True)
        call.caller = caller
        if n == 0:
            await pipeline.admit(call)
            continue
        with pytest.raises(errors.RateLimited):
            await pipeline.admit(call)
        record = call.record
        assert (record.public_model, record.end_user, record.stream) == ("chat", "u-7", True)


async def test_admission_resolves_the_route_before_it_refuses() -> None:
    """Admission looks the call's route up before charging it, whatever the request asks
    (``max_tokens`` included): a model no route serves is the 404 it is, stored as named, not
    a 429 that depends on what is left of the key's minute; a served model's refusal knows its
    route (and so an experiment's variant)."""
    caller = Caller("key", key_id="k1", buckets=(Bucket("key", "k1", 1, None, None),))
    pipeline = Pipeline([Admit(LocalLimiter(), output_reservation=100)])
    calls = [_call(pipeline, model=model, messages=HI, max_tokens=5)
             for model in ("made-up", "chat", "chat")]
    for call in calls:
        call.caller = caller
    with pytest.raises(errors.ModelNotFound):
        await pipeline.admit(calls[0])
    assert calls[0].record.public_model == "made-up"
    await pipeline.admit(calls[1])  # the minute's one request
    with pytest.raises(errors.RateLimited):
        await pipeline.admit(calls[2])
    assert calls[2]._route is not None  # the private field route() caches it in


def test_a_key_is_charged_to_its_own_buckets_and_its_teams_sharing_the_team_tag() -> None:
    key = KeyRecord(id="key_a", name="a", prefix="sk-sb-x", team_id="team_t", rpm=60,
                    budget_usd=5.0, budget_period="day", models=("chat",))
    team = TeamRecord(id="team_t", name="t", tpm=1000)
    caller = caller_of(Entry(key, team))
    assert (caller.name, caller.key_id, caller.team_id) == ("key", "key_a", "team_t")
    assert caller.models == frozenset({"chat"})
    assert [(b.scope, b.id, b.rpm, b.tpm, b.budget_usd, b.tag) for b in caller.buckets] == [
        ("key", "key_a", 60, None, 5.0, "team_t"), ("team", "team_t", None, 1000, None, "team_t")]
    unlimited = caller_of(Entry(KeyRecord(id="key_b", name="b", prefix="p"), None))
    assert unlimited.buckets == () and unlimited.models is None


@pytest.mark.parametrize(("key", "team", "privacy"), [
    (None, None, "allow"),
    ("block", None, "block"),
    (None, "redact", "redact"),
    ("redact", "private_only", "private_only"),
    ("block", "redact", "block"),
])
def test_a_callers_privacy_is_the_stricter_of_its_key_and_team(
        key: PrivacySetting | None, team: PrivacySetting | None, privacy: str) -> None:
    """The caller a key stands for runs under the stricter of its key's and its team's privacy
    settings (allow: neither has one)."""
    caller = caller_of(Entry(KeyRecord(id="key_a", name="a", prefix="p", team_id="team_t",
                                       privacy=key),
                             TeamRecord(id="team_t", name="t", privacy=team)))
    assert caller.privacy == privacy
