"""Prompt templates: the admin input a version is made from, and the records read back.

A template is a name (its id) and numbered versions 1..n. A version is immutable once created:
its messages (with ``{{ variable }}`` placeholders, ``app.prompts.render``), its declared
variables (type, optional default, description), an optional default model and parameters, its
author and a note. Labels (``production``, ``staging``, ...) point at one version each and move;
``latest`` is reserved: it always means the highest version.

``VersionSpec`` validates a version completely when it is created (every placeholder declared,
defaults of their declared type, parameters valid chat-request fields, the whole at most
``MAX_VERSION_BYTES``), so a stored version can always be rendered; ``parse`` turns a failure
into ``errors.InvalidRequest`` naming the field. ``params_limit_problem`` holds ``params`` to a
gateway's own limits on ``n`` and the token limits, which the caller knows (the admin API: its
running config; ``switchboard prompts``: ``SWITCHBOARD_CONFIG``'s).

(Past 400 lines: the input models and the records read back share the bounds and name rules
above, and each record is what one input model becomes once stored.)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app import errors
from app.keys.model import no_nul
from app.prompts.render import (
    NAME,
    Compiled,
    Declared,
    TemplateSyntaxError,
    VarType,
    compile_text,
    json_problem,
    measure,
    placeholders,
    type_problem,
)
from app.times import iso

TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
LATEST = "latest"
"""The reserved label: always the highest version (never stored, never set)."""
DEFAULT_LABEL = "production"
"""The label a request that names neither a version nor a label gets."""
MAX_VERSION = 2**31 - 1
"""The highest version number (the database's INTEGER column): a larger one is a 400 naming
it, not a query the database refuses."""
MAX_MESSAGES = 100
MAX_VARIABLES = 100
MAX_CONTENT = 200_000
MAX_VERSION_BYTES = 8 * 1024 * 1024
"""The most a version's content (messages, variables, model and params: ``VersionSpec.content``)
may come to as compact JSON, in bytes, however it arrives (the admin API, ``switchboard prompts
create``/``version``/``sync``): the admin API's default body limit (``limits.max_body_bytes``).
Without it a 509-byte YAML file whose aliases expand stored a 69 MB version, which every
compile, admin read and call then paid for."""
RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options", "prompt", "user"})
"""Request fields a version's ``params`` may not set (the model has its own field; the
messages are the template; streaming is the client's choice; ``user`` names the client's end
user, see ``END_USER``)."""
END_USER = "user"
"""The request field naming the end user, which an experiment's ``sticky: user`` assigns a
variant by. A version may not set it: in an experiment that pins prompt versions the variant
picks the version, so a version's ``user`` cannot be known when the variant is assigned, and
filled in afterwards it would put a user on the call that its variant was not assigned by (the
same user getting either version). A version stored with it before it was refused is read as
it was (``STORED``) but never applies it (``CompiledVersion.of``)."""
STORED = {"stored": True}
"""The validation context of a version read back from the database: it was valid when it was
written, so rules added since (``END_USER`` in ``params``) do not refuse it."""

M = TypeVar("M", bound=BaseModel)
_FORBID = ConfigDict(extra="forbid", strict=True)


class TemplateMessage(BaseModel):
    """One message of a template: its content may hold ``{{ variable }}`` placeholders."""

    model_config = _FORBID
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_CONTENT), AfterValidator(no_nul)]
    name: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(no_nul)] | None \
        = None


class VariableSpec(BaseModel):
    """A declared variable. Without ``default`` it is required; with one (of its ``type``;
    ``null`` only for ``json``) it is optional."""

    model_config = _FORBID
    type: VarType = "string"
    default: Any = None
    description: Annotated[str, Field(max_length=1000), AfterValidator(no_nul)] | None = None

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @field_validator("default")
    @classmethod
    def _default_typed(cls, default: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")  # absent when the type itself was refused
        if kind is not None:
            why = type_problem(kind, default) or json_problem(default)
            if why is not None:
                raise ValueError(f"the default {why}")
        return default

    def declared(self) -> Declared:
        return Declared(self.type, self.has_default, self.default)

    def to_json(self) -> dict[str, Any]:
        """Normalised: ``type`` always, ``default`` only when there is one."""
        out: dict[str, Any] = {"type": self.type}
        if self.has_default:
            out["default"] = self.default
        if self.description is not None:
            out["description"] = self.description
        return out


class VersionSpec(BaseModel):
    """A new version's content and provenance (``POST /admin/prompts/{id}/versions``)."""

    model_config = _FORBID
    messages: Annotated[list[TemplateMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    variables: Annotated[dict[str, VariableSpec], Field(max_length=MAX_VARIABLES)] = \
        Field(default_factory=dict)
    model: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(no_nul)] | None \
        = None
    """The public model the request gets when it names none."""
    params: dict[str, Any] | None = None
    """Chat-request fields (``temperature``, ``max_tokens``, ...) the request gets when it
    leaves them out."""
    author: Annotated[str, Field(max_length=128), AfterValidator(no_nul)] | None = None
    note: Annotated[str, Field(max_length=2000), AfterValidator(no_nul)] | None = None

    @field_validator("variables")
    @classmethod
    def _names(cls, variables: dict[str, VariableSpec]) -> dict[str, VariableSpec]:
        for name in variables:
            if not NAME.fullmatch(name):
                raise ValueError(f"{name[:80]!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*, "
                                 "at most 64 characters)")
        return variables

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any] | None,
                info: ValidationInfo) -> dict[str, Any] | None:
        if params is None:
            return None
        why = json_problem(params)
        if why is not None:
            raise ValueError(f"params {why}")
        reserved = sorted(RESERVED_PARAMS & params.keys())
        if info.context == STORED:
            reserved = [name for name in reserved if name != END_USER]
        if reserved:
            raise ValueError(f"params may not set {', '.join(reserved)}")
        from app.api.wire import parse as parse_request  # the request parser names the field
        from app.schemas import ChatRequest

        probe = {"model": "m", "messages": [{"role": "user", "content": "x"}], **params}
        try:
            parse_request(ChatRequest, {k: v for k, v in probe.items() if v is not None})
        except errors.InvalidRequest as exc:
            raise ValueError(exc.message) from None
        return params

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> VersionSpec:
        """At most ``MAX_VERSION_BYTES`` (a stored version is read as it was written)."""
        if info.context != STORED:
            size = len(orjson.dumps(self.content()))
            if size > MAX_VERSION_BYTES:
                raise ValueError(f"the version comes to {size} bytes as JSON (messages, "
                                 f"variables, model and params), more than the "
                                 f"{MAX_VERSION_BYTES} a version may hold")
        return self

    @model_validator(mode="after")
    def _placeholders_declared(self) -> VersionSpec:
        for i, message in enumerate(self.messages):
            try:
                used = placeholders(compile_text(message.content))
            except TemplateSyntaxError as exc:
                raise _content_error(i, message.content, str(exc)) from None
            unknown = [name for name in used if name not in self.variables]
            if unknown:
                names = ", ".join(repr(n) for n in unknown)
                raise _content_error(i, message.content, f"uses {names}, not declared in "
                                                         "variables")
        return self

    def content(self) -> dict[str, Any]:
        """What makes two versions the same prompt: messages, variables, model and params
        (author and note are provenance, not content)."""
        return {"messages": [m.model_dump(exclude_none=True) for m in self.messages],
                "variables": {k: v.to_json() for k, v in self.variables.items()},
                "model": self.model, "params": self.params}


TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")


def params_limit_problem(params: dict[str, Any] | None, *, max_n: int, max_tokens: int,
                         param: str = "params") -> errors.InvalidRequest | None:
    """The 400 for ``params`` that a gateway with these limits (``limits.max_n``,
    ``limits.max_tokens``) refuses on every call (``None`` when there is none): ``n`` past
    ``max_n``, or a token limit past ``max_tokens``, which caps every model's. The request
    parser cannot know them (``VersionSpec`` checks the rest); ``param`` is where ``params``
    is in the input (``version.params`` on ``POST /admin/prompts``)."""
    if not params:
        return None
    checks = [("n", max_n, "limits.max_n"),
              *((name, max_tokens, "limits.max_tokens") for name in TOKEN_LIMITS)]
    for name, limit, setting in checks:
        value = params.get(name)
        if isinstance(value, int) and value > limit:
            return errors.InvalidRequest(
                f"Invalid value for '{param}.{name}': '{name}' is {value}; the gateway's "
                f"limit is {limit} ({setting}), so every call leaving it to this version would be "
                "refused", param=f"{param}.{name}", code="invalid_prompt")
    return None


def _content_error(index: int, content: str, message: str) -> ValidationError:
    """A problem of ``messages[index].content``, located there. A model validator's
    ``ValueError`` is reported at the model itself (no field: ``param`` would be null);
    pydantic reports the line errors of a ``ValidationError`` raised in a validator at their
    own location, under the enclosing model's (``version.messages.0.content`` on ``POST
    /admin/prompts``), as ``test_render`` and ``test_gateway`` pin down."""
    problem = PydanticCustomError("value_error", "{reason}", {"reason": message})
    return ValidationError.from_exception_data(VersionSpec.__name__, [InitErrorDetails(
        type=problem, loc=("messages", index, "content"), input=content)])


def content_digest(content: dict[str, Any]) -> str:
    """A hash of a version's content (``VersionSpec.content``), key order ignored."""
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


class TemplateCreate(BaseModel):
    """A new template with its version 1 (``POST /admin/prompts``)."""

    model_config = _FORBID
    id: str
    version: VersionSpec
    labels: Annotated[list[str], Field(max_length=16)] = Field(default_factory=list)
    """Labels to point at version 1 at once."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_template_id(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        return [check_label(label) for label in labels]


class LabelMove(BaseModel):
    """``PUT /admin/prompts/{id}/labels/{label}``: point the label at ``version``."""

    model_config = _FORBID
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)]


class Rollback(BaseModel):
    """``POST /admin/prompts/{id}/labels/{label}/rollback``: to ``version``, or (none given)
    to the version the label pointed at before its last move."""

    model_config = _FORBID
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)] | None = None


def check_template_id(value: str) -> str:
    if not TEMPLATE_ID.fullmatch(value):
        raise ValueError("a template id is 1-128 letters, digits, '_', '.' or '-', starting "
                         "with a letter or digit")
    return value


def check_label(value: str) -> str:
    if not LABEL.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a label (1-64 of a-z, 0-9, '_', '.', '-')")
    if value == LATEST:
        raise ValueError("'latest' is reserved: it always means the highest version")
    return value


def parse(model: type[M], data: Any, *, param: str | None = None) -> M:
    """``data`` validated as ``model``; ``errors.InvalidRequest`` naming the first bad field
    (under ``param`` when given)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        parts = [str(part) for part in first["loc"]]
        where = ".".join([param, *parts] if param else parts) or None
        message = errors.problem_message(first)
        # the admin API's words (``app.api.errors.validation_problem``), never a class's name
        said = f"Invalid value for '{where}'" if where else "Invalid request"
        raise errors.InvalidRequest(f"{said}: {message}", param=where,
                                    code="invalid_prompt") from None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A stored version (immutable)."""

    template_id: str
    number: int
    spec: VersionSpec
    created_at: float

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {"object": "prompt.version", "template_id": self.template_id,
                "version": self.number, **spec.content(), "author": spec.author,
                "note": spec.note, "created_at": iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """One move of a label (its history), or what a move to where the label already pointed
    did: nothing (``changed`` false, ``moved_at`` ``None``; never recorded)."""

    label: str
    from_version: int | None
    to_version: int
    moved_at: float | None
    rollback: bool

    @property
    def changed(self) -> bool:
        return self.moved_at is not None

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "from_version": self.from_version,
                "to_version": self.to_version,
                "moved_at": None if self.moved_at is None else iso(self.moved_at),
                "rollback": self.rollback}


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """A template: its versions (oldest first), its labels and their history."""

    id: str
    created_at: float
    versions: tuple[VersionRecord, ...]
    """Every version, oldest first (empty in listings)."""
    latest_version: int
    labels: dict[str, int] = field(default_factory=dict)
    history: tuple[LabelEvent, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {"object": "prompt", "id": self.id, "created_at": iso(self.created_at),
                "latest_version": self.latest_version,
                "labels": dict(sorted(self.labels.items()))}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "versions": [v.to_json() for v in self.versions],
                "label_history": [e.to_json() for e in self.history]}


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    role: str
    name: str | None
    text: Compiled


@dataclass(frozen=True, slots=True)
class CompiledVersion:
    """A version ready to render (what the template stage caches)."""

    template_id: str
    number: int
    messages: tuple[CompiledMessage, ...]
    declared: dict[str, Declared]
    model: str | None
    params: dict[str, Any]
    literal_bytes: int
    """The UTF-8 bytes of the messages' literal text..."""
    uses: dict[str, int]
    """...and how many times each variable occurs in them (``render.rendered_size``)."""

    @classmethod
    def of(cls, record: VersionRecord) -> CompiledVersion:
        spec = record.spec
        messages = tuple(CompiledMessage(m.role, m.name, compile_text(m.content))
                         for m in spec.messages)
        literal_bytes, uses = measure(m.text for m in messages)
        return cls(template_id=record.template_id, number=record.number, messages=messages,
                   declared={k: v.declared() for k, v in spec.variables.items()},
                   model=spec.model,
                   params={k: v for k, v in (spec.params or {}).items() if k != END_USER},
                   literal_bytes=literal_bytes, uses=uses)
