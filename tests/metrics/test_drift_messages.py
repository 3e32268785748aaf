"""``/v1/messages`` answers feed drift like chat ones, through a running gateway: translated
for an OpenAI-style target and native for an Anthropic one, unary and streamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import MASTER_KEY, sim_config
from tests.metrics.scrape import value
from tests.metrics.test_drift_e2e import Caller
from tests.metrics.test_endpoint import gateway

SCHEMA: Any = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
               "additionalProperties": False}


def config(simulator: str) -> dict[str, Any]:
    raw = sim_config(
        simulator,
        refuser={"targets": [{"provider": "refusing", "model": "gpt-4o-mini"}]},
        claude={"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]})
    raw["providers"]["refusing"] = {"type": "openai", "base_url": simulator + "/v1",
                                    "api_key": "sk-r", "headers": {"X-Sim-Refusal": "1"}}
    raw["providers"]["claude"] = {"type": "anthropic", "base_url": simulator,
                                  "api_key": "sk-ant-secret"}
    return raw


def message(http: httpx.Client, model: str, **extra: Any) -> None:
    body = {"model": model, "max_tokens": 50,
            "messages": [{"role": "user", "content": "Say something."}], **extra}
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


def test_messages_answers_feed_every_drift_signal(tmp_path: Path, simulator: str) -> None:
    with gateway(tmp_path, config(simulator)) as url, Caller(url) as caller:
        http = caller.http
        headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
        http.headers.update(headers)
        message(http, "refuser")
        message(http, "refuser", stream=True)
        message(http, "claude")
        message(http, "claude", stream=True)
        message(http, "claude", output_config={"format": {"type": "json_schema",
                                                          "schema": SCHEMA}})
        samples = caller.samples()
        targets = {t["model"]: t for t in http.get("/admin/drift").json()["targets"]}
    refuser = {"model": "refuser", "provider": "refusing", "upstream_model": "gpt-4o-mini"}
    assert value(samples, "switchboard_completion_tokens_count", **refuser) == 2
    assert value(samples, "switchboard_refusals_total", **refuser) == 2
    assert value(samples, "switchboard_finish_reasons_total", **refuser) == 2
    assert value(samples, "switchboard_upstream_model_info", **refuser) == 1
    claude = {"model": "claude", "provider": "claude", "upstream_model": "claude-sonnet-4-5"}
    assert value(samples, "switchboard_completion_tokens_count", **claude) == 3
    assert value(samples, "switchboard_refusals_total", **claude) == 0
    assert value(samples, "switchboard_finish_reasons_total", reason="stop", **claude) == 3
    assert value(samples, "switchboard_json_answers_total", valid="true", **claude) == 1
    assert value(samples, "switchboard_upstream_model_info",
                 response_model="claude-sonnet-4-5", **claude) == 1
    assert targets["refuser"]["capturing"] == 2
    assert targets["claude"]["version"]["model"] == "claude-sonnet-4-5"
