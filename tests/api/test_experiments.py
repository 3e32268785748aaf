"""An A/B experiment through a running gateway: calls split between variants, each user on
one variant, the variant in the answer's header and in the call record."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from app.config import ConfigError, parse_config
from tests.api.conftest import GatewayFactory, sim_config


def with_experiment(simulator: str, sticky: str = "user") -> dict[str, Any]:
    raw = sim_config(simulator)
    raw["providers"]["sim2"] = {**raw["providers"]["sim"]}
    raw["experiments"] = {"chat-ab": {"model": "chat", "sticky": sticky, "variants": {
        "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "candidate": {"targets": [{"provider": "sim2", "model": "gpt-4o-mini"}]}}}}
    return raw


def test_users_are_split_and_each_stays_on_one_variant(run_gateway: GatewayFactory,
                                                       simulator: str) -> None:
    with run_gateway(with_experiment(simulator)) as gateway:
        http = gateway.http()
        variants: dict[str, set[str]] = {}
        for call in range(200):
            user = f"user-{call % 40}"
            answer = http.post("/v1/chat/completions", json={
                "model": "chat", "user": user, "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200
            variant = answer.headers["x-switchboard-variant"]
            provider = answer.headers["x-switchboard-provider"]
            assert (variant, provider) in {("chat-ab/control", "sim"),
                                           ("chat-ab/candidate", "sim2")}
            variants.setdefault(user, set()).add(variant)
        assert all(len(seen) == 1 for seen in variants.values())
        split = Counter(next(iter(seen)) for seen in variants.values())
        assert set(split) == {"chat-ab/control", "chat-ab/candidate"}
        records = gateway.sink.records
        assert {(r.experiment, r.variant, r.provider) for r in records} == {
            ("chat-ab", "control", "sim"), ("chat-ab", "candidate", "sim2")}
        plain = http.post("/v1/embeddings", json={"model": "embed", "input": "x"})
        assert "x-switchboard-variant" not in plain.headers
        assert gateway.sink.records[-1].experiment is None


def test_a_header_can_be_what_sticks(run_gateway: GatewayFactory, simulator: str) -> None:
    with run_gateway(with_experiment(simulator, sticky="header")) as gateway:
        http = gateway.http()
        for session in ("s-1", "s-2", "s-3", "s-4"):
            seen = {http.post("/v1/chat/completions", headers={
                "x-switchboard-variant-key": session}, json={
                "model": "chat", "messages": [{"role": "user", "content": "hi"}]}
                ).headers["x-switchboard-variant"] for _ in range(5)}
            assert len(seen) == 1


def test_sticky_key_assigns_calls_without_a_virtual_key_at_random(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """``sticky: key``: a call made with the master key has no virtual key to stick by, so it
    is assigned at random (both variants over 40 calls), not pinned by the caller's name."""
    with run_gateway(with_experiment(simulator, sticky="key")) as gateway:
        http = gateway.http()
        seen = Counter(http.post("/v1/chat/completions", json={
            "model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            ).headers["x-switchboard-variant"] for _ in range(40))
    # all 40 on one variant at random: a chance of 2 in 2**40
    assert set(seen) == {"chat-ab/control", "chat-ab/candidate"}


def test_a_failed_calls_answer_names_its_variant(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """An error answer of a call assigned to a variant names it, as its row does: a variant
    whose target fails is where knowing which matters most."""
    raw = with_experiment(simulator)
    for variant in raw["experiments"]["chat-ab"]["variants"].values():
        variant["targets"] = [{"provider": "broken", "model": "gpt-4o-mini"}]
    with run_gateway(raw) as gateway:
        answer = gateway.http().post("/v1/chat/completions", headers={
            "x-request-id": "failed-variant"}, json={
            "model": "chat", "user": "u-1", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code >= 500, answer.text
        record = gateway.sink.emitted("failed-variant")
        assert record.variant is not None
        assert answer.headers["x-switchboard-variant"] == f"chat-ab/{record.variant}"


def test_an_experiment_on_an_unknown_model_is_a_config_error() -> None:
    raw = {"providers": {"m": {"type": "mock"}},
           "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}},
           "experiments": {"ab": {"model": "chta", "variants": {
               "a": {"targets": [{"provider": "m", "model": "x"}]},
               "b": {"targets": [{"provider": "nope", "model": "x"}]}}}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert "experiments.ab.model: no public model named 'chta'" in str(caught.value)
    assert "experiments.ab.variants.b.targets.0.provider: no provider named 'nope'" in \
        str(caught.value)


def test_a_slash_in_an_experiment_or_variant_name_is_a_config_error() -> None:
    """An experiment or variant name with ``/`` is refused when the config loads, each listed
    with the reason (the variant header ``EXPERIMENT/VARIANT`` would be ambiguous and the
    report's path unreachable); ``:`` and ``@`` stay allowed."""
    experiments: dict[str, Any] = {
        "team/ab": {"model": "chat", "variants": {
            "a": {"targets": [{"provider": "m", "model": "x"}]},
            "b/c": {"targets": [{"provider": "m", "model": "x"}]}}},
        "team:ab@2": {"model": "other", "variants": {
            "a:1": {"targets": [{"provider": "m", "model": "x"}]},
            "b@2": {"targets": [{"provider": "m", "model": "x"}]}}}}
    raw = {"providers": {"m": {"type": "mock"}},
           "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]},
                      "other": {"targets": [{"provider": "m", "model": "x"}]}},
           "experiments": experiments}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    lines = str(caught.value).splitlines()
    assert lines == [
        f"experiments.team/ab.[key]: 'team/ab' {SLASH}",
        f"experiments.team/ab.variants.b/c.[key]: 'b/c' {SLASH}"], lines
    del experiments["team/ab"]
    assert list(parse_config(raw, {}).experiments) == ["team:ab@2"]


SLASH = ("has a '/', which an experiment or variant name cannot: the answer's "
         "x-switchboard-variant header joins the two with one (EXPERIMENT/VARIANT), and "
         "GET /admin/experiments/NAME takes a name without one")


def test_a_variant_pinning_a_version_past_the_database_column_is_a_config_error() -> None:
    """A pinned version past 2**31 - 1 (what the request path takes, and the prompt database's
    INTEGER column holds) is refused when the config loads, not a 503 on every call."""
    def pinning(version: int) -> dict[str, Any]:
        return {"providers": {"m": {"type": "mock"}},
                "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}},
                "experiments": {"ab": {"model": "chat", "variants": {
                    "control": {"prompt": {"label": "production"}},
                    "candidate": {"prompt": {"version": version}}}}}}

    with pytest.raises(ConfigError) as caught:
        parse_config(pinning(99999999999), {})
    assert str(caught.value) == ("experiments.ab.variants.candidate.prompt: version 99999999999 "
                                 "is past the highest a template can have (2147483647)")
    parse_config(pinning(2**31 - 1), {})


def test_a_shadow_variant_gets_copies_the_client_never_sees(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    raw = with_experiment(simulator)
    variants = raw["experiments"]["chat-ab"]["variants"]
    variants["candidate"].update(shadow=True, sample=0.5)
    with run_gateway(raw) as gateway:
        http = gateway.http()
        answered = []
        for i in range(40):
            answer = http.post("/v1/chat/completions", headers={"x-request-id": f"r-{i}"},
                               json={"model": "chat", "user": f"u-{i}",
                                     "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200
            assert answer.headers["x-switchboard-variant"] == "chat-ab/control"
            assert answer.headers["x-switchboard-provider"] == "sim"
            answered.append(answer.headers["x-switchboard-call-id"])
        deadline = time.monotonic() + 10
        while True:
            copies = [r for r in gateway.sink.records if r.shadow_of is not None]
            originals = {r.id for r in gateway.sink.records if r.shadow_of is None}
            if len(originals) == 40 and all(
                    any(c.shadow_of == o for c in copies) or not _sampled(o) for o in answered):
                break
            assert time.monotonic() < deadline, "the shadow copies never finished"
            time.sleep(0.05)
        assert 5 < len(copies) < 35  # a sample of one half
        assert {(c.variant, c.provider, c.status, c.request_id) for c in copies} == {
            ("candidate", "sim2", "ok", None)}
        assert {c.shadow_of for c in copies} <= set(answered)


def _sampled(call_id: str) -> bool:
    from app.routing.experiments import Variant
    from app.routing.table import Route

    return Variant(name="candidate", weight=1, route=Route("chat", (), None, "x", 0),
                   shadow=True, sample=0.5).samples(call_id)


def test_a_streamed_calls_shadow_copy_is_served_unstreamed(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """The copy of a streamed call asks its upstream for one JSON answer: it was sent with the
    original's ``stream: true`` through the unary path and always ended 502 (invalid JSON)."""
    raw = with_experiment(simulator)
    raw["experiments"]["chat-ab"]["variants"]["candidate"].update(shadow=True, sample=1.0)
    with run_gateway(raw) as gateway:
        stream = gateway.client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        assert [c for c in stream]
        deadline = time.monotonic() + 10
        while not (copies := [r for r in gateway.sink.records if r.shadow_of is not None]):
            assert time.monotonic() < deadline, "the shadow copy never finished"
            time.sleep(0.05)
        (copy,) = copies
        assert (copy.variant, copy.provider, copy.status, copy.http_status, copy.stream) == \
            ("candidate", "sim2", "ok", 200, False)
        assert copy.usage is not None and copy.usage.completion_tokens > 0
