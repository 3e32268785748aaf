"""``PromptStore`` on SQLite and Postgres: versions append-only and numbered, labels that move,
keep their history and roll back, precise errors, and the cache in front of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.db.models import PromptLabelMove, PromptVersion
from app.prompts import CompiledVersion, PromptStore, TemplateCreate, VersionSpec
from app.prompts.library import PromptLibrary
from app.prompts.model import LabelEvent, content_digest
from app.prompts.store import TemplateWrite


def version(text: str, **extra: Any) -> VersionSpec:
    return VersionSpec.model_validate({
        "messages": [{"role": "system", "content": "You summarise."},
                     {"role": "user", "content": text}],
        "variables": {"text": {"type": "string"}}, **extra})


async def make(store: PromptStore, template_id: str = "summarise",
               labels: list[str] | None = None) -> None:
    await store.create_template(TemplateCreate(id=template_id, version=version(
        "Summarise: {{ text }}", author="ada", note="first"), labels=labels or []))


async def test_versions_are_numbered_and_immutable(engine: AsyncEngine) -> None:
    """Version 1 comes with the template, the next is 2; the first is unchanged by it, and
    the store has no way to change a version."""
    store = PromptStore(engine)
    await make(store)
    second = await store.add_version("summarise", version("Briefly: {{ text }}", model="chat",
                                                          params={"temperature": 0.1}))
    assert second.number == 2 and second.spec.model == "chat"
    first = await store.get_version("summarise", 1)
    assert first.spec.messages[1].content == "Summarise: {{ text }}"
    assert first.spec.author == "ada" and first.spec.note == "first"
    template = await store.get_template("summarise")
    assert [v.number for v in template.versions] == [1, 2] and template.latest_version == 2
    assert not [name for name in dir(store) if name.startswith(("update", "delete", "edit"))]


async def test_labels_move_keep_history_and_roll_back(engine: AsyncEngine) -> None:
    """A label points at one version; moving it is recorded; a rollback returns it to where
    it was before its last move, or to a version given."""
    store = PromptStore(engine)
    await make(store, labels=["production"])
    for text in ("v2 {{ text }}", "v3 {{ text }}"):
        await store.add_version("summarise", version(text))
    assert await store.resolve("summarise", "production") == 1
    assert await store.resolve("summarise", "latest") == 3
    await store.set_label("summarise", "production", 3)
    assert await store.resolve("summarise", "production") == 3
    back = await store.rollback("summarise", "production")
    assert (back.from_version, back.to_version, back.rollback) == (3, 1, True)
    assert await store.resolve("summarise", "production") == 1
    await store.rollback("summarise", "production", 2)
    assert await store.resolve("summarise", "production") == 2
    template = await store.get_template("summarise")
    assert [(e.from_version, e.to_version) for e in template.history] == \
        [(None, 1), (1, 3), (3, 1), (1, 2)]
    assert template.labels == {"production": 2}


async def test_a_label_set_where_it_is_records_no_move(engine: AsyncEngine) -> None:
    """Pointing a label at the version it points at changes nothing and records no move, so a
    plain rollback afterwards still returns to the version before; a rollback also skips a
    move from a version to itself that an earlier release recorded."""
    store = PromptStore(engine)
    await make(store)
    await store.add_version("summarise", version("v2 {{ text }}"))
    await store.set_label("summarise", "staging", 1)
    await store.set_label("summarise", "staging", 2)
    again = await store.set_label("summarise", "staging", 2)
    assert (again.from_version, again.to_version, again.changed) == (2, 2, False)
    assert again.to_json()["moved_at"] is None
    same = await store.rollback("summarise", "staging", 2)
    assert (same.to_version, same.changed) == (2, False)
    history = (await store.get_template("summarise")).history
    assert [(e.from_version, e.to_version) for e in history] == [(None, 1), (1, 2)]
    back = await store.rollback("summarise", "staging")
    assert (back.from_version, back.to_version, back.changed) == (2, 1, True)
    async with engine.begin() as conn:  # as releases before this one recorded a repeat
        await conn.execute(insert(PromptLabelMove).values(
            template_id="summarise", label="staging", from_version=1, to_version=1,
            rollback=False, moved_at=datetime.now(UTC)))
    back = await store.rollback("summarise", "staging")
    assert (back.from_version, back.to_version) == (1, 2)


async def test_errors_name_what_is_missing(engine: AsyncEngine) -> None:
    """Unknown template, version and label are 404s naming them; a taken id and a rollback
    with no previous version are 409s."""
    store = PromptStore(engine)
    with pytest.raises(errors.NotFound) as caught:
        await store.get_version("nope", 1)
    assert caught.value.code == "prompt_not_found" and caught.value.param == "template_id"
    await make(store, labels=["staging"])
    with pytest.raises(errors.NotFound) as caught:
        await store.get_version("summarise", 9)
    assert caught.value.code == "prompt_version_not_found" and "version 9" in caught.value.message
    with pytest.raises(errors.NotFound) as caught:
        await store.resolve("summarise", "production")
    assert caught.value.param == "label" and "staging" in caught.value.message
    with pytest.raises(errors.NotFound):
        await store.set_label("summarise", "production", 5)
    with pytest.raises(errors.GatewayError) as conflict:
        await make(store)
    assert conflict.value.status_code == 409 and conflict.value.code == "prompt_exists"
    with pytest.raises(errors.GatewayError) as conflict:
        await store.rollback("summarise", "staging")
    assert conflict.value.code == "nothing_to_roll_back"


def chained(history: tuple[LabelEvent, ...], label: str) -> bool:
    """Whether each move of ``label`` starts where the one before it left the label."""
    moves = [e for e in history if e.label == label]
    return all(later.from_version == earlier.to_version
               for earlier, later in pairwise(moves))


async def test_concurrent_label_moves_run_one_after_another(engine: AsyncEngine) -> None:
    """Concurrent first settings of a new label all succeed (one creates it, the others move
    it), and concurrent moves and rollbacks of a label each start where the one before left
    it: no lost update, and a history whose every ``from_version`` is where the label was."""
    store = PromptStore(engine)
    await make(store)
    for text in ("v2 {{ text }}", "v3 {{ text }}"):
        await store.add_version("summarise", version(text))
    firsts = await asyncio.gather(*(store.set_label("summarise", "canary", 1 + i % 3)
                                    for i in range(8)))
    assert [event.from_version for event in firsts].count(None) == 1
    await store.set_label("summarise", "canary", 2)
    await store.set_label("summarise", "canary", 3)
    rollbacks = await asyncio.gather(*(store.rollback("summarise", "canary") for _ in range(8)))
    assert sorted((e.from_version, e.to_version) for e in rollbacks) == [(2, 3)] * 4 + [(3, 2)] * 4
    await asyncio.gather(*(store.rollback("summarise", "canary") if i % 2 else
                           store.set_label("summarise", "canary", 1 + i % 3) for i in range(8)))
    template = await store.get_template("summarise")
    assert chained(template.history, "canary")
    assert template.labels["canary"] == template.history[-1].to_version


async def test_a_stored_end_user_is_read_but_never_applied(engine: AsyncEngine) -> None:
    """A version stored with ``params.user`` before it was refused is still read as it was
    stored, and its compiled form (what renders) leaves ``user`` to the client."""
    store = PromptStore(engine)
    await make(store)
    async with engine.begin() as conn:
        await conn.execute(update(PromptVersion).values(
            params={"user": "alice", "temperature": 0.1}))
    stored = await store.get_version("summarise", 1)
    assert stored.spec.params == {"user": "alice", "temperature": 0.1}
    assert CompiledVersion.of(stored).params == {"temperature": 0.1}


async def test_listing_and_digest(engine: AsyncEngine) -> None:
    """The listing has each template's latest version and labels; the digest is the latest
    version's content hash."""
    store = PromptStore(engine)
    await make(store, "b", labels=["production"])
    await make(store, "a")
    await store.add_version("a", version("again {{ text }}"))
    listed = await store.list_templates()
    assert [(t.id, t.latest_version, t.labels) for t in listed] == \
        [("a", 2, {}), ("b", 1, {"production": 1})]
    assert await store.latest_digest("a") == content_digest(version("again {{ text }}").content())
    assert await store.latest_digest("zzz") is None


async def test_library_caches_versions_and_labels_for_a_ttl(engine: AsyncEngine) -> None:
    """A compiled version is read once; a label is re-read after its TTL, or at once after
    ``forget``."""
    store = PromptStore(engine)
    await make(store, labels=["production"])
    await store.add_version("summarise", version("v2 {{ text }}"))
    now = [0.0]
    library = PromptLibrary(store, label_ttl_s=5.0, clock=lambda: now[0])
    first = await library.version("summarise", 1)
    assert await library.version("summarise", 1) is first
    assert await library.label("summarise", "production") == 1
    await store.set_label("summarise", "production", 2)
    assert await library.label("summarise", "production") == 1  # cached
    now[0] = 6.0
    assert await library.label("summarise", "production") == 2  # expired: re-read
    await store.set_label("summarise", "production", 1)
    library.forget("summarise")
    assert await library.label("summarise", "production") == 1


async def test_write_is_all_or_nothing(engine: AsyncEngine) -> None:
    """``write`` adds templates, versions and labels in one transaction; a write planned
    against a template that has changed since, or a new template whose id is taken, is a
    409 ``prompt_conflict`` and nothing of the batch is written."""
    store = PromptStore(engine)
    await make(store, "taken")
    await store.write([TemplateWrite("a", None, (version("a {{ text }}"),
                                                 version("b {{ text }}")), {"production": 1}),
                       TemplateWrite("taken", 1, (version("c {{ text }}"),), {"staging": 2})])
    assert [(t.id, t.latest_version, t.labels) for t in await store.list_templates()] == \
        [("a", 2, {"production": 1}), ("taken", 2, {"staging": 2})]
    for stale in (TemplateWrite("taken", 1, (version("d {{ text }}"),)),
                  TemplateWrite("taken", None, (version("e {{ text }}"),))):
        with pytest.raises(errors.GatewayError) as conflict:
            await store.write([TemplateWrite("new", None, (version("f {{ text }}"),),
                                             {"production": 1}), stale])
        assert conflict.value.status_code == 409 and conflict.value.code == "prompt_conflict"
        assert "'taken'" in conflict.value.message
        assert [t.id for t in await store.list_templates()] == ["a", "taken"]
        assert (await store.get_template("taken")).latest_version == 2
