"""Prompt templates through a running gateway: the openai SDK names a template, the simulator
receives the rendered messages (and never the ``prompt`` field), the call record carries the
version; labels moved and rolled back through the admin API change what is served; errors are
400/404 in OpenAI's shape naming the field; the admin API needs an admin key."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from app.config import parse_config
from app.db.models import PromptLabel
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config
from tests.calllog.test_end_to_end import settings_for
from tests.servers import serve

SUMMARISE = {
    "id": "summarise",
    "labels": ["production"],
    "version": {
        "messages": [
            {"role": "system", "content": "You summarise {{ kind }} in {{ words }} words."},
            {"role": "user", "content": "Summarise:\n{{ text }}\n(\\{{ not a placeholder }})"},
        ],
        "variables": {"kind": {"type": "string", "default": "emails"},
                      "words": {"type": "integer", "default": 20},
                      "text": {"type": "string"}},
        "params": {"max_tokens": 7, "temperature": 0.3},
        "author": "ada", "note": "first cut",
    },
}
V2 = {"messages": [{"role": "system", "content": "Be terse about {{ text }}."}],
      "variables": {"text": {"type": "string"}}, "note": "shorter"}


def nested(levels: int) -> Any:
    """``1`` inside ``levels`` nested lists."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def received(simulator: str, n: int = 1) -> list[dict[str, Any]]:
    """The bodies of the last ``n`` requests the simulator received."""
    rows: list[dict[str, Any]] = httpx.get(f"{simulator}/_sim/requests?limit={n}").json()
    return [row["body"] for row in rows]


def create(http: httpx.Client, template: dict[str, Any] = SUMMARISE) -> dict[str, Any]:
    created = http.post("/admin/prompts", json=template)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def ask(gw: RunningGateway, prompt: dict[str, Any], **kwargs: Any) -> Any:
    return gw.client().chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "chat"), messages=kwargs.pop("messages", []),
        extra_body={"prompt": prompt}, **kwargs)


def record_of(gw: RunningGateway, raw: Any) -> Any:
    call_id = raw.headers["x-switchboard-call-id"]
    return next(r for r in gw.sink.records if r.id == call_id)


def test_rendered_messages_reach_the_upstream(run_gateway: GatewayFactory,
                                              simulator: str) -> None:
    """Template messages first, the client's after; defaults and params applied where the
    client sent none; ``prompt`` removed; the record names the version."""
    with run_gateway(sim_config(simulator)) as gw:
        create(gw.http())
        payload = "{{ kind }} {% raw %}{{ 7*7 }}"
        raw = ask(gw, {"id": "summarise", "variables": {"text": payload, "words": 5}},
                  messages=[{"role": "user", "content": "Thanks!"}], temperature=0.9)
        assert raw.parse().choices[0].message.content
        body = received(simulator)[0]
        assert "prompt" not in body
        assert body["messages"] == [
            {"role": "system", "content": "You summarise emails in 5 words."},
            {"role": "user", "content": f"Summarise:\n{payload}\n({{{{ not a placeholder }}}})"},
            {"role": "user", "content": "Thanks!"}]
        assert body["max_tokens"] == 7 and body["temperature"] == 0.9  # the client's wins
        record = record_of(gw, raw)
        assert (record.prompt_id, record.prompt_version) == ("summarise", 1)
        assert record.to_row()["prompt_version"] == 1


def test_labels_move_and_roll_back(run_gateway: GatewayFactory, simulator: str) -> None:
    """A version asked for by number or label; moving the label changes the next call at
    once (moving it again to the same version changes nothing); a rollback puts it back;
    ``latest`` is the highest version; streams too."""
    with run_gateway(sim_config(simulator)) as gw:
        http = gw.http()
        create(http)
        added = http.post("/admin/prompts/summarise/versions", json=V2)
        assert added.status_code == 201 and added.json()["version"] == 2
        assert record_of(gw, ask(gw, {"id": "summarise", "variables": {"text": "a"}})) \
            .prompt_version == 1
        moved = http.put("/admin/prompts/summarise/labels/production", json={"version": 2})
        assert moved.json()["from_version"] == 1 and moved.json()["to_version"] == 2
        assert moved.json()["changed"] is True
        again = http.put("/admin/prompts/summarise/labels/production", json={"version": 2})
        assert again.status_code == 200
        assert (again.json()["to_version"], again.json()["changed"]) == (2, False)
        raw = ask(gw, {"id": "summarise", "label": "production", "variables": {"text": "b"}})
        assert record_of(gw, raw).prompt_version == 2
        assert received(simulator)[0]["messages"] == [
            {"role": "system", "content": "Be terse about b."}]
        back = http.post("/admin/prompts/summarise/labels/production/rollback")
        assert back.json()["to_version"] == 1 and back.json()["rollback"] is True
        assert record_of(gw, ask(gw, {"id": "summarise", "variables": {"text": "c"}})) \
            .prompt_version == 1
        assert record_of(gw, ask(gw, {"id": "summarise", "label": "latest",
                                      "variables": {"text": "d"}})).prompt_version == 2
        stream = gw.client().chat.completions.create(
            model="chat", messages=[], stream=True,
            extra_body={"prompt": {"id": "summarise", "version": 2,
                                   "variables": {"text": "e"}}})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert received(simulator)[0]["messages"][0]["content"] == "Be terse about e."
        template = http.get("/admin/prompts/summarise").json()
        assert template["labels"] == {"production": 1}
        assert [(m["from_version"], m["to_version"]) for m in template["label_history"]] == \
            [(None, 1), (1, 2), (2, 1)]
        diff = http.get("/admin/prompts/summarise/diff", params={"from": 1, "to": 2}).json()
        assert "+Be terse about {{ text }}." in diff["messages"]
        assert diff["fields"]["note"] == {"from": "first cut", "to": "shorter"}
        assert diff["fields"]["variables.words"]["to"] is None


@pytest.mark.parametrize(("prompt", "status", "param", "code"), [
    ({"id": "nope"}, 404, "prompt.id", "prompt_not_found"),
    ({"id": "summarise", "version": 9, "variables": {"text": "x"}}, 404, "prompt.version",
     "prompt_version_not_found"),
    ({"id": "summarise", "label": "staging"}, 404, "prompt.label", "prompt_label_not_found"),
    ({"id": "summarise"}, 400, "prompt.variables.text", "invalid_prompt_variables"),
    ({"id": "summarise", "variables": {"text": 3}}, 400, "prompt.variables.text",
     "invalid_prompt_variables"),
    ({"id": "summarise", "variables": {"text": "x", "secret": "hunter2"}}, 400,
     "prompt.variables.secret", "invalid_prompt_variables"),
    ({"id": "summarise", "version": 1, "label": "production"}, 400, "prompt.label",
     "invalid_prompt"),
    ({"id": "summarise", "version": "1"}, 400, "prompt.version", "invalid_prompt"),
    ({"id": "summarise", "vars": {}}, 400, "prompt.vars", "invalid_prompt"),
    ({"id": "summarise", "variables": {"text": "x", "deep": nested(300)}}, 400,
     "prompt.variables.deep" + "[0]" * 61, "nesting_too_deep"),
    ("summarise", 400, "prompt", "invalid_prompt"),
])
def test_bad_prompts_are_precise_errors(run_gateway: GatewayFactory, simulator: str,
                                        prompt: Any, status: int, param: str,
                                        code: str) -> None:
    """Unknown template/version/label 404, bad variables or a malformed field 400, in OpenAI's
    shape naming the field; no value is echoed; nothing reaches the upstream; the call's row
    names its model and that it streams."""
    with run_gateway(sim_config(simulator)) as gw:
        create(gw.http())
        before = httpx.get(f"{simulator}/_sim/stats").json()
        reply = gw.http().post("/v1/chat/completions", headers={"x-request-id": "bad-prompt"},
                               json={"model": "chat", "messages": [], "stream": True,
                                     "prompt": prompt})
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert (error["param"], error["code"]) == (param, code)
        assert "hunter2" not in reply.text
        assert httpx.get(f"{simulator}/_sim/stats").json() == before
        record = gw.sink.by_id("bad-prompt")  # refused before it parsed, under its model
        read = code != "nesting_too_deep"  # that body is refused as it is read
        assert (record.http_status, record.public_model, record.stream) == (
            (status, "chat", True) if read else (status, None, False))


def test_template_model_applies_and_key_model_list_holds(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """A request without a model gets the template's, and a key that may not use that model
    is refused (403); the SDK's errors map (404 -> NotFoundError); /v1/messages refuses
    ``prompt``."""
    with run_gateway(sim_config(simulator)) as gw:
        http = gw.http()
        create(http, {"id": "m", "version": {"messages": [{"role": "user", "content": "hi"}],
                                            "model": "chat"}, "labels": ["production"]})
        reply = http.post("/v1/chat/completions", json={"prompt": {"id": "m"}})
        assert reply.status_code == 200, reply.text
        assert received(simulator)[0]["messages"] == [{"role": "user", "content": "hi"}]
        key = http.post("/admin/keys", json={"name": "e", "models": ["embed"]}).json()["key"]
        refused = httpx.post(gw.url + "/v1/chat/completions", json={"prompt": {"id": "m"}},
                             headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
        with pytest.raises(openai.NotFoundError):
            ask(gw, {"id": "missing"})
        native = http.post("/v1/messages", json={
            "model": "chat", "max_tokens": 5, "prompt": {"id": "m"},
            "messages": [{"role": "user", "content": "x"}]})
        assert native.status_code == 400
        assert native.json()["error"]["type"] == "invalid_request_error"


def test_admin_api_needs_an_admin_and_checks_input(run_gateway: GatewayFactory,
                                                   simulator: str) -> None:
    """No key 401, a non-admin key 403; a template that could not render 400 naming the field;
    a version is never changed (PUT/PATCH/DELETE 405); an unknown one 404 (naming the diff's
    ``from`` or ``to`` when it asked for it)."""
    with run_gateway(sim_config(simulator)) as gw:
        http = gw.http()
        assert httpx.get(gw.url + "/admin/prompts").status_code == 401
        key = http.post("/admin/keys", json={"name": "user"}).json()["key"]
        denied = httpx.get(gw.url + "/admin/prompts", headers={"Authorization": f"Bearer {key}"})
        assert denied.status_code == 403
        create(http)
        bad = http.post("/admin/prompts/summarise/versions", json={
            "messages": [{"role": "user", "content": "{{ user.name }}"}]})
        assert bad.status_code == 400 and "does not open" in bad.json()["error"]["message"]
        assert bad.json()["error"]["param"] == "messages.0.content"
        undeclared = http.post("/admin/prompts", json={
            "id": "u", "version": {"messages": [{"role": "user", "content": "{{ x }}"}]}})
        assert undeclared.status_code == 400
        assert undeclared.json()["error"]["param"] == "version.messages.0.content"
        body = {"messages": [{"role": "user", "content": "{{ j }}"}],
                "variables": {"j": {"type": "json", "default": nested(300)}}}
        for path, sent, param in (("/admin/prompts", {"id": "deep300", "version": body},
                                   "version.variables.j.default"),
                                  ("/admin/prompts/summarise/versions", body,
                                   "variables.j.default")):
            too_deep = http.post(path, json=sent)
            assert too_deep.status_code == 400, too_deep.text
            assert too_deep.json()["error"]["param"] == param
            assert "nests deeper than 64 levels" in too_deep.json()["error"]["message"]
        nan = http.post("/admin/prompts/summarise/versions", content=(
            '{"messages": [{"role": "user", "content": "{{ r }}"}], '
            '"variables": {"r": {"type": "number", "default": NaN}}}'),
            headers={"content-type": "application/json"})
        assert nan.status_code == 400 and nan.json()["error"]["param"] == "variables.r.default"
        assert "finite number, got NaN" in nan.json()["error"]["message"]
        for method in ("PUT", "PATCH", "DELETE"):
            assert http.request(method, "/admin/prompts/summarise/versions/1",
                                json=V2).status_code == 405
        missing = http.get("/admin/prompts/summarise/versions/5")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "version"
        for query, param in (({"from": 1, "to": 9}, "to"), ({"from": 9, "to": 1}, "from")):
            unknown = http.get("/admin/prompts/summarise/diff", params=query)
            assert unknown.status_code == 404 and unknown.json()["error"]["param"] == param
            assert unknown.json()["error"]["code"] == "prompt_version_not_found"
        unknown = http.get("/admin/prompts/nope/diff", params={"from": 1, "to": 2})
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "template_id"
        taken = http.post("/admin/prompts", json=SUMMARISE)
        assert taken.status_code == 409
        assert (taken.json()["error"]["type"], taken.json()["error"]["code"]) == (
            "invalid_request_error", "prompt_exists")
        listed = http.get("/admin/prompts").json()["data"]
        assert [(t["id"], t["latest_version"], t["labels"]) for t in listed] == \
            [("summarise", 1, {"production": 1})]
        assert http.put("/admin/prompts/summarise/labels/Bad Label",
                        json={"version": 1}).status_code == 400
        assert http.put("/admin/prompts/summarise/labels/latest",
                        json={"version": 1}).status_code == 400


@pytest.mark.parametrize(("params", "field"), [
    ({"n": 5}, "n"), ({"max_tokens": 1001}, "max_tokens"),
    ({"max_completion_tokens": 1001}, "max_completion_tokens"),
], ids=["n", "max_tokens", "max_completion_tokens"])
def test_params_every_call_would_refuse_are_refused(run_gateway: GatewayFactory, simulator: str,
                                                    params: dict[str, Any], field: str) -> None:
    """A version's ``n`` past ``limits.max_n``, or a token limit past ``limits.max_tokens``,
    is a 400 naming it when the version is created (every call would be refused); within
    them, and with a field the request parser does not know (forwarded, as a client's extra
    fields are), it is created and its calls succeed."""
    config = {**sim_config(simulator), "limits": {"max_n": 4, "max_tokens": 1000}}
    with run_gateway(config) as gw:
        http = gw.http()
        version = {**SUMMARISE["version"], "params": params}  # type: ignore[dict-item]
        refused = http.post("/admin/prompts", json={"id": "over", "version": version})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == (f"version.params.{field}", "invalid_prompt")
        assert "limits.max_" in error["message"]
        create(http)
        refused = http.post("/admin/prompts/summarise/versions", json=version)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == \
            f"params.{field}"
        fits = {**version, "params": {"n": 4, "max_tokens": 1000, "top_k": 40}}
        added = http.post("/admin/prompts/summarise/versions", json=fits)
        assert added.status_code == 201, added.text
        raw = ask(gw, {"id": "summarise", "version": 2, "variables": {"text": "a"}})
        assert raw.http_response.status_code == 200
        body = received(simulator)[0]
        assert (body["n"], body["max_tokens"], body["top_k"]) == (4, 1000, 40)


def test_call_log_rows_carry_the_version(simulator: str, tmp_path: Path) -> None:
    """With the call log on SQLite, rows store prompt_id and prompt_version, and
    /admin/calls filters by them."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane) as url, httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as http:
        create(http)
        http.post("/admin/prompts/summarise/versions", json=V2)
        for version in (1, 2, 2):
            reply = http.post("/v1/chat/completions", json={
                "model": "chat", "messages": [],
                "prompt": {"id": "summarise", "version": version, "variables": {"text": "t"}}})
            assert reply.status_code == 200, reply.text
        http.post("/v1/chat/completions",
                  json={"model": "chat", "messages": [{"role": "user", "content": "plain"}]})
        deadline = time.monotonic() + 30
        while True:
            rows = http.get("/admin/calls", params={"prompt_id": "summarise"}).json()["data"]
            if len(rows) == 3:
                break
            assert time.monotonic() < deadline, "rows not stored in time"
            time.sleep(0.05)
        assert sorted(r["prompt_version"] for r in rows) == [1, 2, 2]
        second = http.get("/admin/calls", params={"prompt_id": "summarise",
                                                  "prompt_version": 2}).json()["data"]
        assert len(second) == 2
        assert http.get("/admin/calls", params={"prompt_version": 0}).status_code == 400


def test_a_render_past_the_body_limit_is_a_413(run_gateway: GatewayFactory,
                                               simulator: str) -> None:
    """A 1 KB value in 20,000 placeholders (20 MB of messages) is a 413 ``prompt_too_large``
    in OpenAI's shape naming the variable; nothing reaches the upstream; the call is one
    record with the version and the reason. Under the limit the same version renders."""
    with run_gateway(sim_config(simulator)) as gw:
        http = gw.http()
        create(http, {"id": "amplify", "version": {
            "messages": [{"role": "user", "content": "{{a}}" * 20_000}],
            "variables": {"a": {"type": "string"}}}})
        before = httpx.get(f"{simulator}/_sim/stats").json()
        reply = http.post("/v1/chat/completions", json={
            "model": "chat", "messages": [],
            "prompt": {"id": "amplify", "version": 1, "variables": {"a": "x" * 1000}}})
        assert reply.status_code == 413, reply.text
        error = reply.json()["error"]
        assert (error["type"], error["param"], error["code"]) == \
            ("invalid_request_error", "prompt.variables.a", "prompt_too_large")
        assert "20000000 bytes" in error["message"] and "8388608" in error["message"]
        assert httpx.get(f"{simulator}/_sim/stats").json() == before
        call_id = reply.headers["x-switchboard-call-id"]
        records = [r for r in gw.sink.records if r.id == call_id]
        assert len(records) == 1
        record = records[0]
        assert (record.http_status, record.prompt_id, record.prompt_version) == \
            (413, "amplify", 1)
        assert record.error_message == error["message"]
        fits = ask(gw, {"id": "amplify", "version": 1, "variables": {"a": "y"}})
        assert received(simulator)[0]["messages"][0]["content"] == "y" * 20_000
        assert record_of(gw, fits).http_status == 200


def test_prompts_unavailable_says_when_to_retry(run_gateway: GatewayFactory, simulator: str,
                                                tmp_path: Path) -> None:
    """A label the worker has not read while the database fails: 503 ``prompts_unavailable``
    with ``Retry-After: 2`` (as ``keys_unavailable``); a gateway with no database at all
    (call log off) 503 with ``x-should-retry: false``, on the request path and the admin
    API, since retrying cannot help."""
    with run_gateway(sim_config(simulator)) as gw:
        create(gw.http())
        with sqlite3.connect(tmp_path / "calls.db", timeout=30) as db:
            db.execute(f"ALTER TABLE {PromptLabel.__tablename__} RENAME TO away")
        reply = gw.http().post("/v1/chat/completions", json={
            "model": "chat", "messages": [],
            "prompt": {"id": "summarise", "variables": {"text": "x"}}})
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "prompts_unavailable"
        assert reply.headers["retry-after"] == "2"
        assert "x-should-retry" not in reply.headers
    settings = Settings(master_key=SecretStr(MASTER_KEY), config=None, call_log=False,
                        spool_dir=tmp_path / "spool")
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane) as url, httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as http:
        for reply in (http.post("/v1/chat/completions", json={
                          "model": "chat", "messages": [], "prompt": {"id": "summarise"}}),
                      http.get("/admin/prompts")):
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "prompts_unavailable"
            assert reply.headers["x-should-retry"] == "false"
            assert "retry-after" not in reply.headers


def test_a_wrong_labels_404_lists_the_labels_to_admins_only(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    """Templates are not scoped to keys: a non-admin key may render any template, so the 404
    of a label the template lacks does not list the template's labels to it (nor say it has
    none); an admin caller is told them."""
    with run_gateway(sim_config(simulator)) as gw:
        http = gw.http()
        create(http)
        create(http, {"id": "bare", "version": {"messages": [{"role": "user", "content": "hi"}]}})
        key = http.post("/admin/keys", json={"name": "user"}).json()["key"]
        for template, says in (("summarise", " (its labels: production)."),
                               ("bare", " (it has no labels).")):
            body = {"model": "chat", "messages": [],
                    "prompt": {"id": template, "label": "staging"}}
            told = http.post("/v1/chat/completions", json=body)
            assert told.status_code == 404
            assert told.json()["error"]["message"].endswith(f"no label 'staging'{says}")
            untold = httpx.post(gw.url + "/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {key}"})
            assert untold.status_code == 404
            error = untold.json()["error"]
            assert (error["param"], error["code"]) == ("prompt.label", "prompt_label_not_found")
            assert error["message"] == f"Prompt template '{template}' has no label 'staging'."
