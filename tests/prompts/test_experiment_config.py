"""A variant that pins a prompt template version: what the config accepts and refuses, and how
the routing table and a call's assignment treat it (no gateway, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.incoming import Incoming
from app.calllog import CallRecord
from app.config import ConfigError, parse_config
from app.pipeline import Finisher, ModelCall, Pipeline, Snapshot
from app.pricing import PriceBook
from app.routing.experiments import VARIANT_KEY_HEADER


def raw(**variants: Any) -> dict[str, Any]:
    return {
        "providers": {"sim": {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                              "api_key": "sk-x"},
                      "sim2": {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                               "api_key": "sk-y"}},
        "models": {"chat": {"strategy": "least_busy",
                            "targets": [{"provider": "sim", "model": "m"}]}},
        "experiments": {"prompt-ab": {"model": "chat", "sticky": "header",
                                      "variants": variants}},
    }


def refused(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(config, {})
    return str(caught.value)


def test_a_prompt_variant_may_keep_the_models_targets() -> None:
    """Without ``targets`` a prompt variant serves from the model's own route (its strategy
    too); one with targets gets its own; the table keeps each variant's prompt."""
    config = parse_config(raw(v1={"prompt": {"version": 1}},
                              v2={"prompt": {"label": "staging"}, "weight": 3,
                                  "targets": [{"provider": "sim2", "model": "m2"}]}), {})
    snapshot = Snapshot.build(config, Pipeline(), {}, PriceBook({}))
    experiment = snapshot.table.experiment_of("chat")
    assert experiment is not None and experiment.pins_prompts
    v1, v2 = experiment.variants
    assert v1.route is snapshot.table.resolve("chat")
    assert v1.route.strategy == "least_busy"
    assert [(t.provider, t.model) for t in v2.route.targets] == [("sim2", "m2")]
    assert (v1.prompt and v1.prompt.version, v2.prompt and v2.prompt.label) == (1, "staging")


def test_an_experiment_without_prompts_pins_none() -> None:
    """Variants with targets only: the template stage leaves their assignment to routing."""
    config = parse_config(raw(a={"targets": [{"provider": "sim", "model": "m"}]},
                              b={"targets": [{"provider": "sim2", "model": "m"}]}), {})
    experiment = Snapshot.build(config, Pipeline(), {}, PriceBook({})).table \
        .experiment_of("chat")
    assert experiment is not None and not experiment.pins_prompts


@pytest.mark.parametrize(("variant", "problem"), [
    ({}, "a variant needs 'targets', or a 'prompt'"),
    ({"prompt": {}}, "give 'version' or 'label' (one of them)"),
    ({"prompt": {"version": 2, "label": "production"}}, "give 'version' or 'label'"),
    ({"prompt": {"version": 0}}, "greater than or equal to 1"),
    ({"prompt": {"version": "2"}}, "valid integer"),
    ({"prompt": {"label": "Not A Label"}}, "is not a label name"),
    ({"prompt": {"version": 1, "id": "x"}}, "prompt.id"),
    ({"prompt": {"version": 1}, "strategy": "least_busy"}, "'strategy' orders the variant"),
    ({"prompt": {"version": 1}, "shadow": True,
      "targets": [{"provider": "sim", "model": "m"}]}, "a shadow variant cannot pin"),
])
def test_bad_prompt_variants_are_refused(variant: dict[str, Any], problem: str) -> None:
    """Each mistake is refused when the config loads, at the variant's path."""
    message = refused(raw(good={"prompt": {"version": 1}}, bad=variant))
    assert problem in message
    assert "experiments.prompt-ab.variants.bad" in message


def call_on(snapshot: Snapshot, key: str) -> ModelCall:
    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    incoming = Incoming(path="/v1/chat/completions", headers={VARIANT_KEY_HEADER: key},
                        receive=receive)
    record = CallRecord(id=f"id-{key}", request_id=None, endpoint="/v1/chat/completions",
                        caller="master")
    return ModelCall(incoming=incoming, record=record, snapshot=snapshot, owner=Finisher())


def test_variant_of_is_the_experiments_own_sticky_assignment() -> None:
    """``ModelCall.variant_of`` gives what ``Experiment.assign`` gives for the sticky key, the
    same for the same key every time, and both variants over many keys."""
    config = parse_config(raw(v1={"prompt": {"version": 1}}, v2={"prompt": {"version": 2}}), {})
    snapshot = Snapshot.build(config, Pipeline(), {}, PriceBook({}))
    experiment = snapshot.table.experiment_of("chat")
    assert experiment is not None
    seen = set()
    for i in range(64):
        key = f"session-{i}"
        variant = call_on(snapshot, key).variant_of(experiment, user=None)
        assert variant is experiment.assign(f"header:{key}")
        assert call_on(snapshot, key).variant_of(experiment, user=None) is variant
        seen.add(variant.name)
    assert seen == {"v1", "v2"}
    call = call_on(snapshot, "session-1")
    before = (call.record.experiment, call.record.variant)
    assert before == (None, None)  # assigning records nothing; pinning does
    call.pin(experiment.variants[1].route, experiment="prompt-ab", variant="v2")
    assert (call.record.experiment, call.record.variant) == ("prompt-ab", "v2")
