"""``switchboard prompts`` on a SQLite file: create from YAML, versions, labels, rollback, diff,
show and list round trip; ``sync DIR`` is idempotent and moves labels as the files say; bad
files are one-line errors (exit 2) that change nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app.cli import main

SUMMARISE = """\
id: summarise
messages:
  - role: system
    content: "You summarise {{ kind }}."
  - role: user
    content: |
      {{ text }}
variables:
  kind: {type: string, default: emails}
  text: {type: string}
params: {temperature: 0.2}
author: ada
labels:
  production: 1
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    (tmp_path / "prompts.db").touch()  # only the embedded default's file is created
    return f"sqlite:///{tmp_path / 'prompts.db'}"


def run(*args: str, url: str) -> Result:
    return CliRunner().invoke(main, ["prompts", *args, "--database-url", url])


def test_cli_round_trip(url: str, tmp_path: Path) -> None:
    """create, version, label, rollback, diff, show and list, all on the same database."""
    first = tmp_path / "summarise.yaml"
    first.write_text(SUMMARISE)
    created = run("create", str(first), url=url)
    assert created.exit_code == 0, created.output
    second = tmp_path / "v2.yaml"
    second.write_text(SUMMARISE.replace("You summarise", "Briefly summarise"))
    added = run("version", "summarise", str(second), url=url)
    assert added.stdout.strip() == "summarise: version 2 added"
    assert run("label", "summarise", "production", "2", url=url).stdout.strip() == \
        "summarise: production 1 -> 2"
    assert run("label", "summarise", "production", "2", url=url).stdout.strip() == \
        "summarise: production is at 2 already (unchanged)"
    assert run("rollback", "summarise", "production", url=url).stdout.strip() == \
        "summarise: production 2 -> 1 (rollback)"
    diff = run("diff", "summarise", "1", "2", url=url).stdout
    assert "-You summarise {{ kind }}." in diff and "+Briefly summarise {{ kind }}." in diff
    shown = json.loads(run("show", "summarise", url=url).stdout)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["messages"][1]["content"] == "{{ text }}\n"
    assert shown["labels"] == {"production": 1}
    one = json.loads(run("show", "summarise", "--version", "2", url=url).stdout)
    assert one["params"] == {"temperature": 0.2} and one["author"] == "ada"
    assert run("list", url=url).stdout.strip() == "summarise  v2  production=1"
    missing = run("show", "nope", url=url)
    assert missing.exit_code == 2 and "No prompt template 'nope'" in missing.stderr
    again = run("create", str(first), url=url)
    assert again.exit_code == 2 and "exists already" in again.stderr
    assert run("label", "summarise", "canary", "2", url=url).stdout.strip() == \
        "summarise: canary (new) -> 2"  # was "None -> 2"


def test_diff_shows_line_endings_and_json_types(url: str, tmp_path: Path) -> None:
    """The tester's repro: versions differing only in ``\\r\\n`` and a trailing newline, a
    json default ``true`` vs ``1`` and ``temperature`` ``1`` vs ``1.0`` are told apart
    (the diff printed nothing, exit 0)."""
    first = tmp_path / "difft.yaml"
    first.write_text('messages: [{role: user, content: "line one\\nline two\\n"}]\n'
                     "variables: {j: {type: json, default: true}}\n"
                     "params: {temperature: 1}\n")
    assert run("create", str(first), url=url).exit_code == 0
    second = tmp_path / "v2.yaml"
    second.write_text('messages: [{role: user, content: "line one\\r\\nline two"}]\n'
                      "variables: {j: {type: json, default: 1}}\n"
                      "params: {temperature: 1.0}\n")
    assert run("version", "difft", str(second), url=url).exit_code == 0
    diff = run("diff", "difft", "1", "2", url=url)
    assert diff.exit_code == 0
    lines = diff.stdout.splitlines()
    assert "-line one" in lines and '+"line one\\r"' in lines and "-" in lines
    assert 'params: {"temperature": 1} -> {"temperature": 1.0}' in lines
    assert 'variables.j: {"type": "json", "default": true} -> ' \
        '{"type": "json", "default": 1}' in lines


def test_version_refuses_another_templates_file_and_applies_its_labels(url: str,
                                                                       tmp_path: Path) -> None:
    """``version ID FILE``: a file whose ``id`` names another template, or that lists several
    ``versions:``, is refused (exit 2) and nothing changes; the file's ``labels`` are moved
    as ``sync`` moves them (``latest``: the version added), checked before anything is
    written; a file without ``id`` is added whatever its name."""
    first = tmp_path / "rep.yaml"
    first.write_text(SUMMARISE.replace("id: summarise", "id: rep"))
    assert run("create", str(first), url=url).exit_code == 0
    before = run("show", "rep", url=url).stdout
    other = tmp_path / "f.yaml"
    other.write_text('id: other\nmessages: [{role: user, content: "V-NEW"}]\n')
    refused = run("version", "rep", str(other), url=url)
    assert refused.exit_code == 2
    assert "the file is template 'other', not 'rep'" in refused.stderr
    several = tmp_path / "g.yaml"
    several.write_text('versions:\n  - messages: [{role: user, content: "A"}]\n'
                       '  - messages: [{role: user, content: "B"}]\n')
    refused = run("version", "rep", str(several), url=url)
    assert refused.exit_code == 2 and "lists 2 versions" in refused.stderr
    too_far = tmp_path / "h.yaml"
    too_far.write_text('messages: [{role: user, content: "C"}]\nlabels: {canary: 3}\n')
    refused = run("version", "rep", str(too_far), url=url)
    assert refused.exit_code == 2
    assert "labels.canary: version 3 will not exist: 'rep' will have versions 1 to 2 after " \
        "this version is added" in refused.stderr
    assert run("show", "rep", url=url).stdout == before  # nothing changed
    labelled = tmp_path / "anything.yaml"
    labelled.write_text('messages: [{role: user, content: "V-NEW"}]\n'
                        "labels: {production: latest, canary: 1}\n")
    added = run("version", "rep", str(labelled), url=url)
    assert added.exit_code == 0, added.output
    assert added.stdout.splitlines() == ["rep: version 2 added", "rep: canary -> 1",
                                         "rep: production -> 2"]
    shown = json.loads(run("show", "rep", url=url).stdout)
    assert shown["labels"] == {"canary": 1, "production": 2}
    assert shown["versions"][1]["messages"] == [{"role": "user", "content": "V-NEW"}]
    same = tmp_path / "rep2.yaml"
    same.write_text('id: rep\nmessages: [{role: user, content: "V-NEW"}]\n')
    assert run("version", "rep", str(same), url=url).stdout.strip() == "rep: version 3 added"


def test_sync_is_idempotent_and_follows_the_files(url: str, tmp_path: Path) -> None:
    """A first sync creates; a second changes nothing; an edited body adds one version; a
    label moves only when the file says so; author and note alone are not a new version."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "summarise.yaml").write_text(SUMMARISE)
    (prompts / "greet.yml").write_text(
        "versions:\n"
        "  - messages: [{role: user, content: 'Hello {{ who }}'}]\n"
        "    variables: {who: {}}\n"
        "  - messages: [{role: user, content: 'Hi {{ who }}!'}]\n"
        "    variables: {who: {type: string}}\n"
        "labels: {production: 1, staging: latest}\n")
    first = run("sync", str(prompts), url=url)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "greet: created with 2 version(s)", "greet: production -> 1", "greet: staging -> 2",
        "summarise: created with 1 version(s)", "summarise: production -> 1"]
    assert run("sync", str(prompts), url=url).stdout.strip() == "up to date"
    (prompts / "summarise.yaml").write_text(SUMMARISE.replace("author: ada", "author: bob"))
    assert run("sync", str(prompts), url=url).stdout.strip() == "up to date"
    (prompts / "summarise.yaml").write_text(
        SUMMARISE.replace("{{ kind }}.", "{{ kind }} briefly.").replace("production: 1",
                                                                        "production: latest"))
    third = run("sync", str(prompts), url=url)
    assert third.stdout.splitlines() == ["summarise: version 2 added",
                                         "summarise: production -> 2"]
    assert run("sync", str(prompts), url=url).stdout.strip() == "up to date"
    listed = run("list", url=url).stdout.splitlines()
    assert listed == ["greet  v2  production=1 staging=2", "summarise  v2  production=2"]


@pytest.mark.parametrize(("text", "says"), [
    ("messages: [{role: user, content: '{{ a.b }}'}]\n", "does not open"),
    ("messages: [{role: user, content: '{{ x }}'}]\n", "not declared"),
    ("messages: [{role: user, content: hi}]\nlabels: {latest: 1}\n", "reserved"),
    ("messages: [{role: user, content: hi}]\nbogus: 1\n", "unknown field"),
    ("- just a list\n", "expected a mapping"),
    ("messages: [{role: user, content: '{{ j }}'}]\nvariables: {j: {type: json, default: "
     + "[" * 300 + "]" * 300 + "}}\n", "variables.j.default': the default nests deeper"),
    ("messages: [{role: user, content: hi}]\nparams: {metadata: "
     + "[" * 5000 + "]" * 5000 + "}\n", "cannot read it: nested too deeply"),
    ("versions:\n  - messages: [{role: user, content: a}]\n"
     "  - messages: [{role: user, content: b}]\nlabels: {production: 3}\n",
     "labels.production: version 3 will not exist"),
    ("messages: [{role: user, content: hi}]\n!!python/object:os.system x: 1\n", "cannot read"),
    ("messages: [{role: user, content: 'x {{ d }}'}]\n"
     "variables: {d: {type: string, default: 2024-01-01}}\n",
     "variables.d.default': the default holds a date, which is not JSON (in YAML, quote dates"),
])
def test_bad_files_change_nothing(url: str, tmp_path: Path, text: str, says: str) -> None:
    """A bad file (Python tags included: safe loading only) is exit 2 naming the file, and
    the good file beside it is not synced either."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "a_good.yaml").write_text(SUMMARISE)
    (prompts / "b_bad.yaml").write_text(text)
    result = run("sync", str(prompts), url=url)
    assert result.exit_code == 2 and says in result.stderr and "b_bad.yaml" in result.stderr
    assert run("list", url=url).stdout == ""


def test_the_readme_example_syncs_as_written(url: str, tmp_path: Path) -> None:
    """The README's ``prompts/summarise.yaml``, copied verbatim, syncs on an empty database,
    and a second sync is up to date."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(# prompts/summarise\.yaml.*?)```", readme, re.DOTALL)
    assert found is not None
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "summarise.yaml").write_text(found.group(1))
    first = run("sync", str(prompts), url=url)
    assert first.exit_code == 0, first.output
    assert run("sync", str(prompts), url=url).stdout.strip() == "up to date"
    assert run("list", url=url).stdout.strip() == "summarise  v1  production=1 staging=1"


def test_labels_are_checked_against_the_versions_after_the_sync(url: str,
                                                                tmp_path: Path) -> None:
    """A label may name a version the database has beyond the file, or the one the sync adds;
    one past that stops the sync naming the file and the label, and nothing is written, not
    even the other files' new versions."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    three = "".join(f"  - messages: [{{role: user, content: v{n}}}]\n" for n in (1, 2, 3))
    (prompts / "greet.yaml").write_text(f"versions:\n{three}")
    (prompts / "summarise.yaml").write_text(SUMMARISE)
    assert run("sync", str(prompts), url=url).exit_code == 0
    (prompts / "greet.yaml").write_text("messages: [{role: user, content: v4}]\n"
                                        "labels: {production: 4, staging: 2}\n")
    (prompts / "summarise.yaml").write_text(SUMMARISE.replace("You summarise", "Summarise"))
    (prompts / "z_bad.yaml").write_text(
        "messages: [{role: user, content: hi}]\nlabels: {production: 1, staging: 2}\n")
    refused = run("sync", str(prompts), url=url)
    assert refused.exit_code == 2
    assert "z_bad.yaml: labels.staging: version 2 will not exist" in refused.stderr
    assert run("list", url=url).stdout.splitlines() == ["greet  v3", "summarise  v1  production=1"]
    (prompts / "z_bad.yaml").unlink()
    synced = run("sync", str(prompts), url=url)
    assert synced.stdout.splitlines() == [
        "greet: version 4 added", "greet: production -> 4", "greet: staging -> 2",
        "summarise: version 2 added"]


def test_create_checks_labels_before_writing(url: str, tmp_path: Path) -> None:
    """``create`` with a label past the file's versions is exit 2 naming the label, and creates
    nothing; with good labels it creates the template and its labels."""
    path = tmp_path / "summarise.yaml"
    path.write_text(SUMMARISE.replace("production: 1", "production: 2"))
    refused = run("create", str(path), url=url)
    assert refused.exit_code == 2 and "labels.production: version 2" in refused.stderr
    assert run("list", url=url).stdout == ""
    path.write_text(SUMMARISE)
    assert run("create", str(path), url=url).stdout.splitlines() == [
        "summarise: created with 1 version(s)", "summarise: production -> 1"]


@pytest.mark.parametrize("args", [
    ("label", "summarise", "production", "2147483648"),
    ("show", "summarise", "--version", "2147483648"),
    ("rollback", "summarise", "production", "--to", "99999999999"),
    ("diff", "summarise", "1", "2147483648"),
    ("diff", "summarise", "2147483648", "1"),
])
def test_version_numbers_are_bounded_as_in_the_admin_api(url: str, tmp_path: Path,
                                                         args: tuple[str, ...]) -> None:
    """A version past 2,147,483,647 (the database's INTEGER) is a usage error naming the
    range, as the admin API's 400 is, never a value sent to the database."""
    path = tmp_path / "summarise.yaml"
    path.write_text(SUMMARISE)
    assert run("create", str(path), url=url).exit_code == 0
    refused = run(*args, url=url)
    assert refused.exit_code == 2
    assert "is not in the range 1<=x<=2147483647" in refused.stderr, refused.output


def test_params_are_held_to_the_gateways_limits(url: str, tmp_path: Path) -> None:
    """With ``SWITCHBOARD_CONFIG`` naming the gateway's config, ``params`` past its limits stop
    ``sync`` and ``version`` naming the file (nothing written); a config that does not load
    here is a warning and they go unchecked, as without one."""
    config = tmp_path / "gateway.yaml"
    config.write_text("providers: {mock: {type: mock}}\n"
                      "models: {chat: {targets: [{provider: mock, model: m}]}}\n"
                      "limits: {max_n: 4, max_tokens: 1000}\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "summarise.yaml").write_text(SUMMARISE.replace("{temperature: 0.2}",
                                                              "{temperature: 0.2, n: 5}"))
    env = {"SWITCHBOARD_CONFIG": str(config)}

    def with_env(*args: str, **extra: str) -> Result:
        return CliRunner(env={**env, **extra}).invoke(
            main, ["prompts", *args, "--database-url", url])

    refused = with_env("sync", str(prompts))
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "summarise.yaml: body: Invalid value for 'params.n': 'n' is 5" in refused.stderr
    assert "limits.max_n" in refused.stderr
    assert run("list", url=url).stdout == ""
    fits = tmp_path / "fits.yaml"
    fits.write_text(SUMMARISE.replace("{temperature: 0.2}", "{max_tokens: 1000, top_k: 3}"))
    assert with_env("create", str(fits)).exit_code == 0
    over = tmp_path / "over.yaml"
    over.write_text(SUMMARISE.replace("{temperature: 0.2}", "{max_completion_tokens: 1001}"))
    refused = with_env("version", "summarise", str(over))
    assert refused.exit_code == 2 and "params.max_completion_tokens" in refused.stderr
    config.write_text(config.read_text() + "bogus: 1\n")
    warned = with_env("version", "summarise", str(over))
    assert warned.exit_code == 0, warned.output
    assert "warning: params not checked against the gateway's limits" in warned.stderr
    assert run("version", "summarise", str(over), url=url).exit_code == 0
