"""A version's size is bounded however it is written: template files refuse YAML anchors and
aliases (which expand) and are bounded in bytes and values before they are built; a version
past ``MAX_VERSION_BYTES`` is refused by the admin API's model, ``create``, ``version`` and
``sync`` alike; a default's text is computed once per version, not on every call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from app import errors
from app.cli import main
from app.prompts import CompiledVersion, VersionRecord, VersionSpec
from app.prompts.model import MAX_CONTENT, MAX_VERSION_BYTES, parse
from app.prompts.render import Declared, bind
from app.prompts.sync import MAX_FILE_BYTES, MAX_NODES, SyncError, read_file

ALIAS_BOMB = """\
id: lol
messages: [{role: user, content: "{{ j }}"}]
variables:
  j:
    type: json
    default:
      a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      a1: &a1 [*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0]
      a2: &a2 [*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1]
      a3: &a3 [*a2,*a2,*a2,*a2,*a2,*a2,*a2,*a2,*a2,*a2]
      a4: &a4 [*a3,*a3,*a3,*a3,*a3,*a3,*a3,*a3,*a3,*a3]
      a5: &a5 [*a4,*a4,*a4,*a4,*a4,*a4,*a4,*a4,*a4,*a4]
      a6: &a6 [*a5,*a5,*a5,*a5,*a5,*a5,*a5,*a5,*a5,*a5]
"""
PLAIN = """\
messages: [{role: user, content: "{{ text }}"}]
variables: {text: {type: string}}
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    (tmp_path / "prompts.db").touch()  # only the embedded default's file is created
    return f"sqlite:///{tmp_path / 'prompts.db'}"


def run(*args: str, url: str) -> Result:
    return CliRunner().invoke(main, ["prompts", *args, "--database-url", url])


def synced(url: str) -> list[Any]:
    listed = run("list", "--json", url=url)
    assert listed.exit_code == 0, listed.output
    return [json.loads(line) for line in listed.stdout.splitlines()]


def oversized() -> str:
    """A template file whose one version is past ``MAX_VERSION_BYTES`` (no aliases)."""
    count = MAX_VERSION_BYTES // MAX_CONTENT + 1
    messages = "".join(f"  - {{role: user, content: {'x' * MAX_CONTENT}}}\n"
                       for _ in range(count))
    return f"messages:\n{messages}"


@pytest.mark.parametrize("text, where", [
    (ALIAS_BOMB, "line 7, column 11: an anchor (&a0)"),
    ("messages: [{role: user, content: hi}]\nnote: *nowhere\n", "line 2, column 7: an alias"),
    ("base: &b {role: user, content: hi}\nmessages: [{<<: *b}]\n", "an anchor (&b)"),
], ids=["alias-bomb", "alias", "merge-key"])
def test_sync_refuses_yaml_anchors_and_aliases(url: str, tmp_path: Path, text: str,
                                               where: str) -> None:
    """The 509-byte alias bomb (a 69 MB version once) is refused whole, naming the file and
    where, as is any anchor or alias; nothing is written."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "lol.yaml").write_text(text)
    (prompts / "fine.yaml").write_text(PLAIN)
    result = run("sync", str(prompts), url=url)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and where in result.stderr
    assert "lol.yaml" in result.stderr and "anchors and aliases are not supported" in \
        result.stderr
    assert synced(url) == []


def test_a_file_past_its_bounds_is_refused_before_it_is_built(url: str,
                                                              tmp_path: Path) -> None:
    """A file past ``MAX_FILE_BYTES`` is refused unread, and one past ``MAX_NODES`` values as
    it is read; both name the bound."""
    big = tmp_path / "big.yaml"
    big.write_text(PLAIN + "note: '" + "x" * MAX_FILE_BYTES + "'\n")
    result = run("create", str(big), url=url)
    assert result.exit_code == 2 and f"larger than the {MAX_FILE_BYTES} bytes" in result.stderr
    dense = tmp_path / "dense.yaml"
    dense.write_text(PLAIN + "params: {metadata: {" + ", ".join(
        f"k{i}: v" for i in range(MAX_NODES // 2 + 1)) + "}}\n")
    result = run("create", str(dense), url=url)
    assert result.exit_code == 2 and f"more than {MAX_NODES} YAML values" in result.stderr
    assert synced(url) == []


def test_a_version_past_the_bound_is_refused_on_every_way_in(url: str,
                                                             tmp_path: Path) -> None:
    """A version past ``MAX_VERSION_BYTES`` (without aliases, within the file bounds) is a 400
    from the admin API's model, and refused by ``create``, ``version`` and ``sync``."""
    text = oversized()
    spec = {"messages": [{"role": "user", "content": "x" * MAX_CONTENT}] *
            (MAX_VERSION_BYTES // MAX_CONTENT + 1)}
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(VersionSpec, spec)
    assert f"more than the {MAX_VERSION_BYTES} a version may hold" in caught.value.message
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "big.yaml").write_text(text)
    for args in (("create", str(prompts / "big.yaml")), ("sync", str(prompts))):
        result = run(*args, url=url)
        assert result.exit_code == 2, result.output
        assert f"more than the {MAX_VERSION_BYTES} a version may hold" in result.stderr
    (tmp_path / "small.yaml").write_text(PLAIN)
    assert run("create", str(tmp_path / "small.yaml"), url=url).exit_code == 0
    result = run("version", "small", str(prompts / "big.yaml"), url=url)
    assert result.exit_code == 2 and "a version may hold" in result.stderr
    assert [t["latest_version"] for t in synced(url)] == [1]


def test_a_default_is_written_out_once_per_version() -> None:
    """A ``json`` default's text is computed when the version is compiled: every call that
    leaves the variable out gets that same text, not a new serialisation of the default."""
    spec = VersionSpec.model_validate({
        "messages": [{"role": "user", "content": "{{ j }} {{ n }}"}],
        "variables": {"j": {"type": "json", "default": {"a": [1, 2, {"b": None}]}},
                      "n": {"type": "integer", "default": 3}}})
    compiled = CompiledVersion.of(VersionRecord("t", 1, spec, 0.0))
    declared = compiled.declared["j"]
    assert declared.default_text == '{"a":[1,2,{"b":null}]}'
    first, second = bind(compiled.declared, {}), bind(compiled.declared, {})
    assert first["j"] is declared.default_text and second["j"] is declared.default_text
    assert first["n"] == "3"
    assert bind(compiled.declared, {"j": [1]})["j"] == "[1]"  # a value sent is its own
    assert Declared("string").default_text is None


@pytest.mark.parametrize("text, said", [
    ("id: a\nmessages: [{role: user, content: hi}]\nid: b\n",
     "duplicate key 'id' on line 3 (first on line 1)"),
    ("messages: [{role: user, content: hi, role: system}]\n", "duplicate key 'role'"),
    ("messages: [{role: user, content: hi}]\nlabels: {on: 1}\n",
     "the key 'on' on line 2 is read as a boolean (true): quote it ('on')"),
], ids=["id", "role", "boolean-key"])
def test_a_template_file_repeating_a_key_is_refused(tmp_path: Path, text: str,
                                                    said: str) -> None:
    """A key written twice (YAML keeps the last: ``id: a ... id: b`` made template b) or one
    read as a boolean is refused naming the line, as the gateway's config refuses it."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(SyncError) as caught:
        read_file(path)
    assert said in str(caught.value) and "dup.yaml" in str(caught.value)
