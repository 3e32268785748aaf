"""The README's examples say what the code does: blocks presented as defaults are the
defaults, and references to it name sections that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from click.testing import CliRunner

from app.cli import main
from app.config import Drift
from app.limits.model import Scope

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def yaml_block_after(marker: str) -> Any:
    """The first ```yaml block after ``marker`` in the README, parsed."""
    start = README.index(marker)
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(README, start)
    assert match is not None, marker
    return yaml.safe_load(match[1])


def test_the_drift_block_shows_the_defaults() -> None:
    """Each setting of the README's drift block (the refusal phrases included, whose list a
    config replaces) is the code's default."""
    shown = yaml_block_after("All of it is tunable under `drift:`")["drift"]
    defaults = Drift().model_dump()
    for key, value in shown.items():
        if isinstance(value, dict):
            assert value == {k: defaults[key][k] for k in value}, key
        else:
            assert value == defaults[key], key


def test_the_makefile_points_at_readme_sections_that_exist() -> None:
    """Every README the Makefile refers to exists, and so does each section it quotes."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ (.+)$", README, re.M))
    references = re.findall(r"(README[\w.]*\.md)(?:, \"([^\"]+)\")?", makefile)
    assert references
    for name, section in references:
        assert (REPO / name).is_file(), name
        if section:
            assert section in headings, section


def test_the_check_config_line_is_what_check_config_prints(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's sample of ``switchboard check-config``'s verdict is its output for a file
    with those providers and models."""
    match = re.search(r"`switchboard check-config gateway\.yaml` prints one line,\s+`([^`]+)`",
                      README)
    assert match is not None
    shown = match[1]
    counts = re.fullmatch(r"gateway\.yaml: ok \((\d+) providers, (\d+) models: (.+)\)", shown)
    assert counts is not None, shown
    models = counts[3].split(", ")
    assert int(counts[2]) == len(models)
    providers = [f"p{i}" for i in range(int(counts[1]))]
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({
        "providers": {name: {"type": "mock"} for name in providers},
        "models": {name: {"targets": [{"provider": "p0", "model": "mock-chat"}]}
                   for name in models}}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check-config", "gateway.yaml"])
    assert result.exit_code == 0, result.output
    assert result.output == shown + "\n"


def test_every_rejection_scope_exported_is_documented() -> None:
    """Each ``scope`` value the rejection counters export is named where the README lists
    them."""
    start = README.index("Metrics: `switchboard_ratelimit_rejections_total{scope}`")
    paragraph = README[start:README.index("\n\n", start)]
    for scope in get_args(Scope):
        assert f"`{scope}`" in paragraph or f'`scope="{scope}"`' in paragraph, scope


def _whole_configs() -> list[tuple[int, str]]:
    """The README's ```yaml blocks that are whole config files (``providers`` and ``models``),
    with the line each starts on."""
    found = []
    for match in re.finditer(r"```yaml\n(.*?)```", README, re.S):
        shown = yaml.safe_load(match[1])
        if isinstance(shown, dict) and {"providers", "models"} <= shown.keys():
            found.append((README.count("\n", 0, match.start()) + 1, match[1]))
    return found


@pytest.mark.parametrize(("line", "text"), _whole_configs(),
                         ids=[f"line-{line}" for line, _ in _whole_configs()])
def test_every_whole_config_example_is_valid(line: int, text: str) -> None:
    """A config example a reader copies is one the gateway takes (one once put
    ``max_tokens_default`` on a target, which the config refuses)."""
    from app.config import parse_config

    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    env = {name: "https://upstream.internal/v1" if "URL" in name else "unused-value-0123456789"
           for name in names}
    if "workload_identity" in text:  # the variables AKS's webhook sets, as the example says
        from app.providers.azure_auth import WORKLOAD_VARIABLES

        env |= dict.fromkeys(WORKLOAD_VARIABLES.values(), "unused-value-0123456789")
    parse_config(yaml.safe_load(text), env)
