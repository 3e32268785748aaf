"""check-config warns (and still accepts the config) of a public embedding model whose targets
are different upstream models: they answer from different vector spaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from app.cli import main
from app.config import parse_config
from app.config_warnings import warnings

PROVIDERS = {
    "oai": {"type": "openai", "api_key": "sk-test-0123"},
    "oai2": {"type": "openai", "api_key": "sk-test-4567", "base_url": "http://127.0.0.1:9/v1"},
    "co": {"type": "cohere", "api_key": "co-test-0123"},
    "mini": {"type": "local"},
    "az": {"type": "azure_openai", "endpoint": "https://x.openai.azure.com",
           "api_key": "az-test-0123"},
}


def _warned(models: dict[str, Any]) -> list[str]:
    return warnings(parse_config({"providers": PROVIDERS, "models": models}, {}))


def test_different_embedding_models_behind_one_name_are_warned_of() -> None:
    found = _warned({
        "coh-then-oai": {"targets": [{"provider": "co", "model": "embed-english-v3.0"},
                                     {"provider": "oai", "model": "text-embedding-3-small"}]},
        "sized": {"targets": [{"provider": "oai", "model": "text-embedding-3-small",
                               "params": {"dimensions": 256}},
                              {"provider": "oai2", "model": "text-embedding-3-small"}]},
        "search": {"targets": [{"provider": "oai", "model": "text-embedding-3-small"},
                               {"provider": "mini", "model": "anything"}]},
        "readme-was": {"targets": [{"provider": "oai", "model": "text-embedding-3-small"},
                                   {"provider": "oai2", "model": "BAAI/bge-large-en-v1.5"}]},
    })
    assert [line.split(":")[0] for line in found] == \
        ["models.coh-then-oai", "models.sized", "models.search", "models.readme-was"]
    assert "(embed-english-v3.0, text-embedding-3-small)" in found[0]
    assert "text-embedding-3-small (256 dimensions)" in found[1]
    assert "all-MiniLM-L6-v2" in found[2] and "vector space" in found[2]


def test_interchangeable_targets_and_chat_models_are_not() -> None:
    assert _warned({
        "same": {"targets": [{"provider": "oai", "model": "text-embedding-3-small"},
                             {"provider": "oai2", "model": "text-embedding-3-small"}]},
        "chat": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"},
                             {"provider": "oai2", "model": "gpt-4o"}]},
        "azure": {"targets": [{"provider": "az", "model": "my-deployment"},
                              {"provider": "oai", "model": "text-embedding-3-small"}]},
        "minis": {"targets": [{"provider": "mini", "model": "a"},
                              {"provider": "mini", "model": "b"}]},
    }) == []


def test_check_config_prints_the_warning_and_accepts(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "providers:\n"
        "  oai: {type: openai, api_key: sk-test-0123}\n"
        "  co: {type: cohere, api_key: co-test-0123}\n"
        "models:\n"
        "  embed:\n"
        "    targets: [{provider: co, model: embed-v4.0},"
        " {provider: oai, model: text-embedding-3-small}]\n")
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (2 providers, 1 model: embed)\n"
    assert result.stderr.startswith(f"{path}: warning: models.embed: its embedding targets "
                                    "are different models (embed-v4.0, text-embedding-3-small)")
