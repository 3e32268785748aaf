"""Template (``Slot.TEMPLATE``): a chat request that names a prompt template gets its messages.

The request extension, on ``POST /v1/chat/completions``::

    "prompt": {"id": "summarise", "version": 3, "variables": {"text": "..."}}
    "prompt": {"id": "summarise", "label": "production", "variables": {...}}

``version`` or ``label`` (not both); neither means the label ``production``; the label
``latest`` always means the highest version. The version's messages, rendered with the
variables (``app.prompts.render``), are placed first, followed by the client's own
``messages`` (which may then be empty or left out). The version's default ``model`` and
``params`` apply only where the client left the field out or null: the client's explicit fields
win. The ``prompt`` field is removed, so no upstream ever receives it.

This runs in ``on_body``, on the JSON object before it is validated, so the request that is
validated (``app.api.wire.parse``), checked against the key's models, admitted and sent is the
expanded one: ``call.request`` and ``call.body`` agree by construction, and a template's default
model is subject to the key's model list like any other.

Errors, in OpenAI's shape: a malformed ``prompt`` 400 naming the field (``prompt.version``); an
unknown template, version or label 404 naming it (``prompt.id``, ``prompt.version``,
``prompt.label``); variables missing, unknown or of the wrong type 400
``invalid_prompt_variables`` naming each of them (``param`` is the first,
``prompt.variables.<name>``); rendered messages past ``limits.max_body_bytes`` (UTF-8 bytes of
their text, computed from the values' sizes before anything is rendered) 413
``prompt_too_large`` naming the variable that adds the most (``prompt.id`` when the template's
own text is past the limit); no template database 503 ``prompts_unavailable`` with
``x-should-retry: false``, an unreachable one 503 ``prompts_unavailable`` with ``Retry-After``
(``RETRY_AFTER_S``). ``prompt`` on ``/v1/messages`` and ``/v1/embeddings`` is refused with a
400 (``prompt_not_supported``): templates are chat messages.

The call record carries ``prompt_id`` and ``prompt_version`` from the moment the version is
known (a call refused for its variables says which version refused it). A call that named no
model gets the version's default before anything can refuse it, so a refusal is recorded under
that model and its ``user`` and error message screened with that model's privacy policy.

Experiments (``app.routing.experiments``): when the call's model (the body's ``model``, else the
requested version's default) is split by an experiment some of whose variants pin a prompt
version (``prompt: {version: N}`` or ``{label: L}`` on the variant), the call is assigned its
variant here, by the experiment's sticky key, and pinned to that variant's route
(``ModelCall.pin``: routing does not assign it again; the record carries ``experiment`` and
``variant``). A variant with a ``prompt`` renders that version of the requested template instead
of the requested one; one without renders the requested one.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from app import errors
from app.db.engine import DATABASE_ERRORS, describe_error
from app.limits.headers import SHOULD_NOT_RETRY
from app.pipeline import ModelCall, Slot, Stage
from app.prompts.library import PromptLibrary
from app.prompts.model import (
    DEFAULT_LABEL,
    LABEL,
    LATEST,
    MAX_VERSION,
    TEMPLATE_ID,
    CompiledVersion,
)
from app.prompts.render import PromptVariablesError, added, bind, render_text, rendered_size
from app.prompts.store import LABEL_NOT_FOUND, label_not_found
from app.providers.base import Json
from app.schemas import EmbeddingRequest

log = logging.getLogger("switchboard.prompts")
FIELD = "prompt"
_KEYS = frozenset({"id", "version", "label", "variables"})
_PARAMS = {"template_id": "prompt.id", "version": "prompt.version", "label": "prompt.label"}


RETRY_AFTER_S = 2
"""``Retry-After`` of a 503 ``prompts_unavailable`` for a database that failed or did not answer
within ``app.prompts.library.LOOKUP_WAIT_S``: the next call asks it again, so a client that
waits a little may be served; 2 s, as ``keys_unavailable``."""


def no_database(message: str) -> errors.GatewayError:
    """The 503 ``prompts_unavailable`` of a gateway without a database: it has none for as long
    as it runs, so ``x-should-retry: false`` (the OpenAI SDKs then do not retry) and no
    ``Retry-After``."""
    refused = errors.GatewayError(message, status=503, code="prompts_unavailable")
    refused.headers.append(SHOULD_NOT_RETRY)
    return refused


@dataclass(frozen=True, slots=True)
class Reference:
    """What a request's ``prompt`` field asks for."""

    id: str
    version: int | None
    label: str | None
    variables: dict[str, Any]


def _bad(message: str, param: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param, code="invalid_prompt")


def reference(value: Any) -> Reference:
    """The ``prompt`` field validated (see the module docstring); 400 naming the bad part."""
    if not isinstance(value, dict):
        raise _bad("'prompt' must be an object: {\"id\": ..., \"version\" or \"label\": ..., "
                   "\"variables\": {...}}.", "prompt")
    for key in value:
        if key not in _KEYS:
            raise _bad(f"Unknown field in 'prompt': '{str(key)[:64]}' (expected id, version, "
                       "label, variables).", f"prompt.{str(key)[:64]}")
    template_id = value.get("id")
    if not isinstance(template_id, str) or not TEMPLATE_ID.fullmatch(template_id):
        raise _bad("'prompt.id' must be a template id (1-128 letters, digits, '_', '.', '-').",
                   "prompt.id")
    version = value.get("version")
    label = value.get("label")
    if version is not None and (type(version) is not int or not 1 <= version <= MAX_VERSION):
        raise _bad(f"'prompt.version' must be an integer from 1 to {MAX_VERSION}.",
                   "prompt.version")
    if label is not None and (not isinstance(label, str)
                              or not (label == LATEST or LABEL.fullmatch(label))):
        raise _bad("'prompt.label' must be a label name (a-z, 0-9, '_', '.', '-').",
                   "prompt.label")
    if version is not None and label is not None:
        raise _bad("Give 'prompt.version' or 'prompt.label', not both.", "prompt.label")
    variables = value.get("variables")
    if variables is None:
        variables = {}
    elif not isinstance(variables, dict):
        raise _bad("'prompt.variables' must be an object of variable names to values.",
                   "prompt.variables")
    return Reference(template_id, version, label, variables)


def render(version: CompiledVersion, variables: dict[str, Any], *,
           max_bytes: int) -> list[dict[str, Any]]:
    """The version's messages with ``variables`` substituted; 400 naming every bad variable;
    413 ``prompt_too_large`` when their text would come to more than ``max_bytes`` (UTF-8),
    found from the values' sizes before any text is built."""
    try:
        texts = bind(version.declared, variables)
    except PromptVariablesError as exc:
        first = next(iter(exc.problems))
        raise errors.InvalidRequest(
            f"Prompt template '{version.template_id}' version {version.number}: variable "
            f"{exc}.", param=f"prompt.variables.{first[:64]}",
            code="invalid_prompt_variables") from None
    size = rendered_size(version.literal_bytes, version.uses, texts)
    if size > max_bytes:
        raise _too_large(version, size, added(version.uses, texts), max_bytes)
    out: list[dict[str, Any]] = []
    for message in version.messages:
        rendered: dict[str, Any] = {"role": message.role,
                                    "content": render_text(message.text, texts)}
        if message.name is not None:
            rendered["name"] = message.name
        out.append(rendered)
    return out


def _too_large(version: CompiledVersion, size: int, parts: dict[str, int],
               max_bytes: int) -> errors.BodyTooLarge:
    """The 413 of a render past ``max_bytes``, naming the variable that adds the most
    (``parts``: what each adds), or ``prompt.id`` when the template's own text is past the
    limit by itself (no value the client could shorten would help)."""
    what = f"Prompt template '{version.template_id}' version {version.number}"
    limit = f"the limit of {max_bytes} bytes (limits.max_body_bytes)"
    largest = max(parts, key=parts.__getitem__, default=None)
    if largest is None or version.literal_bytes > max_bytes:
        return errors.BodyTooLarge(
            f"{what} has {version.literal_bytes} bytes of message text of its own, without "
            f"its variables, more than {limit}.", param="prompt.id", code="prompt_too_large")
    return errors.BodyTooLarge(
        f"{what} would render {size} bytes of messages, more than {limit}; variable "
        f"'{largest}' adds {parts[largest]} of them ({version.uses[largest]} placeholder(s)).",
        param=f"prompt.variables.{largest[:64]}", code="prompt_too_large")


def apply(body: Json, version: CompiledVersion, messages: list[dict[str, Any]]) -> None:
    """Put ``messages`` before the client's own, and the version's defaults where the client
    sent nothing (absent or null); remove ``prompt``."""
    body.pop(FIELD, None)
    own = body.get("messages")
    if own is None:
        own = []
    elif not isinstance(own, list):
        raise errors.InvalidRequest("'messages' must be an array.", param="messages",
                                    code="invalid_value")
    body["messages"] = messages + own
    if body.get("model") is None and version.model is not None:
        body["model"] = version.model
    for name, value in version.params.items():
        if body.get(name) is None:  # a copy: the cached version must never be changed
            body[name] = copy.deepcopy(value) if isinstance(value, dict | list) else value


def refuse_in_messages(body: Json, endpoint: str = "/v1/messages") -> None:
    """The 400 for a Messages body (``/v1/messages`` and its ``count_tokens``), or an
    ``endpoint``'s other than chat's, that names a template: they are served on
    ``/v1/chat/completions`` only."""
    if FIELD in body:
        raise errors.InvalidRequest(
            f"Prompt templates are served on /v1/chat/completions only; {endpoint} does "
            "not take 'prompt'.", param="prompt", code="prompt_not_supported")


class Template(Stage):
    slot = Slot.TEMPLATE

    def __init__(self, library: PromptLibrary | None) -> None:
        self._library = library

    async def on_body(self, call: ModelCall, body: Json) -> None:
        if FIELD not in body:
            return
        value = body.get(FIELD)
        if value is None:  # null means absent, as for every optional field
            del body[FIELD]
            return
        ref = reference(value)
        version = await self._version(ref, admin=call.caller.admin)
        model = body.get("model")
        if model is None and version.model is not None:
            # The version's default, set before anything below can refuse the call: a refusal
            # (a bad variable, a render too large) is recorded under the model the call would
            # have run on, and screened with its privacy policy (``Pipeline.seal``).
            body["model"] = model = version.model
        if isinstance(model, str):
            version = await self._experiment(call, body, ref, model, version)
        call.record.prompt_id, call.record.prompt_version = version.template_id, version.number
        apply(body, version, render(version, ref.variables,
                                    max_bytes=call.snapshot.limits.max_body_bytes))

    async def _experiment(self, call: ModelCall, body: Json, ref: Reference, model: str,
                          version: CompiledVersion) -> CompiledVersion:
        """The version this call renders when ``model``'s experiment pins prompt versions: its
        variant is assigned here (``ModelCall.variant_of``: the experiment's own sticky hash)
        and the call pinned to that variant's route, so routing does not assign it again; a
        variant with a ``prompt`` gets that version of the requested template, the others
        ``version``. The model is then fixed: a call that named none keeps the model of the
        version it asked for, so the variant's version cannot move it out of the experiment."""
        experiment = call.snapshot.table.experiment_of(model)
        if experiment is None or not experiment.pins_prompts:
            return version
        # The request's own user: a version's params may not set one (``END_USER``), so the
        # user on the call is the one its variant was assigned by.
        user = body.get("user")
        variant = call.variant_of(experiment, user=user if isinstance(user, str) else None)
        call.pin(variant.route, experiment=experiment.name, variant=variant.name)
        pinned = variant.prompt
        if pinned is None:
            return version
        try:
            return await self._version(Reference(ref.id, pinned.version, pinned.label, {}),
                                       admin=call.caller.admin)
        except errors.NotFound as exc:
            call.record.prompt_id = ref.id  # its version: the one that is not there
            asked = f"version {pinned.version}" if pinned.label is None \
                else f"label '{pinned.label}'"
            raise errors.NotFound(
                f"Experiment '{experiment.name}' variant '{variant.name}' renders {asked} of "
                f"prompt template '{ref.id}', which it does not have: {exc.message}",
                param="prompt.id", code=exc.code) from None

    async def on_request(self, call: ModelCall) -> None:
        if call.native is not None:
            refuse_in_messages(call.native)
        elif isinstance(call.request, EmbeddingRequest) and call.body is not None:
            # An embedding's body keeps fields it does not know, and would forward a template
            # reference (its variables' text included) upstream. (A completion's ``prompt`` is
            # its own text.)
            refuse_in_messages(call.body, "/v1/embeddings")

    async def _version(self, ref: Reference, *, admin: bool) -> CompiledVersion:
        """The version ``ref`` names. A label's 404 lists the template's labels to an admin
        caller only: templates are not scoped to keys, and any other key would learn them."""
        library = self._library
        if library is None:
            raise no_database("Prompt templates need a database, and this gateway has none "
                              "(the call log is off).")
        label = ref.label or DEFAULT_LABEL
        try:
            number = ref.version
            if number is None:
                number = await library.label(ref.id, label)
            return await library.version(ref.id, number)
        except errors.NotFound as exc:
            message = exc.message
            if exc.code == LABEL_NOT_FOUND and not admin:
                message = label_not_found(ref.id, label, None).message
            raise errors.NotFound(message, param=_PARAMS.get(exc.param or "", "prompt"),
                                  code=exc.code) from None
        except DATABASE_ERRORS as exc:
            log.warning("prompt template lookup failed, database unreachable: %s",
                        describe_error(exc))
            unavailable = errors.GatewayError("The prompt template database is unreachable; "
                                              "retry shortly.", status=503,
                                              code="prompts_unavailable")
            unavailable.headers.append((b"retry-after", b"%d" % RETRY_AFTER_S))
            raise unavailable from None
