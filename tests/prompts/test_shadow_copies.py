"""A shadow copy of a call that rendered a prompt template records the version its messages came
from, as its original does (README "Prompt templates": every call that uses one records which
version produced its answer); the per-version metrics count the clients' calls only."""

from __future__ import annotations

import time

from app.calllog import CallRecord
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
from tests.api.conftest import GatewayFactory, sim_config
from tests.prompts.test_gateway import ask, create, record_of


def test_a_shadow_copy_records_its_originals_prompt_version(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    """The copy (sent the rendered messages, not the ``prompt`` field) carries the original's
    ``prompt_id`` and ``prompt_version``."""
    raw = sim_config(simulator)
    raw["experiments"] = {"shadowed": {"model": "chat", "variants": {
        "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "candidate": {"shadow": True, "targets": [{"provider": "sim", "model": "gpt-4o"}]}}}}
    with run_gateway(raw) as gw:
        create(gw.http())
        original = record_of(gw, ask(gw, {"id": "summarise", "variables": {"text": "hi"}}))
        deadline = time.monotonic() + 10
        while not (copies := [r for r in gw.sink.records if r.shadow_of == original.id]):
            assert time.monotonic() < deadline, "no shadow copy was recorded"
            time.sleep(0.05)
    (copy,) = copies
    assert (original.prompt_id, original.prompt_version) == ("summarise", 1)
    assert (copy.status, copy.variant, copy.target_model) == ("ok", "candidate", "gpt-4o")
    assert (copy.prompt_id, copy.prompt_version) == ("summarise", 1)
    assert (copy.to_row()["prompt_id"], copy.to_row()["prompt_version"]) == ("summarise", 1)


def test_the_version_metrics_leave_shadow_copies_out() -> None:
    """A copy names its original's version, but another model answered it: the version's
    calls and tokens are the clients' alone."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"])
    for call_id, shadow_of in (("orig", None), ("copy", "orig")):
        recorder.observe(CallRecord(id=call_id, endpoint="/v1/chat/completions",
                                    caller="master", public_model="chat", provider="sim",
                                    prompt_id="summarise", prompt_version=1, latency_ms=5.0,
                                    shadow_of=shadow_of))
    recorder.drain()
    assert metrics.registry.get_sample_value("switchboard_prompt_calls_total", {
        "prompt": "summarise@v1", "status_class": "2xx"}) == 1
