"""An experiment that splits traffic between two prompt template versions, through a running
gateway with the openai SDK: both versions reach the upstream over many callers, one caller
always gets one version, and each call row carries the experiment, the variant and the version
that variant renders; the experiment report counts the versions per variant."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from app.calllog.cli import experiments
from app.config import parse_config
from app.main import create_app
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config
from tests.calllog.test_end_to_end import settings_for
from tests.prompts.test_gateway import SUMMARISE, V2, create, record_of
from tests.servers import serve

FIRST = "You summarise emails in 20 words."
SECOND = "Be terse about {text}."


def with_prompt_experiment(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator)
    raw["experiments"] = {"prompt-ab": {"model": "chat", "variants": {
        "v1": {"prompt": {"version": 1}},
        "v2": {"prompt": {"label": "candidate"}}}}}
    return raw


def setup(http: httpx.Client) -> None:
    create(http, SUMMARISE)
    assert http.post("/admin/prompts/summarise/versions", json=V2).status_code == 201
    assert http.put("/admin/prompts/summarise/labels/candidate",
                    json={"version": 2}).status_code == 200


def last_system_message(simulator: str) -> str:
    rows = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
    content: str = rows[0]["body"]["messages"][0]["content"]
    return content


def ask(gw: RunningGateway, user: str, text: str, **prompt: Any) -> Any:
    return gw.client().chat.completions.with_raw_response.create(
        model="chat", messages=[], user=user,
        extra_body={"prompt": {"id": "summarise", "variables": {"text": text}, **prompt}})


def test_a_split_renders_both_versions_and_each_user_keeps_one(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """40 users split 50/50: both versions reach the upstream, a user asked again (even for
    another version) gets the same one, and rows say experiment, variant and version."""
    with run_gateway(with_prompt_experiment(simulator)) as gw:
        setup(gw.http())
        version_of: dict[str, int] = {}
        for i in range(40):
            user = f"user-{i}"
            raw = ask(gw, user, f"t{i}")
            assert raw.parse().choices[0].message.content
            record = record_of(gw, raw)
            expected = {"v1": 1, "v2": 2}[record.variant]
            assert (record.experiment, record.prompt_id, record.prompt_version) == \
                ("prompt-ab", "summarise", expected)
            assert raw.headers["x-switchboard-variant"] == f"prompt-ab/{record.variant}"
            assert last_system_message(simulator) == (FIRST if expected == 1
                                                      else SECOND.format(text=f"t{i}"))
            row = record.to_row()
            assert (row["experiment"], row["variant"], row["prompt_version"]) == \
                ("prompt-ab", record.variant, expected)
            version_of[user] = expected
        split = Counter(version_of.values())
        assert set(split) == {1, 2} and min(split.values()) >= 8  # 50/50, so far from 0 of 40
        for i in range(0, 40, 5):  # again: a pinned version wins over the one asked for
            user = f"user-{i}"
            record = record_of(gw, ask(gw, user, "again", version=1))
            assert record.prompt_version == version_of[user]
            stream = gw.client().chat.completions.create(
                model="chat", messages=[], user=user, stream=True,
                extra_body={"prompt": {"id": "summarise", "label": "production",
                                       "variables": {"text": "s"}}})
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert last_system_message(simulator) == (FIRST if version_of[user] == 1
                                                      else SECOND.format(text="s"))


def test_the_report_compares_the_two_versions(simulator: str, tmp_path: Path) -> None:
    """With the call log on SQLite, the experiment report lists per variant the prompt versions
    its calls rendered: each variant exactly its own."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    app = create_app(settings, config=parse_config(with_prompt_experiment(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        setup(http)
        for i in range(30):
            answer = http.post("/v1/chat/completions", json={
                "model": "chat", "user": f"user-{i}", "messages": [],
                "prompt": {"id": "summarise", "variables": {"text": "x"}}})
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 20
        while True:  # rows reach the database through the call log's writer
            variants = http.get("/admin/experiments/prompt-ab").json()["variants"]
            if sum(v["calls"] for v in variants.values()) == 30 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert variants["v1"]["prompt_versions"] == {"summarise@1": variants["v1"]["calls"]}
        assert variants["v2"]["prompt_versions"] == {"summarise@2": variants["v2"]["calls"]}
        assert variants["v1"]["calls"] + variants["v2"]["calls"] == 30
        assert variants["v1"]["calls"] and variants["v2"]["calls"]
        printed = CliRunner().invoke(experiments, ["report", "prompt-ab", "--url", url,
                                                   "--key", MASTER_KEY])
        assert printed.exit_code == 0, printed.output
        assert f"prompt versions    summarise@1 ({variants['v1']['calls']})" in printed.output
        assert f"prompt versions    summarise@2 ({variants['v2']['calls']})" in printed.output


def test_calls_without_a_template_are_split_by_routing(run_gateway: GatewayFactory,
                                                       simulator: str) -> None:
    """A plain call to the model is still assigned a variant (by routing) and served by the
    model's targets; it renders nothing."""
    with run_gateway(with_prompt_experiment(simulator)) as gw:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "plain"}], user="u-plain")
        record = record_of(gw, raw)
        assert record.experiment == "prompt-ab" and record.variant in {"v1", "v2"}
        assert record.prompt_id is None and record.provider == "sim"


def test_a_variant_version_the_template_lacks_is_a_404_naming_the_variant(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A variant pinning a version the requested template does not have: 404 in OpenAI's shape
    naming the experiment and variant, never a 500."""
    with run_gateway(with_prompt_experiment(simulator)) as gw:
        create(gw.http(), SUMMARISE)  # no version 2, no label 'candidate'
        answers = [gw.http().post("/v1/chat/completions", json={
            "model": "chat", "user": f"u{i}", "messages": [],
            "prompt": {"id": "summarise", "variables": {"text": "x"}}}) for i in range(12)]
        assert {a.status_code for a in answers} == {200, 404}
        error = next(a for a in answers if a.status_code == 404).json()["error"]
        assert error["param"] == "prompt.id"
        assert "Experiment 'prompt-ab' variant 'v2'" in error["message"]
        assert "label 'candidate'" in error["message"]
        refused = record_of(gw, next(a for a in answers if a.status_code == 404))
        # the template is known, the version it would render is not
        assert (refused.prompt_id, refused.prompt_version) == ("summarise", None)
        assert (refused.experiment, refused.variant) == ("prompt-ab", "v2")
