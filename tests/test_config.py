"""Config validation: strict keys with paths, ${ENV} interpolation, the embedded default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError, embedded_config, load_config, parse_config
from app.providers.openai import OpenAIProvider


def base(**provider: Any) -> dict[str, Any]:
    return {"providers": {"p": {"type": "openai", **provider}},
            "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}


def test_env_references_are_interpolated_with_defaults() -> None:
    """${VAR} and ${VAR:-default} are replaced before validation."""
    config = parse_config(base(api_key="${KEY}", base_url="${URL:-http://h:1/v1}"),
                          {"KEY": "sk-1"})
    provider = config.providers["p"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-1"
    assert provider.base_url == "http://h:1/v1"


def test_a_default_stands_in_for_an_empty_variable_as_in_sh() -> None:
    """${VAR:-default} gives the default when VAR is unset or set to the empty string (sh and
    docker compose ``:-``); a set, non-empty VAR wins."""
    raw = base(api_key="${KEY:-sk-default}", base_url="${URL:-http://h:1/v1}")
    raw["models"]["m"]["targets"][0]["model"] = "${MODEL:-x}"
    for env in ({}, {"KEY": "", "URL": "", "MODEL": ""}):
        config = parse_config(raw, env)
        provider = config.providers["p"]
        assert isinstance(provider, OpenAIProvider) and provider.api_key is not None
        assert provider.api_key.get_secret_value() == "sk-default"
        assert provider.base_url == "http://h:1/v1"
        assert config.models["m"].targets[0].model == "x"
    provider = parse_config(raw, {"KEY": "sk-set"}).providers["p"]
    assert isinstance(provider, OpenAIProvider) and provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-set"


def test_an_empty_secret_or_setting_is_refused_with_its_path(tmp_path: Path) -> None:
    """An API key that is the empty string (an empty variable or secret file, or written so),
    and any other empty text setting of a provider (nested ones too), is refused naming each
    path on a line of its own."""
    empty_file = tmp_path / "key"
    empty_file.write_text("\n")
    raw = {"providers": {
        "p": {"type": "openai", "api_key": "${KEY}", "organization": ""},
        "f": {"type": "anthropic", "api_key": f"${{file:{empty_file}}}"},
        "az": {"type": "azure_openai", "endpoint": "https://r.openai.azure.com",
               "api_version": "", "auth": {"type": "client_secret", "tenant_id": "t",
                                           "client_id": "c", "client_secret": "${SECRET:-}"}}},
        "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {"KEY": ""})
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "providers.p.api_key", "providers.p.organization", "providers.f.api_key",
        "providers.az.auth.client_secret", "providers.az.api_version"]
    assert all(line.endswith(": is empty (a ${VAR} set to the empty string, or an empty "
                             "${file:...}, gives an empty value)") for line in lines)


def test_several_problems_are_one_line_each() -> None:
    """Problems found together (three bad URLs, two unknown target providers) are listed one
    per line, each with its path, not joined on one line."""
    urls: dict[str, Any] = {
        "providers": {name: {"type": "openai", "base_url": "nope"} for name in "abc"},
        "models": {}}
    with pytest.raises(ConfigError) as caught:
        parse_config(urls, {})
    assert str(caught.value).splitlines() == [
        f"providers.{name}.base_url: not an http:// or https:// URL" for name in "abc"]
    raw = base()
    raw["models"]["m"]["targets"] = [{"provider": "p", "model": "x"},
                                     {"provider": "g1", "model": "y"},
                                     {"provider": "g2", "model": "y"}]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert [line.split(":")[0] for line in str(caught.value).splitlines()] == [
        "models.m.targets.1.provider", "models.m.targets.2.provider"]


def test_secrets_do_not_print() -> None:
    """A provider key never shows in the config's repr."""
    config = parse_config(base(api_key="sk-hidden"), {})
    assert "sk-hidden" not in repr(config)


def test_unknown_provider_in_target_is_named() -> None:
    """A target naming a missing provider is an error with its path."""
    raw = base()
    raw["models"]["m"]["targets"].append({"provider": "ghost", "model": "y"})
    with pytest.raises(ConfigError, match=r"models\.m\.targets\.1\.provider: no provider named"):
        parse_config(raw, {})


def test_unknown_type_and_bad_values_are_errors() -> None:
    """An unknown provider type or an out-of-range value is rejected with its path."""
    with pytest.raises(ConfigError, match=r"providers\.p"):
        parse_config({"providers": {"p": {"type": "nope"}}, "models": {}}, {})
    with pytest.raises(ConfigError, match=r"limits\.max_n"):
        parse_config({**base(), "limits": {"max_n": 0}}, {})
    with pytest.raises(ConfigError, match="targets"):
        parse_config({"providers": {"p": {"type": "mock"}}, "models": {"m": {"targets": []}}}, {})
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["not", "a", "mapping"], {})


def test_an_unknown_type_is_named_by_its_path_without_quoting_it(tmp_path: Path) -> None:
    """A provider's or an Azure auth's ``type`` that is no known type (a ``${VAR}`` or
    ``${file:}`` secret put in the wrong place, say) is refused naming its path and the types
    there, never the value (pydantic's own message quoted it: check-config, the reload log and
    ``/admin/config`` then showed the secret)."""
    secret = tmp_path / "secret"
    secret.write_text("sk-from-a-file-0123456789")
    raw = {"providers": {
        "e": {"type": "${KEY}", "api_key": "x"},
        "d": {"type": "azure_openai", "endpoint": "https://x.example.com",
              "api_version": "2024-10-21", "auth": {"type": f"${{file:{secret}}}"}}},
        "models": {}}
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, {"KEY": "sk-from-the-env-0123456789"})
    message = str(raised.value)
    assert "sk-from" not in message
    lines = message.splitlines()
    assert "providers.e.type: unknown type; expected one of: 'openai', 'anthropic'" in message
    assert any(line.startswith("providers.d.auth.type: unknown type; expected one of: ")
               and "'client_secret'" in line for line in lines), lines


def test_embedded_default_adds_keyed_providers() -> None:
    """The embedded config serves mock models, plus OpenAI's when its key is set."""
    assert set(embedded_config({}).models) == {"mock-chat", "mock-embed"}
    keyed = embedded_config({"OPENAI_API_KEY": "sk-x"})
    assert "gpt-4o-mini" in keyed.models and keyed.providers["openai"].type == "openai"


@pytest.mark.parametrize(("text", "message"), [
    ("providers:\n  p: {type: mock}\nmodels:\n  chat2: {targets: [{provider: p, model: a}]}\n"
     "  chat: {targets: [{provider: p, model: a}]}\n  chat2: {targets: [{provider: p, model: b}]}"
     "\n", "duplicate key 'chat2' on line 6 (first on line 4)"),
    ("providers:\n  p: {type: mock}\n  p: {type: openai}\nmodels: {}\n",
     "duplicate key 'p' on line 3 (first on line 2)"),
    ("providers: {p: {type: mock, type: openai}}\nmodels: {}\n",
     "duplicate key 'type' on line 1 (first on line 1)"),
])
def test_a_repeated_key_is_refused_with_its_line(tmp_path: Path, text: str,
                                                 message: str) -> None:
    """A mapping that repeats a key is an error naming the key and its lines (PyYAML alone
    keeps the last one)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, {})


@pytest.mark.parametrize(("key", "read"), [("off", "false"), ("yes", "true"), ("On", "true")])
def test_a_key_read_as_a_boolean_says_to_quote_it(tmp_path: Path, key: str, read: str) -> None:
    """A provider named ``off:`` (YAML 1.1 reads ``off``, ``yes``, ``on``... as booleans) is
    refused naming the key, what it was read as and the fix; quoted, it is a name."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"providers:\n  {key}: {{type: mock}}\nmodels:\n"
                    f"  chat: {{targets: [{{provider: '{key}', model: a}}]}}\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"the key '{key}' on line 2 is read as a boolean ({read}): quote it ('{key}')")):
        load_config(path, {})
    path.write_text(path.read_text().replace(f"  {key}:", f"  '{key}':"))
    assert list(load_config(path, {}).providers) == [key]


def test_a_merge_key_may_repeat_what_it_merges(tmp_path: Path) -> None:
    """``<<: *anchor`` then a key of the anchor's overrides it, as YAML says (not a repeat)."""
    path = tmp_path / "gateway.yaml"
    path.write_text("base: &b {type: mock, latency_ms: 1}\nproviders:\n"
                    "  p: {<<: *b, latency_ms: 5}\nmodels: {}\n")
    with pytest.raises(ConfigError, match=r"^base: unknown key$"):
        load_config(path, {})  # parsed: only the extra top-level key is wrong


@pytest.mark.parametrize(("url", "problem"), [
    ("not a url", "not an http:// or https:// URL"),
    ("ftp://files.example.com/v1", "not an http:// or https:// URL"),
    ("http://127.0.0.1:99999/v1", "not a valid URL (its port is not a number from 1 to 65535)"),
    ("http://127.0.0.1:0/v1", "not a valid URL (its port is not a number from 1 to 65535)"),
    ("http://api:eighty/v1", "not a valid URL (its port is not a number from 1 to 65535)"),
    ("http:///v1", "not a valid URL (no host)"),
    ("http://exa mple.com/v1", "not a valid URL (a bad host)"),
    ("http://[nope]/v1", "not a valid URL (a bad host)"),
])
def test_an_unusable_upstream_url_is_refused_with_its_path(url: str, problem: str) -> None:
    """A provider's base URL (or Azure's endpoint) must be http(s) with a host and a port from
    1 to 65535; the error names the setting and never quotes the URL."""
    with pytest.raises(ConfigError) as caught:
        parse_config(base(base_url=url), {})
    assert str(caught.value) == f"providers.p.base_url: {problem}"
    azure = {"providers": {"az": {"type": "azure_openai", "api_key": "k", "endpoint": url}},
             "models": {}}
    with pytest.raises(ConfigError, match=r"providers\.az\.endpoint: "):
        parse_config(azure, {})


@pytest.mark.parametrize("url", ["http://proxyuser:Sup3rS3cretProxyPass@gpu:8000/v1",
                                 "http://${PROXY_USERINFO}@gpu:8000/v1",
                                 "https://just-a-user@gpu.example/v1"])
def test_credentials_in_an_upstream_url_are_refused_without_quoting_them(url: str) -> None:
    """A user name or password in a base URL would reach clients and the call log in every
    connection error that names the upstream: refused, pointing at a header instead."""
    with pytest.raises(ConfigError) as caught:
        parse_config(base(base_url=url),
                     {"PROXY_USERINFO": "proxyuser:Sup3rS3cretProxyPass"})
    message = str(caught.value)
    assert message.startswith("providers.p.base_url: holds a user name or password")
    assert "headers: {Authorization:" in message
    assert "Sup3rS3cret" not in message and "just-a-user" not in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:42599/v1?key=${URLSECRET:-urlonly-SECRET-777}",
                                 "https://gpu.example/v1#urlonly-SECRET-777",
                                 "https://gpu.example/v1?"])
def test_a_query_or_fragment_in_an_upstream_url_is_refused_without_quoting_it(url: str) -> None:
    """A key in a base URL's query string would reach clients and the call log in every error
    naming the upstream, and each API's path appended after it would break the URL: refused
    (Azure's endpoint too), pointing at a header instead."""
    with pytest.raises(ConfigError) as caught:
        parse_config(base(base_url=url), {})
    message = str(caught.value)
    assert message.startswith("providers.p.base_url: holds a query string or fragment")
    assert "headers: {" in message and "urlonly-SECRET" not in message
    azure = {"providers": {"az": {"type": "azure_openai", "api_key": "k", "endpoint": url}},
             "models": {}}
    with pytest.raises(ConfigError, match=r"providers\.az\.endpoint: holds a query string"):
        parse_config(azure, {})


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://gpu_a:8000/v1",
                                 "http://[::1]:8000/v1", "https://münchen.example/v1"])
def test_usable_upstream_urls_pass(url: str) -> None:
    """Host names with underscores or non-ASCII letters and IPv6 addresses are URLs."""
    provider = parse_config(base(base_url=url), {}).providers["p"]
    assert isinstance(provider, OpenAIProvider) and provider.base_url == url


NOT_UTF8 = (b"providers:\n  mock: {type: mock}\nmodels:\n  chat:\n"
            b"    targets: [{provider: mock, model: \"mock-chat\xff\"}]\n")


def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_byte(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is refused naming the file, the byte, its offset and
    line, not with a decoding traceback."""
    path = tmp_path / "gateway.yaml"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == (f"{path}: not UTF-8 text: byte 0xff at offset 96 (line 5); "
                                 "save the file as UTF-8")


def test_check_config_and_serve_refuse_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """``check-config`` says "invalid" with the reason (status 1) and ``serve`` says it in one
    line (status 2) for a config that is not UTF-8."""
    path = tmp_path / "gateway.yaml"
    path.write_bytes(NOT_UTF8)
    switchboard = str(Path(sys.executable).with_name("switchboard"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    checked = subprocess.run([switchboard, "check-config", str(path)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        f"{path}: invalid", f"  {path}: not UTF-8 text: byte 0xff at offset 96 (line 5); save "
        "the file as UTF-8"]
    served = subprocess.run([switchboard, "serve", "--config", str(path), "--port", "1"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert served.returncode == 2
    assert served.stderr.splitlines() == [
        f"switchboard: {path}: not UTF-8 text: byte 0xff at offset 96 (line 5); save the file "
        "as UTF-8"]


@pytest.mark.parametrize(("text", "where"), [
    ("providers: {p: {type: mock}}\nmodels: {}\nloop: &a [*a]\n", "loop.0.0.0"),
    ("providers: {p: {type: mock}}\nmodels: {m: {targets: [{provider: p, model: x, params: "
     "{deep: " + "[" * 600 + "]" * 600 + "}}]}}\n", "models.m.targets.0.params.deep.0"),
], ids=["an alias that contains itself", "600 levels"])
def test_check_config_refuses_a_document_nested_past_the_limit(tmp_path: Path, text: str,
                                                               where: str) -> None:
    """A YAML alias inside itself, or a value nested hundreds of levels deep, is one line of
    "invalid" (status 1), not the interpreter's recursion error."""
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    switchboard = str(Path(sys.executable).with_name("switchboard"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    checked = subprocess.run([switchboard, "check-config", str(path)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    lines = checked.stderr.splitlines()
    assert lines[0] == f"{path}: invalid" and len(lines) == 2, checked.stderr[:2000]
    assert lines[1].startswith(f"  {where}") and "nested more than 64 levels deep" in lines[1]


@pytest.mark.parametrize(("where", "change"), [
    ("models", lambda raw: raw["models"].update({"gpt-4o-\u6a21\u578b": raw["models"]["m"]})),
    ("providers", lambda raw: raw["providers"].update({"sim\u4e2d": {"type": "mock"}})),
    (r"models\.m\.targets\.0\.model",
     lambda raw: raw["models"]["m"]["targets"][0].update({"model": "v\u0661"})),
], ids=["model-name", "provider-name", "target-model"])
def test_names_outside_ascii_are_refused(where: str, change: Any) -> None:
    """Names go into response headers (Latin-1 only) and metric labels: a provider, public
    model or target model outside printable ASCII is refused at load, naming where (it passed
    the check and then failed every call through it with a 500)."""
    raw = base()
    change(raw)
    with pytest.raises(ConfigError, match=where):
        parse_config(raw, {})
