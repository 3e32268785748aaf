"""Virtual keys and teams: the records, the key format, and the admin input they are made from.

A key is ``sk-sb-`` followed by ``secrets.token_urlsafe(32)`` (256 random bits). Only its SHA-256
(``hash_key``) is stored, with its first ``PREFIX_CHARS`` characters (``sk-sb-AbCd``) for display.
Records are immutable; a change is a new record read back from the store.

Admin input (``KeyCreate``, ``KeyUpdate``, ``TeamCreate``, ``TeamUpdate``) is validated by pydantic;
``parse`` turns a failure into ``errors.InvalidRequest`` naming the field (``param``).

A key's or team's ``privacy`` (``redact``, ``private_only``, ``block`` or ``None``) is the
privacy action its calls run under at least: the privacy stage tightens each model's policy
with the stricter of the key's and its team's, and never loosens it (``app.privacy.policy``).

(Just past 400 lines: the records and the admin input they are made from share one set of field
rules, the names', limits' and privacy's, kept beside both.)
"""

from __future__ import annotations

import hashlib
import math
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from app import errors
from app.limits.model import Period
from app.privacy.config import PrivacySetting
from app.times import iso

KEY_PREFIX = "sk-sb-"
PREFIX_CHARS = 10
"""Characters of a key kept for display: ``sk-sb-`` and four random ones."""
MAX_MODELS = 256
MAX_METADATA = 16
MAX_BUDGET_USD = 1e9
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_EXPIRY = datetime.max.replace(tzinfo=UTC)
"""The latest expiry a key can have: the end of year 9999 (its last microsecond), as far as
dates go."""
_LAST_EXPIRY_US = (LAST_EXPIRY - EPOCH) // timedelta(microseconds=1)


def new_key() -> str:
    """A fresh virtual key (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hex SHA-256 of ``key``: what the database stores and the directory is keyed by."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The public part of ``key`` shown in listings."""
    return key[:PREFIX_CHARS]


def new_id(kind: Literal["key", "team"]) -> str:
    """``key_`` or ``team_`` and 12 random hex characters."""
    return f"{kind}_{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class TeamRecord:
    """A team: limits and a budget that all of its keys share."""

    id: str
    name: str
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "month"
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    privacy: PrivacySetting | None = None
    """The privacy action its keys' calls run under at least (``None``: the model's own)."""

    @property
    def limited(self) -> bool:
        """It has an RPM, TPM or budget: its keys' calls are charged to a bucket of its own,
        and their spend settled into its counter of ``budget_period``."""
        return bool(self.rpm or self.tpm or self.budget_usd is not None)

    def to_json(self) -> dict[str, Any]:
        """The admin API's view of the team."""
        return {"object": "team", "id": self.id, "name": self.name, "rpm": self.rpm,
                "tpm": self.tpm, "budget_usd": self.budget_usd,
                "budget_period": self.budget_period, "privacy": self.privacy,
                "metadata": dict(self.metadata), "created_at": iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key, without the key itself (only its display ``prefix``)."""

    id: str
    name: str
    prefix: str
    team_id: str | None = None
    models: tuple[str, ...] | None = None
    """The public models this key may use; ``None``: all of them."""
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "month"
    expires_at: datetime | None = None
    """As stored, to the microsecond (an epoch float cannot hold microseconds past ~2200)."""
    metadata: dict[str, str] = field(default_factory=dict)
    admin: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    privacy: PrivacySetting | None = None
    """The privacy action its calls run under at least (``None``: the model's own, or its
    team's)."""
    _expires_s: float = field(default=math.inf, init=False, repr=False, compare=False)
    """``expires_at`` in epoch seconds (infinity: never), for the per-call check."""

    def __post_init__(self) -> None:
        if self.expires_at is not None:
            object.__setattr__(self, "_expires_s", self.expires_at.timestamp())

    def problem(self, now: float) -> str | None:
        """Why the key may not be used at ``now`` (epoch seconds): ``"revoked"``, ``"expired"``,
        or ``None`` when it may."""
        if self.revoked_at is not None:
            return "revoked"
        if now >= self._expires_s:
            return "expired"
        return None

    @property
    def limited(self) -> bool:
        """It has an RPM, TPM or budget: its calls are charged to a bucket of its own, and their
        spend settled into its counter of ``budget_period``."""
        return bool(self.rpm or self.tpm or self.budget_usd is not None)

    def allows(self, model: str) -> bool:
        """Whether the key may call the public model ``model``."""
        return self.models is None or model in self.models

    def to_json(self, now: float) -> dict[str, Any]:
        """The admin API's view of the key (never its hash)."""
        return {"object": "key", "id": self.id, "name": self.name, "prefix": self.prefix,
                "team_id": self.team_id,
                "models": None if self.models is None else list(self.models),
                "rpm": self.rpm, "tpm": self.tpm, "budget_usd": self.budget_usd,
                "budget_period": self.budget_period, "privacy": self.privacy,
                "expires_at": iso(self.expires_at),
                "metadata": dict(self.metadata), "admin": self.admin,
                "created_at": iso(self.created_at), "revoked_at": iso(self.revoked_at),
                "status": self.problem(now) or "active"}


# ---- admin input

_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories a name may not hold: control characters (Cc: newlines, tabs, escapes),
format characters (Cf: zero-width spaces, bidi overrides and isolates, the BOM) and the line and
paragraph separators (Zl, Zp)."""


def _printable(value: str) -> str:
    # A newline or an escape in a name would forge lines in `switchboard keys list`; an
    # invisible or right-to-left override character would make one name look like another
    # ("evil\u202eliam" shows as "evilmail") or like none.
    if (not value.isascii() and any(unicodedata.category(c) in _UNPRINTABLE for c in value)) \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("may not contain control, invisible or text-direction characters "
                         "(newlines, tabs, escapes, zero-width spaces, bidi overrides, line "
                         "separators)")
    return value


def _whole_nano_usd(value: float) -> float:
    # Budgets are counted in nano-dollars: a smaller one would be stored as 0, a key that
    # can spend nothing.
    if 0 < value < 1e-9:
        raise ValueError("must be 0 or at least 0.000000001 (budgets count in nano-dollars)")
    return value


def _trimmed(value: str) -> str:
    # "search " beside "search" would be two teams that look like one in every listing; a
    # blank name shows as none.
    if not value.strip():
        raise ValueError("may not be blank (only whitespace)")
    if value != value.strip():
        raise ValueError("may not start or end with whitespace")
    return value


Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable),
                 AfterValidator(_trimmed)]
"""A key's or team's name: printable (no control, invisible or text-direction character:
``_printable``), not blank, and with no whitespace around it (a no-break space included)."""
TeamName = Name
"""A team's name: unique ignoring case (``search`` and ``SEARCH`` are one name: the store's
unique index on ``lower(name)``, migration 0019). Key names need not be unique (a key is known
by its id)."""
Limit = Annotated[int, Field(ge=1, le=2**53)]
Budget = Annotated[float, Field(ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False),
                   AfterValidator(_whole_nano_usd)]
"""At most a billion dollars: it fits the database's ``Numeric(20, 10)``, and its nano-dollars
(1e18) a spend counter's 64-bit integer in Redis (exact to $9.2 billion). The limiter's Lua
scripts compare counters as doubles: exactly up to 2^53 nano-dollars (about $9 million), and
above that within one part in 2^53 (under $0.00000013 at a billion dollars), which a budget
check may then err by (``app.limits.scripts``)."""
def no_nul(value: str) -> str:
    """A text field's check: Postgres text holds no NUL character (without this, a 400 from
    the database naming no field, and a 201 on SQLite)."""
    if "\x00" in value:
        raise ValueError("may not contain a NUL character")
    return value


Models = Annotated[list[Annotated[str, Field(min_length=1, max_length=256),
                                  AfterValidator(no_nul)]],
                   Field(max_length=MAX_MODELS)]
Metadata = Annotated[dict[Annotated[str, Field(min_length=1, max_length=64),
                                    AfterValidator(no_nul)],
                          Annotated[str, Field(max_length=512), AfterValidator(no_nul)]],
                     Field(max_length=MAX_METADATA)]
TeamId = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(no_nul)]


_EXPECTED_TIME = "expected ISO 8601 (2027-01-31T00:00:00Z) or epoch seconds"


def _expiry(value: Any) -> Any:
    """An expiry as an aware UTC datetime, exact to the microsecond: a number, or a string of
    one, is epoch seconds (a fraction below a microsecond is dropped), another string ISO 8601
    (naive = UTC); between 1970 and the end of year 9999."""
    if isinstance(value, bool):
        raise ValueError(_EXPECTED_TIME)
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, int | float | str):
        text = str(value).strip()  # a float's repr: the digits the client sent
        try:
            seconds = Decimal(text)
        except InvalidOperation:
            seconds = None
        if seconds is not None:
            return _from_epoch(seconds)
        try:
            moment = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            raise ValueError(_EXPECTED_TIME) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00: in year 10000 in UTC
            raise ValueError(f"{_EXPECTED_TIME}, between 1970 and the end of 9999") from None
        if moment < EPOCH:
            raise ValueError(f"{_EXPECTED_TIME}, between 1970 and the end of 9999")
        return moment
    return value


def _from_epoch(seconds: Decimal) -> datetime:
    """Epoch ``seconds`` as a UTC datetime, within 1970 and the end of 9999."""
    finite = seconds.is_finite() and math.isfinite(float(seconds))  # 1e400 is infinity too
    micros = int((seconds * 1_000_000).to_integral_value(ROUND_FLOOR)) if finite else None
    if micros is None or not 0 <= micros <= _LAST_EXPIRY_US:  # NaN, infinity, out of range
        # infinity ("inf", 1e400) is past every date, but no count of milliseconds
        hint = " (this one looks like milliseconds)" if micros is not None and micros > 0 \
            else ""
        raise ValueError(f"{_EXPECTED_TIME}, between 1970 and the end of 9999{hint}")
    return EPOCH + timedelta(microseconds=micros)


class _Input(BaseModel):
    # strict: "admin": "yes" or "rpm": "10" is a 400, not an admin key or a limit guessed at
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @field_validator("expires_at", mode="before", check_fields=False)
    @classmethod
    def _expiry(cls, value: Any) -> Any:
        return _expiry(value)

    @field_validator("models", check_fields=False)
    @classmethod
    def _some_models(cls, value: list[str] | None) -> list[str] | None:
        # An empty list would be a key that can call no model. Other gateways read ``[]`` as
        # "every model", so it is refused rather than taken either way.
        if value is not None and not value:
            raise ValueError(
                "must name at least one model (null, or none on the CLI, allows every model)")
        return None if value is None else list(dict.fromkeys(value))  # each once, in order


class TeamCreate(_Input):
    name: TeamName
    rpm: Limit | None = None
    tpm: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period = "month"
    privacy: PrivacySetting | None = None
    metadata: Metadata = Field(default_factory=dict)


class KeyCreate(_Input):
    name: Name
    team_id: TeamId | None = None
    models: Models | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period = "month"
    privacy: PrivacySetting | None = None
    expires_at: datetime | None = None
    """ISO 8601 or epoch seconds on input (``_expiry``). In the future: a key created expired
    could never be used (a typo'd year, most likely). An update may set a past expiry, which
    expires the key at once."""
    metadata: Metadata = Field(default_factory=dict)
    admin: bool = False

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("must be in the future (a key created expired could never be used)")
        return value


class _Update(_Input):
    """Only the fields sent are changed (``changes()``); ``null`` clears a limit, the team, the
    model list (all models), the budget, the privacy setting or the expiry."""

    @field_validator("name", "budget_period", "metadata", "admin", check_fields=False)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, with their new values."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TeamUpdate(_Update):
    name: TeamName | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period | None = None
    privacy: PrivacySetting | None = None
    metadata: Metadata | None = None


class KeyUpdate(_Update):
    name: Name | None = None
    team_id: TeamId | None = None
    models: Models | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    budget_usd: Budget | None = None
    budget_period: Period | None = None
    privacy: PrivacySetting | None = None
    expires_at: datetime | None = None
    metadata: Metadata | None = None
    admin: bool | None = None


def unserved(models: Sequence[str] | None, serves: Callable[[str], bool]) -> str | None:
    """A warning when ``models`` (a key's allow-list) names models that ``serves`` says are not
    configured: most likely a typo, which would make a key that gets 403s on the model meant.
    A warning, not an error: a model may be configured after its keys are made."""
    missing = [model for model in models or () if not serves(model)]
    if not missing:
        return None
    names = ", ".join(repr(model[:200]) for model in missing[:10])
    if len(missing) > 10:
        names += f" and {len(missing) - 10} more"
    calls = ("calls to it get 404 until it is" if len(missing) == 1
             else "calls to them get 404 until they are")
    return f"models: this gateway does not serve {names}; {calls} configured (a typo?)"


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``; ``errors.InvalidRequest`` naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        where = f" ({param})" if param else ""
        raise errors.InvalidRequest(f"Invalid {model.__name__}{where}: "
                                    f"{errors.problem_message(first)}",
                                    param=param) from None
