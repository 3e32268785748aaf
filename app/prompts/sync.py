"""Templates kept as YAML files in git, synced into the database (``switchboard prompts sync``).

One file (``*.yaml`` or ``*.yml``) per template::

    id: summarise                 # optional: the file name without its extension
    # either one current body...
    messages:
      - {role: system, content: "You summarise {{ kind }}."}
      - {role: user, content: "{{ text }}"}
    variables:
      kind: {type: string, default: emails}
      text: {type: string}
    model: chat                   # optional default model
    params: {temperature: 0.2}    # optional default chat-request fields
    author: ada                   # optional
    note: shorter system prompt   # optional
    # ...or `versions:`, a list of such bodies, oldest first
    labels:
      production: 1               # a version number...
      staging: latest             # ...or latest (the highest after this sync)

Sync is idempotent: a template not in the database is created (with every version of
``versions:``, so file and database number them alike); one that exists gets a new version only
when the file's current body (the single body, or the last of ``versions:``) differs in content
(messages, variables, model, params; author and note are not content) from its latest version;
a label is moved only when it points elsewhere. A second sync of the same files changes nothing.
Labels the file does not name, and versions the database has beyond the file, are left alone.

A label must name a version that exists once the file is synced (the database's versions and
those the file adds). Files are read with YAML's safe loader (no tags that build objects), with
anchors and aliases (``&name``, ``*name``, ``<<: *name``) refused where they appear: an alias
copies what it names, so a few hundred bytes of them built gigabytes (templates synced from git
are untrusted input). A file is at most ``MAX_FILE_BYTES`` and ``MAX_NODES`` values, and each
version in it at most ``MAX_VERSION_BYTES`` (``VersionSpec``). Files are validated whole,
labels included, before anything is written; then everything is written in one transaction
(``PromptStore.write``). A bad file is a ``SyncError`` naming the file and the field, and
nothing changes. ``check_limits`` holds the files' ``params`` to a gateway's limits.
``version_file`` adds one file's body as a template's next version, its labels moved as a sync
moves them (``switchboard prompts version``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from app import errors
from app.prompts.model import (
    LATEST,
    MAX_VERSION_BYTES,
    VersionSpec,
    check_label,
    check_template_id,
    content_digest,
    params_limit_problem,
    parse,
)
from app.prompts.store import PromptStore, TemplateWrite, template_exists
from app.yaml_keys import StrictKeys

_BODY = ("messages", "variables", "model", "params", "author", "note")
MAX_FILE_BYTES = 2 * MAX_VERSION_BYTES
"""The largest template file read: room for a version of the most a version may hold, and the
versions before it in ``versions:``. Checked before the file is parsed."""
MAX_NODES = 100_000
"""The most YAML nodes (each mapping, list, key and value) a template file may hold; past it the
file is refused as it is read. PyYAML's pure-Python loader took 10 s and 300 MB for one megabyte
of small values (500,000 nodes); a template of a few messages and variables is a few hundred."""


class _Refused(yaml.YAMLError):
    """What YAML a template file may not use, where (``_Loader``)."""

    def __init__(self, what: str, mark: Any) -> None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        super().__init__(f"{where}{what}")


class _Loader(StrictKeys, yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing anchors and aliases, and nodes past ``MAX_NODES``, before
    the node is built, and a repeated key or one read as a boolean (``StrictKeys``)."""

    nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} YAML values, more than a template file may "
                           "hold", event.start_mark)
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            kind = "an alias (*" if isinstance(event, yaml.AliasEvent) else "an anchor (&"
            raise _Refused(f"{kind}{event.anchor}): YAML anchors and aliases are not "
                           "supported in template files; write the value out",
                           event.start_mark)
        return super().compose_node(parent, index)


class SyncError(ValueError):
    """A template file that cannot be synced; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class TemplateFile:
    """A parsed template file."""

    path: Path
    id: str
    versions: tuple[VersionSpec, ...]
    labels: dict[str, int | str]
    id_given: bool = False
    """Whether the file names its ``id`` (else it is the file's name)."""


def read_file(path: Path) -> TemplateFile:
    """``path`` parsed and validated (see the module docstring); ``SyncError`` if it is bad."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise SyncError(f"{path}: larger than the {MAX_FILE_BYTES} bytes a template file may "
                            "be")
        data = yaml.load(raw.decode("utf-8"), Loader=_Loader)  # a SafeLoader
    except _Refused as exc:
        raise SyncError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SyncError(f"{path}: cannot read it: {exc}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SyncError(f"{path}: cannot read it: nested too deeply") from None
    if not isinstance(data, dict):
        raise SyncError(f"{path}: expected a mapping (id, messages or versions, labels)")
    unknown = sorted(set(data) - {"id", "versions", "labels", *_BODY})
    if unknown:
        raise SyncError(f"{path}: unknown field(s) {', '.join(map(str, unknown))}")
    template_id = data.get("id", path.stem)
    try:
        check_template_id(str(template_id))
    except ValueError as exc:
        raise SyncError(f"{path}: id: {exc}") from None
    if "versions" in data:
        if any(key in data for key in _BODY) or not isinstance(data["versions"], list) \
                or not data["versions"]:
            raise SyncError(f"{path}: give either a non-empty 'versions' list or one body "
                            "(messages, variables, ...), not both")
        bodies = data["versions"]
    else:
        bodies = [{key: data[key] for key in _BODY if key in data}]
    versions = []
    for i, body in enumerate(bodies):
        try:
            versions.append(parse(VersionSpec, body))
        except errors.InvalidRequest as exc:
            where = f"versions[{i}]" if "versions" in data else "body"
            raise SyncError(f"{path}: {where}: {exc.message}") from None
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise SyncError(f"{path}: labels: expected a mapping of label to version or latest")
    for label, target in labels.items():
        try:
            check_label(str(label))
        except ValueError as exc:
            raise SyncError(f"{path}: labels: {exc}") from None
        if target != LATEST and (type(target) is not int or target < 1):
            raise SyncError(f"{path}: labels.{label}: expected a version number or latest")
    return TemplateFile(path, str(template_id), tuple(versions),
                        {str(k): v for k, v in labels.items()}, id_given="id" in data)


def check_limits(files: list[TemplateFile], *, max_n: int, max_tokens: int) -> None:
    """``SyncError`` naming the file and version whose ``params`` a gateway with these limits
    refuses on every call (``params_limit_problem``)."""
    for file in files:
        for i, spec in enumerate(file.versions):
            problem = params_limit_problem(spec.params, max_n=max_n, max_tokens=max_tokens)
            if problem is not None:
                where = f"versions[{i}]" if len(file.versions) > 1 else "body"
                raise SyncError(f"{file.path}: {where}: {problem.message}")


def read_dir(directory: Path) -> list[TemplateFile]:
    """Every template file in ``directory`` (not recursive), by name; ``SyncError`` for the
    first bad one or a template id given by two files."""
    if not directory.is_dir():
        raise SyncError(f"{directory}: not a directory")
    files = [read_file(p) for p in sorted(directory.iterdir())
             if p.suffix in {".yaml", ".yml"} and p.is_file()]
    seen: dict[str, Path] = {}
    for file in files:
        if file.id in seen:
            raise SyncError(f"{file.path}: template '{file.id}' is also in {seen[file.id]}")
        seen[file.id] = file.path
    return files


def _labels(file: TemplateFile, *, latest: int, current: dict[str, int],
            after: str = "this sync") -> dict[str, int]:
    """The file's labels that move, as version numbers; ``SyncError`` naming the label for one
    past ``latest`` (the highest version once the file is synced)."""
    moves: dict[str, int] = {}
    for label, target in sorted(file.labels.items()):
        number = latest if target == LATEST else int(target)
        if number > latest:
            raise SyncError(f"{file.path}: labels.{label}: version {number} will not exist: "
                            f"'{file.id}' will have versions 1 to {latest} after {after}")
        if current.get(label) != number:
            moves[label] = number
    return moves


def _created(file: TemplateFile) -> tuple[TemplateWrite, list[str]]:
    moves = _labels(file, latest=len(file.versions), current={})
    return (TemplateWrite(file.id, None, file.versions, moves),
            [f"{file.id}: created with {len(file.versions)} version(s)",
             *(f"{file.id}: {label} -> {number}" for label, number in moves.items())])


async def plan_file(store: PromptStore, file: TemplateFile) -> tuple[TemplateWrite | None,
                                                                     list[str]]:
    """What bringing the database in line with ``file`` writes (``None``: nothing), and what
    that does, one line each; ``SyncError`` for a label naming a version that would not exist.
    Reads only."""
    latest_digest = await store.latest_digest(file.id)
    if latest_digest is None:
        return _created(file)
    template = await store.get_template(file.id)
    added: tuple[VersionSpec, ...] = ()
    if latest_digest != content_digest(file.versions[-1].content()):
        added = (file.versions[-1],)
    latest = template.latest_version + len(added)
    moves = _labels(file, latest=latest, current=template.labels)
    done = [f"{file.id}: version {latest} added"] if added else []
    done += [f"{file.id}: {label} -> {number}" for label, number in moves.items()]
    if not done:
        return None, []
    return TemplateWrite(file.id, template.latest_version, added, moves), done


async def sync_files(store: PromptStore, files: list[TemplateFile]) -> list[str]:
    """Bring the database in line with ``files``, all or nothing: every file planned (and its
    labels checked) first, then everything written in one transaction. What was done, one line
    each (nothing when it already was)."""
    writes: list[TemplateWrite] = []
    done: list[str] = []
    for file in files:
        write, lines = await plan_file(store, file)
        if write is not None:
            writes.append(write)
        done += lines
    if writes:
        await store.write(writes)
    return done


async def version_file(store: PromptStore, template_id: str, file: TemplateFile) -> list[str]:
    """``file``'s body as the next version of ``template_id`` (whether or not it differs from
    the latest), and its labels moved as ``sync`` moves them (``latest``: the version added),
    in one transaction; what was done, one line each. ``SyncError``, before anything is
    written, for a file that names another template in its ``id``, one that lists several
    ``versions:`` (which of them is meant is not for this command to guess: ``sync`` adds the
    last when it differs), or a label naming a version that will not exist."""
    if file.id_given and file.id != template_id:
        raise SyncError(f"{file.path}: id: the file is template '{file.id}', not "
                        f"'{template_id}' (leave 'id' out, or name that template)")
    if len(file.versions) != 1:
        raise SyncError(f"{file.path}: versions: lists {len(file.versions)} versions; give one "
                        "body (messages, variables, ...) to add as the next version, or use "
                        "sync, which adds the last of them when it differs")
    if not file.labels:
        added = await store.add_version(template_id, file.versions[0])
        return [f"{template_id}: version {added.number} added"]
    template = await store.get_template(template_id)
    latest = template.latest_version + 1
    moves = _labels(replace(file, id=template_id), latest=latest, current=template.labels,
                    after="this version is added")
    await store.write([TemplateWrite(template_id, template.latest_version, file.versions,
                                     moves)])
    return [f"{template_id}: version {latest} added",
            *(f"{template_id}: {label} -> {number}" for label, number in moves.items())]


async def create_file(store: PromptStore, file: TemplateFile) -> list[str]:
    """A new template from ``file``, with all its versions and labels in one transaction; 409
    ``prompt_exists`` if there is one by that id."""
    if await store.latest_digest(file.id) is not None:
        raise template_exists(file.id)
    write, done = _created(file)
    await store.write([write])
    return done
