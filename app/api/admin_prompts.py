"""The admin API for prompt templates: ``/admin/prompts``.

Access as for the rest of the admin API (``AdminDep``). Versions are immutable: there is no route
that changes or deletes one (``PUT``/``PATCH``/``DELETE`` on a version are 405); a change is a new
version. Labels move (``PUT .../labels/{label}``) and roll back; each move is kept in the
template's ``label_history``. A move made here is seen by this worker's next request at once, by
other workers and gateways within ``app.prompts.library.LABEL_TTL_S`` seconds.

- ``POST /admin/prompts``: a template and its version 1 (``{"id", "version", "labels"}``);
- ``GET /admin/prompts``: every template (latest version, labels);
- ``GET /admin/prompts/{id}``: one, with every version, its labels and their history;
- ``POST /admin/prompts/{id}/versions``: the next version;
- ``GET /admin/prompts/{id}/versions/{n}``: one version;
- ``GET /admin/prompts/{id}/diff?from=a&to=b``: a unified diff of the messages, and the other
  fields that differ as JSON (exact: ``app.prompts.diff``);
- ``PUT /admin/prompts/{id}/labels/{label}`` ``{"version": n}``: point a label at a version
  (one already there: ``changed`` false, and no move recorded);
- ``POST /admin/prompts/{id}/labels/{label}/rollback`` ``{"version": n}`` or ``{}``: back to a
  given version, or to where the label pointed before its last move.

Errors: bad input 400 naming the field (a version number past ``MAX_VERSION`` among them;
``params`` whose ``n`` or token limit this gateway's ``limits`` refuse on every call; a
value the database refuses, such as a NUL character, 400 ``invalid_value``); unknown template,
version or label 404 naming it (a diff's version: ``from`` or ``to``); a template id taken or
nothing to roll back to 409; a version add that kept losing races to concurrent ones 409
``prompt_conflict`` (concurrent label moves wait for each other: ``app.prompts.store``); no
database 503 ``prompts_unavailable`` (``x-should-retry: false``); database unreachable 503
``database_unavailable``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import AfterValidator

from app import errors
from app.api.deps import AdminDep, GatewayDep
from app.api.guard import GuardedRoute
from app.calllog.query import WholeNumber
from app.db.engine import answering
from app.keys.model import no_nul
from app.prompts import LabelEvent, TemplateCreate, VersionRecord, VersionSpec
from app.prompts.diff import diff
from app.prompts.library import PromptLibrary
from app.prompts.model import (
    MAX_VERSION,
    LabelMove,
    Rollback,
    check_label,
    params_limit_problem,
)
from app.resources import resources_of
from app.stages.template import no_database

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger("switchboard.admin")

router = APIRouter(prefix="/admin/prompts", tags=["admin"], route_class=GuardedRoute)


def get_library(request: Request) -> PromptLibrary:
    """The gateway's prompt library; 503 ``prompts_unavailable`` without a database."""
    library = resources_of(request).prompts
    if library is None:
        raise no_database("Prompt templates need a database, and this gateway has none.")
    return library


LibraryDep = Annotated[PromptLibrary, Depends(get_library)]
TemplateId = Annotated[str, Path(max_length=128), AfterValidator(no_nul)]
"""A template id of a path: a NUL is a 400 naming ``template_id``, as ``call_id``'s is (not the
database's own refusal, naming nothing)."""
Number = Annotated[int, WholeNumber, Path(ge=1, le=MAX_VERSION)]


def _label(label: str) -> str:
    try:
        return check_label(label)
    except ValueError as exc:
        raise errors.InvalidRequest(f"Invalid value for 'label': {exc}", param="label",
                                    code="invalid_value") from None


def _check_limits(spec: VersionSpec, gateway: Gateway, *, param: str) -> None:
    """400 for ``params`` that this gateway's limits refuse on every call."""
    limits = gateway.limits
    problem = params_limit_problem(spec.params, max_n=limits.max_n, max_tokens=limits.max_tokens,
                                   param=param)
    if problem is not None:
        raise problem


@router.post("", status_code=201)
async def create_template(spec: TemplateCreate, admin: AdminDep, library: LibraryDep,
                          gateway: GatewayDep) -> dict[str, Any]:
    """A new template with its version 1 (and the labels given on it)."""
    _check_limits(spec.version, gateway, param="version.params")
    async with answering("prompt database", log=log):
        record = await library.store.create_template(spec)
    library.forget(spec.id)
    return record.to_json()


@router.get("")
async def list_templates(admin: AdminDep, library: LibraryDep) -> dict[str, Any]:
    """Every template, by id: its latest version and its labels."""
    async with answering("prompt database", log=log):
        records = await library.store.list_templates()
    return {"object": "list", "data": [record.summary() for record in records]}


@router.get("/{template_id}")
async def get_template(template_id: TemplateId, admin: AdminDep,
                       library: LibraryDep) -> dict[str, Any]:
    """The template with every version, its labels and the labels' history."""
    async with answering("prompt database", log=log):
        return (await library.store.get_template(template_id)).to_json()


@router.post("/{template_id}/versions", status_code=201)
async def add_version(template_id: TemplateId, spec: VersionSpec, admin: AdminDep,
                      library: LibraryDep, gateway: GatewayDep) -> dict[str, Any]:
    """The template's next version (labels stay where they are: move one to serve it)."""
    _check_limits(spec, gateway, param="params")
    async with answering("prompt database", log=log):
        record = await library.store.add_version(template_id, spec)
    library.forget(template_id)  # "latest" moved
    return record.to_json()


@router.get("/{template_id}/versions/{number}")
async def get_version(template_id: TemplateId, number: Number, admin: AdminDep,
                      library: LibraryDep) -> dict[str, Any]:
    async with answering("prompt database", log=log):
        return (await library.store.get_version(template_id, number)).to_json()


@router.get("/{template_id}/diff")
async def diff_versions(template_id: TemplateId, admin: AdminDep, library: LibraryDep,
                        old: Annotated[int, WholeNumber,
                                       Query(alias="from", ge=1, le=MAX_VERSION)],
                        new: Annotated[int, WholeNumber, Query(alias="to", ge=1, le=MAX_VERSION)],
                        ) -> dict[str, Any]:
    """What changed from version ``from`` to version ``to`` (a missing one a 404 naming
    ``from`` or ``to``)."""
    async with answering("prompt database", log=log):
        before = await _version_as(library, template_id, old, param="from")
        after = await _version_as(library, template_id, new, param="to")
    return diff(before, after)


async def _version_as(library: PromptLibrary, template_id: str, number: int, *,
                      param: str) -> VersionRecord:
    """Version ``number``; a missing one is a 404 naming ``param`` (the query parameter that
    asked for it) rather than the store's ``version``."""
    try:
        return await library.store.get_version(template_id, number)
    except errors.NotFound as exc:
        if exc.param != "version":  # no such template: its own 404
            raise
        raise errors.NotFound(exc.message, param=param, code=exc.code) from None


@router.put("/{template_id}/labels/{label}")
async def set_label(template_id: TemplateId, label: str, move: LabelMove, admin: AdminDep,
                    library: LibraryDep) -> dict[str, Any]:
    """Point ``label`` at ``version`` (creating the label if it is new; already there, nothing
    changes: ``changed`` false, no move in its history)."""
    async with answering("prompt database", log=log):
        event = await library.store.set_label(template_id, _label(label), move.version)
    library.forget(template_id)
    return _label_answer(template_id, event)


@router.post("/{template_id}/labels/{label}/rollback")
async def rollback_label(template_id: TemplateId, label: str, admin: AdminDep,
                         library: LibraryDep,
                         spec: Annotated[Rollback | None, Body()] = None) -> dict[str, Any]:
    """Move ``label`` back: to ``version`` when given, else to where it pointed before its
    last move (already there: ``changed`` false, as for a move)."""
    async with answering("prompt database", log=log):
        event = await library.store.rollback(template_id, _label(label),
                                             spec.version if spec is not None else None)
    library.forget(template_id)
    return _label_answer(template_id, event)


def _label_answer(template_id: str, event: LabelEvent) -> dict[str, Any]:
    """A label move's answer: the move, and whether the label moved at all (``changed``)."""
    return {"object": "prompt.label", "template_id": template_id, **event.to_json(),
            "changed": event.changed}
