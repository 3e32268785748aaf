"""``app.config_diff.changes``: one line per change, secrets (``SecretStr`` fields, header
values, values written with ``${...}``) never shown, experiments per experiment and setting."""

from __future__ import annotations

from typing import Any

from app.config import parse_config
from app.config_diff import changes


def raw(**openai: Any) -> dict[str, Any]:
    return {"providers": {"openai": {"type": "openai", **openai}, "gpu": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}}}


def diff(old: dict[str, Any], new: dict[str, Any], env: dict[str, str] | None = None,
         ) -> list[str]:
    return changes(parse_config(old, env or {}), parse_config(new, env or {}))


def test_header_values_are_secrets_and_their_names_are_shown() -> None:
    """Headers added, changed and removed are named; their values never shown, even literal
    ones (any header may carry a credential)."""
    before = raw(headers={"X-Title": "old-title", "X-Gone": "gone-value"})
    after = raw(headers={"X-Title": "new-title", "Helicone-Auth": "Bearer sk-literal-123"})
    lines = diff(before, after)
    assert lines == ["provider openai: headers.Helicone-Auth added (secret)",
                     "provider openai: headers.X-Gone removed",
                     "provider openai: headers.X-Title changed (secret)"]


def test_a_referenced_value_is_a_secret_wherever_it_is() -> None:
    """A value written with ``${NAME}`` reads ``(secret)``: a target's param, a base URL, a
    setting holding one in a list; a literal param is shown."""
    env = {"TOKEN": "tok-123456", "URL": "http://h:1/v1"}
    before = raw()
    after = raw(base_url="${URL}")
    after["models"]["chat"]["targets"][0]["params"] = {"api_token": "${TOKEN}", "top_k": 40}
    after["calllog"] = {"redact_keys": ["api_key", "${TOKEN}"]}
    lines = diff(before, after, env)
    assert lines == [
        "provider openai: base_url changed (secret)",
        "model chat: target openai/gpt-4o-mini: params.api_token added (secret)",
        "model chat: target openai/gpt-4o-mini: params.top_k added (40)",
        "calllog.redact_keys changed (secret) (takes effect on restart)"]
    assert not any("tok-123456" in line or "h:1" in line for line in lines)
    # changed from a reference to a literal: still never shown (the old value was one)
    literal = raw(base_url="http://other:2/v1")
    assert diff(after, literal, env)[0] == "provider openai: base_url changed (secret)"


def test_an_api_key_and_a_changed_provider_type_show_no_value() -> None:
    """A ``SecretStr`` field reads ``changed (secret)``; a provider whose type changed is named
    by its types, its settings (headers among them) not dumped."""
    assert diff(raw(api_key="sk-a-1"), raw(api_key="sk-b-2")) == [
        "provider openai: api_key changed (secret)"]
    retyped = raw()
    retyped["providers"]["openai"] = {"type": "mock", "headers": {"Authorization": "sk-x-9"}}
    lines = diff(raw(), retyped)
    assert lines == ["provider openai: type openai -> mock (its other settings replaced)"]


def test_experiments_are_diffed_per_experiment_and_setting() -> None:
    """An experiment added or removed is one line; a changed one, a line per setting, variant
    and variant target."""
    arms = {"a": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            "b": {"targets": [{"provider": "gpu", "model": "mock-chat"}]}}
    before = raw()
    after = {**raw(), "experiments": {"e1": {"model": "chat", "variants": arms}}}
    assert diff(before, after) == ["experiment e1: added (model chat, variants a, b)"]
    assert diff(after, before) == ["experiment e1: removed"]
    edited = {**raw(), "experiments": {"e1": {"model": "chat", "sticky": "key", "variants": {
        "a": {"weight": 3, "targets": [{"provider": "openai", "model": "gpt-4o-mini",
                                        "params": {"seed": 1}}]},
        "c": {"targets": [{"provider": "gpu", "model": "mock-chat"}]}}}}}
    assert diff(after, edited) == [
        "experiment e1: sticky user -> key",
        "experiment e1: variants.a.weight 1.0 -> 3.0",
        "experiment e1: variants.a target openai/gpt-4o-mini: params.seed added (1)",
        "experiment e1: variants.b removed",
        "experiment e1: variants.c added (targets gpu/mock-chat)"]
