"""The README's examples say what the code does: blocks presented as defaults are the
defaults, and references to it name sections that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.config import Drift

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
