"""The ``switchboard`` command as a new user runs it: serve, check-config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import free_port, wait_ready

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def clean_env() -> dict[str, str]:
    """The environment without any provider key or SWITCHBOARD_ setting."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SWITCHBOARD_") and not k.endswith("_API_KEY")}


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """``switchboard serve`` with no config, run from an empty directory."""
    port = free_port()
    proc = subprocess.Popen([SWITCHBOARD, "serve", "--port", str(port)], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def test_embedded_default_serves_mock_models_offline(embedded: str) -> None:
    """With no config, no keys and no servers, the gateway answers chat and embeddings."""
    with openai.OpenAI(base_url=embedded + "/v1", api_key="unused", max_retries=0) as client:
        assert {m.id for m in client.models.list()} == {"mock-chat", "mock-embed"}
        reply = client.chat.completions.create(model="mock-chat",
                                               messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Mock reply to: hi"
        embedding = client.embeddings.create(model="mock-embed", input="x").data[0].embedding
        assert len(embedding) == 384
    assert httpx.get(embedded + "/healthz").json() == {"status": "ok"}


def test_refuses_public_bind_without_master_key(tmp_path: Path) -> None:
    """Binding beyond loopback without SWITCHBOARD_MASTER_KEY exits non-zero with the reason."""
    result = subprocess.run([SWITCHBOARD, "serve", "--host", "0.0.0.0", "--port",
                             str(free_port())], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "SWITCHBOARD_MASTER_KEY" in result.stderr


@pytest.mark.parametrize(("args", "env", "says"), [
    (["serve", "--port", "99999"], {},
     "switchboard: invalid SWITCHBOARD_PORT (or serve --port): Input should be less than or "
     "equal to 65535"),
    (["serve"], {"SWITCHBOARD_WORKERS": "many"},
     "switchboard: invalid SWITCHBOARD_WORKERS (or serve --workers): Input should be a valid "
     "integer, unable to parse string as an integer"),
    (["keys", "list"], {"SWITCHBOARD_LOG_LEVEL": "loud", "SWITCHBOARD_SHUTDOWN_GRACE_S": "0"},
     "switchboard: invalid SWITCHBOARD_LOG_LEVEL: Input should be 'debug', 'info', 'warning' or "
     "'error'\nswitchboard: invalid SWITCHBOARD_SHUTDOWN_GRACE_S: Input should be greater than "
     "or equal to 1"),
])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
        tmp_path: Path, args: list[str], env: dict[str, str], says: str) -> None:
    """A setting that fails validation, in the environment or as a serve option, is one line
    per problem naming the variable (and the option), status 2, no traceback and no value."""
    result = subprocess.run([SWITCHBOARD, *args], cwd=tmp_path, env={**clean_env(), **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == says
    assert not any(value in result.stderr for value in ("99999", "many", "loud"))


def test_check_config_verdicts(tmp_path: Path) -> None:
    """check-config says ok for a valid file, names the path of a misspelt key and the line of
    a repeated one."""
    good = tmp_path / "good.yaml"
    good.write_text(
        "providers:\n  gpu: {type: vllm, base_url: 'http://127.0.0.1:1/v1'}\n"
        "  openai: {type: openai, api_key: '${TEST_KEY}'}\n"
        "models:\n  chat:\n    targets:\n      - {provider: gpu, model: llama}\n"
        "      - {provider: openai, model: gpt-4o-mini}\n")
    env = {**clean_env(), "TEST_KEY": "sk-secret-value"}
    ok = subprocess.run([SWITCHBOARD, "check-config", str(good)], env=env,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{good}: ok (2 providers, 1 model: chat)\n"  # "1 model", not "1 models"
    assert "sk-secret-value" not in ok.stdout + ok.stderr
    missing = subprocess.run([SWITCHBOARD, "check-config", str(good)], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert "providers.openai.api_key: environment variable TEST_KEY is not set" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  gpu: {type: vllm, base_url: 'http://h/v1', timeout: 3}\n"
                   "models:\n  chat:\n    targets: [{provider: gpu, model: m}]\n"
                   "    max_tokens_defualt: 5\n")
    verdict = subprocess.run([SWITCHBOARD, "check-config", str(bad)], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
    assert verdict.returncode == 1
    assert "providers.gpu.timeout: unknown key" in verdict.stderr
    assert "models.chat.max_tokens_defualt: unknown key" in verdict.stderr
    twice = tmp_path / "twice.yaml"
    twice.write_text(good.read_text() + "  chat:\n    targets: [{provider: gpu, model: x}]\n")
    repeated = subprocess.run([SWITCHBOARD, "check-config", str(twice)], env=env,
                              capture_output=True, text=True, timeout=30)
    assert repeated.returncode == 1
    assert "duplicate key 'chat' on line 9 (first on line 5)" in repeated.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("providers: {}\nmodels: {}\n")  # valid, and serves nothing
    nothing = subprocess.run([SWITCHBOARD, "check-config", str(empty)], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout == f"{empty}: ok (0 providers, 0 models)\n"
    assert nothing.stderr == f"{empty}: warning: it serves no model\n"


AZURE_WORKLOAD = ("providers:\n  azp: {type: azure_openai, endpoint: 'https://x.openai.azure.com', "
                  "auth: {type: workload_identity}}\n"
                  "models:\n  az: {targets: [{provider: azp, model: gpt-4o}]}\n")
AZURE_DEFAULT = AZURE_WORKLOAD.replace("workload_identity", "default")
NO_AZURE = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_TOKEN_CREDENTIALS")


@pytest.mark.parametrize(("text", "env", "says"), [
    (AZURE_WORKLOAD, {},
     "providers.azp.auth: workload_identity: tenant_id, client_id, token_file not given, and "
     "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE not set in the environment"),
    (AZURE_DEFAULT, {"AZURE_TOKEN_CREDENTIALS": "bogus"},
     "providers.azp: auth default: Invalid value for AZURE_TOKEN_CREDENTIALS: bogus."),
], ids=["workload identity without its variables", "a credential azure-identity refuses"])
def test_a_provider_that_cannot_be_built_is_an_invalid_config(
        tmp_path: Path, text: str, env: dict[str, str], says: str) -> None:
    """A provider whose credential cannot be made (Azure workload identity without its
    settings or variables; a setting azure-identity reads from the environment and refuses)
    fails check-config (exit 1) and serve (exit 2) with the same line, no traceback; with the
    environment it needs, check-config says ok."""
    pytest.importorskip("azure.identity")
    path = tmp_path / "azure.yaml"
    path.write_text(text)
    base = {k: v for k, v in clean_env().items() if k not in NO_AZURE}
    checked = subprocess.run([SWITCHBOARD, "check-config", str(path)], env={**base, **env},
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stderr.startswith(f"{path}: invalid\n  {says}"), checked.stderr
    assert len(checked.stderr.splitlines()) == 2, checked.stderr
    served = subprocess.run([SWITCHBOARD, "serve", "--config", str(path), "--port",
                             str(free_port())], cwd=tmp_path, env={**base, **env},
                            capture_output=True, text=True, timeout=60)
    assert served.returncode == 2, served.stderr
    assert served.stderr.startswith(f"switchboard: {says}"), served.stderr
    assert "Traceback" not in served.stderr + checked.stderr
    fixed = {**base, "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
             "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
             "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "token")}
    ok = subprocess.run([SWITCHBOARD, "check-config", str(path)], env=fixed,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok (1 provider, 1 model" in ok.stdout, ok.stderr


def test_help_is_complete() -> None:
    """Every command documents itself."""
    for args in (["--help"], ["serve", "--help"], ["check-config", "--help"],
                 ["simulate", "--help"]):
        result = subprocess.run([SWITCHBOARD, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, args
        assert "Usage:" in result.stdout


def test_the_listing_describes_each_command_as_its_own_help_does() -> None:
    """`switchboard --help` lists the commands of other modules from ``app.cli._ELSEWHERE``,
    without importing them: each line must read as the command's own help would."""
    import click

    from app.cli import _ELSEWHERE, main

    context = click.Context(main)
    for name, (module, described) in _ELSEWHERE.items():
        command = main.get_command(context, name)
        assert command is not None and command.name == name, name
        assert command.callback is None or command.callback.__module__ == module, name
        for width in (20, 45, 70, 200):
            listed = click.Command(name, help=described).get_short_help_str(width)
            assert listed == command.get_short_help_str(width), (name, width)


def test_help_and_light_commands_import_only_what_they_need() -> None:
    """`--help`, `db --help` and `check-config` leave the gateway's heavy modules unimported
    (they took 1.9 s when every command group was imported up front)."""
    probe = ("import sys\nfrom app.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(' '.join(m for m in ('app.main', 'app.keys.cli', 'app.config', 'sqlalchemy',"
             " 'fastapi') if m in sys.modules))")
    for args, absent in ((["--help"], ["app.main", "app.keys.cli", "app.config", "sqlalchemy",
                                       "fastapi"]),
                         (["db", "--help"], ["app.main", "app.keys.cli", "fastapi"]),
                         (["check-config", "/nonexistent.yaml"], ["app.main", "app.keys.cli"])):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                                text=True, timeout=60, env=clean_env())
        imported = result.stdout.splitlines()[-1].split()
        assert not set(absent) & set(imported), (args, imported)


def test_config_diff_says_what_a_reload_would_change(tmp_path: Path) -> None:
    """Models and providers added, removed and changed, in plain words; secrets never shown;
    sections read at start-up marked; an invalid file named."""
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(
        "providers:\n  gpu: {type: vllm, base_url: 'http://gpu-a:8000/v1'}\n"
        "  openai: {type: openai, api_key: sk-old-secret-1}\n"
        "models:\n  chat:\n    targets:\n      - {provider: gpu, model: llama}\n"
        "      - {provider: openai, model: gpt-4o-mini}\n"
        "  embed: {targets: [{provider: openai, model: text-embedding-3-small}]}\n")
    new.write_text(
        "providers:\n  openai: {type: openai, api_key: sk-new-secret-2}\n"
        "  claude: {type: anthropic, api_key: sk-ant-3}\n"
        "models:\n  chat:\n    targets:\n      - {provider: openai, model: gpt-4o-mini}\n"
        "    max_tokens_cap: 4096\n"
        "  opus: {targets: [{provider: claude, model: claude-opus-4}]}\n"
        "streaming: {keepalive_s: 5}\nrate_limits: {output_reservation: 1000}\n")
    diff = subprocess.run([SWITCHBOARD, "config", "diff", str(old), str(new)], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert diff.returncode == 0, diff.stderr
    lines = [line.strip() for line in diff.stdout.splitlines()[1:]]
    assert lines == [
        "provider gpu: removed",
        "provider claude: added (type anthropic)",
        "provider openai: api_key changed (secret)",
        "model embed: removed",
        "model opus: added (targets claude/claude-opus-4)",
        "model chat: targets gpu/llama, openai/gpt-4o-mini -> openai/gpt-4o-mini",
        "model chat: max_tokens_cap null -> 4096",
        "rate_limits.output_reservation 4096 -> 1000 (takes effect on restart)",
        "streaming.keepalive_s 10.0 -> 5.0",
    ], diff.stdout
    assert "secret-" not in diff.stdout + diff.stderr
    same = subprocess.run([SWITCHBOARD, "config", "diff", str(old), str(old)], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert same.returncode == 0 and "no changes" in same.stdout
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(old.read_text().replace("{provider: gpu, model: llama}",
                                             "{provider: gpu, model: llama, timeout_s: 30}"))
    target = subprocess.run([SWITCHBOARD, "config", "diff", str(old), str(tuned)],
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert target.stdout.splitlines()[0].endswith(": 1 change"), target.stdout
    assert target.stdout.splitlines()[1:] == [
        "  model chat: target gpu/llama: timeout_s null -> 30.0"], target.stdout
    new.write_text("providers: {}\nmodels: {chat: {targets: [{provider: nope, model: m}]}}\n")
    refused = subprocess.run([SWITCHBOARD, "config", "diff", str(old), str(new)],
                             env=clean_env(), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and f"{new}: invalid" in refused.stderr


def test_listing_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """``prompts list | head -1`` and the like: output to a pipe whose reader has gone ends the
    command without a message (not "the database refused: BrokenPipeError")."""
    from click.testing import CliRunner

    from app.cli import main

    (tmp_path / "cli.db").touch()  # only the embedded default's file is created
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    template = tmp_path / "t.yaml"
    template.write_text("id: greet\nmessages:\n  - {role: user, content: hi}\n")
    runner = CliRunner()
    for args in (["prompts", "create", str(template)], ["keys", "create", "--name", "k1"]):
        assert runner.invoke(main, [*args, "--database-url", url]).exit_code == 0
    for args in (["prompts", "list"], ["prompts", "show", "greet"], ["keys", "list"]):
        read, write = os.pipe()
        os.close(read)  # the reader has gone before the first line is written
        try:
            result = subprocess.run([SWITCHBOARD, *args, "--database-url", url], stdout=write,
                                    stderr=subprocess.PIPE, env=clean_env(), text=True,
                                    timeout=60)
        finally:
            os.close(write)
        assert result.stderr == "", args
        assert result.returncode == 1, args  # click's status for a closed stdout


def test_check_config_and_serve_list_each_problem_on_its_own_line(tmp_path: Path) -> None:
    """Several problems found together (three unusable URLs) are one line each, with its
    path, from check-config and from serve alike."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n" + "".join(
        f"  {name}: {{type: openai, base_url: 'nope', api_key: k}}\n" for name in "abc")
        + "models:\n  chat: {targets: [{provider: a, model: m}]}\n")
    problems = [f"providers.{name}.base_url: not an http:// or https:// URL" for name in "abc"]
    checked = subprocess.run([SWITCHBOARD, "check-config", str(bad)], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [f"{bad}: invalid", *(f"  {p}" for p in problems)]
    served = subprocess.run([SWITCHBOARD, "serve", "--config", str(bad), "--port",
                             str(free_port())], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert served.returncode == 2
    assert served.stderr.splitlines() == [f"switchboard: {p}" for p in problems]


def test_the_start_up_line_names_the_providers_keys_added() -> None:
    """The embedded default is "offline" only while no API key in the environment added an
    online provider."""
    from app.cli import _config_source
    from app.config import embedded_config
    from app.settings import Settings

    settings = Settings(config=None)
    assert _config_source(settings, embedded_config({})) == "embedded default, offline"
    keyed = embedded_config({"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    assert _config_source(settings, keyed) == \
        "embedded default, with openai and anthropic from their API keys"
    assert _config_source(Settings(config=Path("g.yaml")), keyed) == "config g.yaml"
