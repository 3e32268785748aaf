"""Key format, hashing, record helpers and admin input validation (no I/O)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Literal

import pytest
from pydantic import ValidationError

from app import errors
from app.keys import (
    KeyCreate,
    KeyRecord,
    KeyUpdate,
    TeamCreate,
    TeamRecord,
    TeamUpdate,
    hash_key,
    new_key,
)
from app.keys.model import display_prefix, new_id, parse, unserved
from app.times import iso


def test_new_keys_are_long_random_and_prefixed() -> None:
    """sk-sb- and 43 url-safe characters (256 bits); no two alike."""
    made = {new_key() for _ in range(100)}
    assert len(made) == 100
    assert all(k.startswith("sk-sb-") and len(k) == 6 + 43 for k in made)


def test_hash_is_hex_sha256_and_prefix_is_ten_chars() -> None:
    """The stored form is the SHA-256 hex of the key; the display prefix its first 10 chars."""
    key = "sk-sb-AbCdEfGh"
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert display_prefix(key) == "sk-sb-AbCd"


def test_ids_have_their_kind_and_12_hex_chars() -> None:
    """key_ and team_ ids with 12 hex characters."""
    kinds: tuple[Literal["key", "team"], ...] = ("key", "team")
    for kind in kinds:
        ident = new_id(kind)
        prefix, _, tail = ident.partition("_")
        assert prefix == kind and len(tail) == 12 and int(tail, 16) >= 0


def test_problem_reports_revoked_before_expired() -> None:
    """A usable key has no problem; expiry is inclusive; revocation wins."""
    at_100 = datetime.fromtimestamp(100, UTC)
    key = KeyRecord(id="key_1", name="k", prefix="sk-sb-xxxx", expires_at=at_100)
    assert key.problem(99.9) is None
    assert key.problem(100.0) == "expired"
    assert KeyRecord(id="key_1", name="k", prefix="p").problem(1e12) is None  # no expiry
    revoked = KeyRecord(id="key_1", name="k", prefix="p", expires_at=at_100, revoked_at=50.0)
    assert revoked.problem(10.0) == "revoked" and revoked.problem(200.0) == "revoked"


def test_allows_checks_the_model_list() -> None:
    """No list: every model; a list: only those."""
    assert KeyRecord(id="k", name="k", prefix="p").allows("any")
    limited = KeyRecord(id="k", name="k", prefix="p", models=("chat",))
    assert limited.allows("chat") and not limited.allows("embed")


def test_json_view_has_iso_times_and_no_hash() -> None:
    """The admin view: ISO 8601 UTC times, status, never a hash."""
    view = KeyRecord(id="k", name="k", prefix="p", created_at=0.0, revoked_at=86400.0).to_json(0)
    assert view["created_at"] == "1970-01-01T00:00:00.000000Z"
    assert view["revoked_at"] == "1970-01-02T00:00:00.000000Z" and view["status"] == "revoked"
    assert not any("hash" in name for name in view)
    assert iso(None) is None


@pytest.mark.parametrize(("value", "epoch"), [
    ("2027-01-31T00:00:00Z", 1801353600.0),
    ("2027-01-31T00:00:00", 1801353600.0),
    ("2027-01-31T01:00:00+01:00", 1801353600.0),
    (1801353600, 1801353600.0),
    ("1801353600", 1801353600.0),  # the CLI's --expires as epoch seconds
    (" 1801353600.5 ", 1801353600.5),
    (None, None),
])
def test_expiry_accepts_iso_or_epoch(value: object, epoch: float | None) -> None:
    """ISO 8601 (naive = UTC) or epoch seconds."""
    expires_at = parse(KeyCreate, {"name": "k", "expires_at": value}).expires_at
    assert (None if expires_at is None else expires_at.timestamp()) == epoch


@pytest.mark.parametrize("written", [
    "2500-01-01T00:00:00.000001Z", "3000-06-01T12:00:00.000001Z",
    "9999-12-30T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"])
def test_a_far_expiry_is_kept_to_the_microsecond(written: str) -> None:
    """What is written reads back exactly, however far (an epoch float lost the microseconds
    past ~2200), up to the last microsecond of 9999; and the key is usable until then."""
    expires_at = parse(KeyCreate, {"name": "k", "expires_at": written}).expires_at
    record = KeyRecord(id="k", name="k", prefix="p", expires_at=expires_at)
    assert record.to_json(0)["expires_at"] == written
    assert record.problem(time.time()) is None


@pytest.mark.parametrize(("sent", "written"), [
    ("253402300799.999999", "9999-12-31T23:59:59.999999Z"),  # the last (a JSON float: ...800)
    ("16725225600.000001", "2500-01-01T00:00:00.000001Z"),
    ("1801353600.0000019", "2027-01-31T00:00:00.000001Z")])  # below a microsecond: dropped
def test_epoch_seconds_are_read_to_the_microsecond(sent: object, written: str) -> None:
    expires_at = parse(KeyCreate, {"name": "k", "expires_at": sent}).expires_at
    assert iso(expires_at) == written


@pytest.mark.parametrize(("model", "data", "param"), [
    (KeyCreate, {}, "name"),
    (KeyCreate, {"name": "k", "expires_at": True}, "expires_at"),
    (KeyCreate, {"name": "k", "tpm": -5}, "tpm"),
    (KeyCreate, {"name": "k", "models": ["m"] * 257}, "models"),
    (KeyCreate, {"name": "k", "admin": "maybe"}, "admin"),
    (TeamCreate, {"name": "t", "expires_at": 1}, "expires_at"),
    (TeamUpdate, {"budget_period": None}, "budget_period"),
    (KeyUpdate, {"metadata": None}, "metadata"),
])
def test_bad_input_names_the_field(model: type[KeyCreate], data: dict[str, object],
                                   param: str) -> None:
    """parse raises InvalidRequest (400) whose param names the offending field."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(model, data)
    assert caught.value.param == param and caught.value.status_code == 400


def test_a_budget_counts_to_the_nano_dollar() -> None:
    """Budgets count in nano-dollars: any from $0.000000001 up is kept (a budget of a few
    embeddings, $0.0000002, included), and a smaller one, which would be 0, is a 400."""
    for usd in (1e-9, 2e-7, 0.0002671, 1e9):
        assert parse(KeyCreate, {"name": "k", "budget_usd": usd}).budget_usd == usd
    for usd in (5e-10, 1e9 * 1.5):
        with pytest.raises(errors.InvalidRequest) as caught:
            parse(TeamCreate, {"name": "t", "budget_usd": usd})
        assert caught.value.param == "budget_usd"


def test_update_changes_hold_only_fields_sent() -> None:
    """An update knows which fields were sent, null included."""
    update = parse(KeyUpdate, {"rpm": None, "tpm": 3})
    assert update.changes() == {"rpm": None, "tpm": 3}
    assert KeyUpdate().changes() == {}


@pytest.mark.parametrize("value", ["redact", "private_only", "block", None])
def test_privacy_takes_a_tightening_action_or_null(value: str | None) -> None:
    """A key's and a team's privacy: redact, private_only, block, or null (none); shown in the
    admin view."""
    key = parse(KeyCreate, {"name": "k", "privacy": value})
    team = parse(TeamCreate, {"name": "t", "privacy": value})
    assert key.privacy == team.privacy == value
    assert KeyRecord(id="k", name="k", prefix="p", privacy=key.privacy).to_json(0)["privacy"] \
        == value
    assert TeamRecord(id="t", name="t", privacy=team.privacy).to_json()["privacy"] == value


@pytest.mark.parametrize("model", [KeyCreate, KeyUpdate, TeamCreate, TeamUpdate])
@pytest.mark.parametrize("value", ["allow", "hide", "BLOCK", 3, ""])
def test_bad_privacy_is_400_naming_the_field(model: type[KeyCreate], value: object) -> None:
    """Anything but a tightening action (allow included: it would tighten nothing) is a 400
    naming privacy, saying what is accepted."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(model, {"name": "x", "privacy": value})
    assert caught.value.param == "privacy" and caught.value.status_code == 400
    assert "'redact', 'private_only' or 'block'" in caught.value.message


def test_a_null_privacy_in_an_update_clears_it() -> None:
    """An update sending privacy null clears it; one not sending it leaves it alone."""
    assert parse(KeyUpdate, {"privacy": None}).changes() == {"privacy": None}
    assert parse(TeamUpdate, {"privacy": "block"}).changes() == {"privacy": "block"}
    assert "privacy" not in parse(TeamUpdate, {"rpm": 3}).changes()


def test_unserved_names_what_is_not_served_ten_at_most() -> None:
    """Nothing to say for served models or no list; otherwise the names, singular or plural,
    the first ten and a count of the rest."""
    served = {"chat", "embed"}.__contains__
    assert unserved(None, served) is None and unserved(["chat", "embed"], served) is None
    assert unserved(["chat", "chta"], served) == (
        "models: this gateway does not serve 'chta'; calls to it get 404 until it is "
        "configured (a typo?)")
    many = unserved([f"m{i}" for i in range(12)], served)
    assert many is not None and many.startswith(
        "models: this gateway does not serve 'm0', 'm1', ")
    assert "'m9' and 2 more; calls to them get 404 until they are configured" in many
    assert "'m10'" not in many


@pytest.mark.parametrize("sent", ["inf", "1e400", float("inf")], ids=["text", "exponent", "float"])
def test_an_infinite_expiry_is_refused_without_the_milliseconds_hint(sent: object) -> None:
    """Infinity is past every date but no count of milliseconds: the refusal says the range
    only (it said the value looked like milliseconds)."""
    with pytest.raises(ValidationError) as caught:
        KeyCreate.model_validate({"name": "k", "expires_at": sent})
    message = str(caught.value)
    assert "between 1970 and the end of 9999" in message and "milliseconds" not in message


def test_an_expiry_in_milliseconds_is_refused_with_the_hint() -> None:
    with pytest.raises(ValidationError, match="looks like milliseconds"):
        KeyCreate.model_validate({"name": "k", "expires_at": 1796576000000})
