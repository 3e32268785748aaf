"""``PromptStore``: prompt templates, their versions and labels in the gateway's database
(Postgres or SQLite; tables of migration 0011).

Versions are append-only: there is no method that changes or deletes one; a new version of a
template gets the next number (``max + 1`` in the inserting transaction; the primary key
``(template_id, number)`` turns a concurrent insert of the same number into a retry). Moving a
label updates ``prompt_labels`` and appends to ``prompt_label_moves`` in one transaction, which
first takes the label's lock (``_lock``): concurrent moves and rollbacks of one label run one
after the other, each from where the one before left it, so every move's ``from_version`` is
where the label was. Two first settings of a new label race on its primary key: the loser runs
again and moves the label the winner created.
``write`` applies changes to several templates (new templates, versions, label moves) in one
transaction: all of them or none (``switchboard prompts sync``).

Errors: unknown template, version or label ``errors.NotFound`` (param ``template_id``,
``version`` or ``label``; codes ``prompt_not_found``, ``prompt_version_not_found``,
``prompt_label_not_found``); a template id taken 409 ``prompt_exists``; a rollback with nothing
to go back to 409 ``nothing_to_roll_back``; a ``write`` planned against versions that changed
meanwhile, or a version add or label move that lost ``_INSERT_TRIES`` races in a row, 409
``prompt_conflict``. Database failures (``DATABASE_ERRORS``) propagate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import errors
from app.db.models import Base, PromptLabel, PromptLabelMove, PromptTemplate, PromptVersion
from app.prompts.model import (
    LATEST,
    STORED,
    LabelEvent,
    TemplateCreate,
    TemplateRecord,
    VersionRecord,
    VersionSpec,
    content_digest,
)

_TEMPLATES = Base.metadata.tables[PromptTemplate.__tablename__]
_VERSIONS = Base.metadata.tables[PromptVersion.__tablename__]
_LABELS = Base.metadata.tables[PromptLabel.__tablename__]
_MOVES = Base.metadata.tables[PromptLabelMove.__tablename__]
_INSERT_TRIES = 3


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def template_not_found(template_id: str) -> errors.NotFound:
    return errors.NotFound(f"No prompt template '{template_id[:128]}'.", param="template_id",
                           code="prompt_not_found")


def version_not_found(template_id: str, number: int) -> errors.NotFound:
    return errors.NotFound(f"Prompt template '{template_id[:128]}' has no version {number}.",
                           param="version", code="prompt_version_not_found")


LABEL_NOT_FOUND = "prompt_label_not_found"


def label_not_found(template_id: str, label: str, known: list[str] | None) -> errors.NotFound:
    """The 404 of a label the template lacks, listing the labels it has (``known``; ``None``:
    not said, as to a caller who may not read the template, ``app.stages.template``)."""
    if known is None:
        has = ""
    else:
        has = f" (its labels: {', '.join(sorted(known))})" if known else " (it has no labels)"
    return errors.NotFound(f"Prompt template '{template_id[:128]}' has no label "
                           f"'{label[:64]}'{has}.", param="label", code=LABEL_NOT_FOUND)


def template_exists(template_id: str) -> errors.Conflict:
    return errors.Conflict(f"A prompt template '{template_id[:128]}' exists already; add a "
                           "version to it instead.", param="id", code="prompt_exists")


def _conflict(template_id: str) -> errors.Conflict:
    return errors.Conflict(f"Prompt template '{template_id[:128]}' was changed by another "
                           "writer meanwhile; nothing was written: run it again.",
                           param="template_id", code="prompt_conflict")


@dataclass(frozen=True, slots=True)
class TemplateWrite:
    """What ``PromptStore.write`` does to one template, planned against its state when read."""

    template_id: str
    latest: int | None
    """The template's highest version when the write was planned; ``None``: a new template."""
    versions: tuple[VersionSpec, ...] = ()
    """Appended as ``latest + 1``, ``latest + 2``, ... (from 1 for a new template)."""
    labels: dict[str, int] = field(default_factory=dict)
    """Labels to point at these versions (after the versions are added)."""


def _version(row: Any) -> VersionRecord:
    spec = VersionSpec.model_validate({
        "messages": row.messages, "variables": row.variables, "model": row.model,
        "params": row.params, "author": row.author, "note": row.note}, context=STORED)
    return VersionRecord(template_id=row.template_id, number=row.number, spec=spec,
                         created_at=_epoch(row.created_at))


def _event(row: Any) -> LabelEvent:
    return LabelEvent(label=row.label, from_version=row.from_version, to_version=row.to_version,
                      moved_at=_epoch(row.moved_at), rollback=row.rollback)


class PromptStore:
    """Templates over one ``AsyncEngine`` (the caller owns and disposes of it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- templates and versions

    async def create_template(self, spec: TemplateCreate) -> TemplateRecord:
        """A new template with ``spec.version`` as version 1 and ``spec.labels`` on it."""
        now = time.time()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(_TEMPLATES).values(id=spec.id,
                                                             created_at=_moment(now)))
                await self._insert_version(conn, spec.id, 1, spec.version, now)
                for label in spec.labels:
                    await self._move(conn, spec.id, label, 1, rollback=False, now=now)
        except IntegrityError:
            raise template_exists(spec.id) from None
        return await self.get_template(spec.id)

    async def add_version(self, template_id: str, spec: VersionSpec) -> VersionRecord:
        """``spec`` as the template's next version (``latest + 1``)."""
        for attempt in range(_INSERT_TRIES):
            try:
                async with self.engine.begin() as conn:
                    await self._require(conn, template_id)
                    latest = await self._latest(conn, template_id)
                    now = time.time()
                    await self._insert_version(conn, template_id, latest + 1, spec, now)
                    return await self._get_version(conn, template_id, latest + 1)
            except IntegrityError:  # another writer took this number: read the new max
                if attempt == _INSERT_TRIES - 1:
                    raise errors.Conflict(
                        "Versions of this template are being added concurrently; retry.",
                        param="template_id", code="prompt_conflict") from None
        raise AssertionError("not reached")

    async def write(self, writes: Sequence[TemplateWrite]) -> None:
        """Every write in one transaction: all of them or none. A template that was created,
        or given a version, since its write was planned is a 409 ``prompt_conflict``."""
        now = time.time()
        current = ""
        try:
            async with self.engine.begin() as conn:
                for one in writes:
                    current = one.template_id
                    if one.latest is None:
                        await conn.execute(insert(_TEMPLATES).values(id=one.template_id,
                                                                     created_at=_moment(now)))
                    elif await self._latest(conn, one.template_id) != one.latest:
                        raise _conflict(one.template_id)
                    for number, spec in enumerate(one.versions, start=(one.latest or 0) + 1):
                        await self._insert_version(conn, one.template_id, number, spec, now)
                    for label, number in sorted(one.labels.items()):
                        await self._move(conn, one.template_id, label, number, rollback=False,
                                         now=now)
        except IntegrityError:  # a template or version number taken by a concurrent writer
            raise _conflict(current) from None

    async def list_templates(self) -> list[TemplateRecord]:
        """Every template (without its versions; ``latest_version`` and labels set), by id."""
        latest = (select(_VERSIONS.c.template_id, func.max(_VERSIONS.c.number).label("latest"))
                  .group_by(_VERSIONS.c.template_id).subquery())
        query = (select(_TEMPLATES, latest.c.latest)
                 .join(latest, latest.c.template_id == _TEMPLATES.c.id)
                 .order_by(_TEMPLATES.c.id))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            labels: dict[str, dict[str, int]] = {}
            for row in (await conn.execute(select(_LABELS))).all():
                labels.setdefault(row.template_id, {})[row.label] = row.version
        return [TemplateRecord(id=row.id, created_at=_epoch(row.created_at), versions=(),
                               latest_version=row.latest, labels=labels.get(row.id, {}))
                for row in rows]

    async def get_template(self, template_id: str) -> TemplateRecord:
        """The template with every version, its labels and their history."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_TEMPLATES).where(
                _TEMPLATES.c.id == template_id))).first()
            if row is None:
                raise template_not_found(template_id)
            versions = tuple(_version(v) for v in (await conn.execute(
                select(_VERSIONS).where(_VERSIONS.c.template_id == template_id)
                .order_by(_VERSIONS.c.number))).all())
            labels = await self._labels(conn, template_id)
            history = tuple(_event(m) for m in (await conn.execute(
                select(_MOVES).where(_MOVES.c.template_id == template_id)
                .order_by(_MOVES.c.id))).all())
        return TemplateRecord(id=row.id, created_at=_epoch(row.created_at), versions=versions,
                              latest_version=versions[-1].number if versions else 0,
                              labels=labels, history=history)

    async def get_version(self, template_id: str, number: int) -> VersionRecord:
        async with self.engine.connect() as conn:
            return await self._get_version(conn, template_id, number)

    async def resolve(self, template_id: str, label: str) -> int:
        """The version ``label`` points at (``latest``: the highest)."""
        async with self.engine.connect() as conn:
            if label == LATEST:
                await self._require(conn, template_id)
                return await self._latest(conn, template_id)
            found = await conn.scalar(select(_LABELS.c.version).where(
                _LABELS.c.template_id == template_id, _LABELS.c.label == label))
            if found is not None:
                return int(found)
            await self._require(conn, template_id)
            raise label_not_found(template_id, label, list(await self._labels(conn,
                                                                            template_id)))

    async def latest_digest(self, template_id: str) -> str | None:
        """The content digest of the highest version; ``None`` if there is no such template."""
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(_VERSIONS.c.digest).where(_VERSIONS.c.template_id == template_id)
                .order_by(_VERSIONS.c.number.desc()).limit(1))

    # ---- labels

    async def set_label(self, template_id: str, label: str, version: int) -> LabelEvent:
        """Point ``label`` at ``version`` (which must exist); already there, nothing changes
        (``LabelEvent.changed`` false, no move recorded)."""
        for attempt in range(_INSERT_TRIES):
            try:
                async with self.engine.begin() as conn:
                    await self._get_version(conn, template_id, version)
                    return await self._move(conn, template_id, label, version, rollback=False)
            except IntegrityError:  # a concurrent first setting created the label: move it
                if attempt == _INSERT_TRIES - 1:
                    raise errors.Conflict(
                        f"Label '{label}' of this template is being moved concurrently; retry.",
                        param="label", code="prompt_conflict") from None
        raise AssertionError("not reached")

    async def rollback(self, template_id: str, label: str,
                       version: int | None = None) -> LabelEvent:
        """Move ``label`` to ``version``, or (``None``) back to the version it pointed at before
        its last move (two rollbacks in a row return to where it started, as ``cd -`` does). A
        move from a version to itself, which earlier releases recorded for a repeated move, is
        not a move: the one before it counts. Already at the version, nothing changes."""
        async with self.engine.begin() as conn:
            # The lock before the history is read: a concurrent move lands before this read
            # or waits for this rollback, never in between. Labels are never deleted, so a
            # label missing here is missing, and a rollback never inserts one (no retry).
            if await self._lock(conn, template_id, label) is None:
                await self._require(conn, template_id)
                raise label_not_found(template_id, label,
                                      list(await self._labels(conn, template_id)))
            if version is None:
                last = (await conn.execute(
                    select(_MOVES.c.from_version).where(
                        _MOVES.c.template_id == template_id, _MOVES.c.label == label,
                        _MOVES.c.from_version != _MOVES.c.to_version)
                    .order_by(_MOVES.c.id.desc()).limit(1))).scalar()
                if last is None:
                    raise errors.Conflict(
                        f"Label '{label}' has never pointed at another version of "
                        f"'{template_id}': name the version to roll back to.", param="label",
                        code="nothing_to_roll_back")
                version = int(last)
            else:
                await self._get_version(conn, template_id, version)
            return await self._move(conn, template_id, label, version, rollback=True)

    # ---- helpers

    async def _insert_version(self, conn: AsyncConnection, template_id: str, number: int,
                              spec: VersionSpec, now: float) -> None:
        content = spec.content()
        await conn.execute(insert(_VERSIONS).values(
            template_id=template_id, number=number, messages=content["messages"],
            variables=content["variables"], model=spec.model, params=spec.params,
            author=spec.author, note=spec.note, digest=content_digest(content),
            created_at=_moment(now)))

    async def _move(self, conn: AsyncConnection, template_id: str, label: str, version: int,
                    *, rollback: bool, now: float | None = None) -> LabelEvent:
        """Point ``label`` at ``version`` and record the move, under the label's lock; a label
        already at ``version`` is left as it is, with no move recorded (``LabelEvent.changed``
        false): a repeated move was recorded as one from the version to itself, and a rollback
        then went nowhere. A new label that a concurrent transaction created meanwhile raises
        ``IntegrityError`` (the caller's transaction then runs again, or fails as a whole).
        ``now``: the moment recorded (the version's own, for a label set with a new version),
        by default the clock's once the lock is held: a move that waited for a concurrent one
        is stamped after it, so the history's order (by id) is its ``moved_at`` order."""
        current = await self._lock(conn, template_id, label)
        if now is None:
            now = time.time()
        if current == version:  # already there: nothing moves, nothing to roll back to
            return LabelEvent(label=label, from_version=current, to_version=version,
                              moved_at=None, rollback=rollback)
        if current is None:
            await conn.execute(insert(_LABELS).values(template_id=template_id, label=label,
                                                      version=version, updated_at=_moment(now)))
        else:
            await conn.execute(update(_LABELS).where(
                _LABELS.c.template_id == template_id, _LABELS.c.label == label)
                .values(version=version, updated_at=_moment(now)))
        await conn.execute(insert(_MOVES).values(
            template_id=template_id, label=label, from_version=current, to_version=version,
            rollback=rollback, moved_at=_moment(now)))
        return LabelEvent(label=label, from_version=current, to_version=version, moved_at=now,
                          rollback=rollback)

    async def _lock(self, conn: AsyncConnection, template_id: str, label: str) -> int | None:
        """Lock ``label``'s row until ``conn``'s transaction ends, and return where it points
        (``None``: no such label when the lock was tried, and nothing locked).

        One statement for both databases: an ``UPDATE`` that changes nothing takes Postgres's
        row lock (a concurrent one waits for this transaction, then sees its change), and on
        SQLite the database's write lock (the driver begins the transaction at the first
        write; reads before it ran outside any transaction, so a ``SELECT ... FOR UPDATE``,
        which SQLite ignores, would leave the read-then-write race open). When it matched no
        row, the label is new even if the ``SELECT`` would now see it: under Postgres's READ
        COMMITTED each statement sees what committed before it began, so a label created by
        a concurrent transaction in between would be read but not locked."""
        where = (_LABELS.c.template_id == template_id, _LABELS.c.label == label)
        locked = await conn.execute(update(_LABELS).where(*where)
                                    .values(updated_at=_LABELS.c.updated_at))
        if not locked.rowcount:
            return None
        return await conn.scalar(select(_LABELS.c.version).where(*where))

    async def _require(self, conn: AsyncConnection, template_id: str) -> None:
        found = await conn.scalar(select(_TEMPLATES.c.id).where(_TEMPLATES.c.id == template_id))
        if found is None:
            raise template_not_found(template_id)

    async def _latest(self, conn: AsyncConnection, template_id: str) -> int:
        found = await conn.scalar(select(func.max(_VERSIONS.c.number)).where(
            _VERSIONS.c.template_id == template_id))
        return int(found or 0)

    async def _labels(self, conn: AsyncConnection, template_id: str) -> dict[str, int]:
        rows = (await conn.execute(select(_LABELS.c.label, _LABELS.c.version).where(
            _LABELS.c.template_id == template_id))).all()
        return {row.label: row.version for row in rows}

    async def _get_version(self, conn: AsyncConnection, template_id: str,
                           number: int) -> VersionRecord:
        row = (await conn.execute(select(_VERSIONS).where(
            _VERSIONS.c.template_id == template_id, _VERSIONS.c.number == number))).first()
        if row is None:
            await self._require(conn, template_id)
            raise version_not_found(template_id, number)
        return _version(row)
