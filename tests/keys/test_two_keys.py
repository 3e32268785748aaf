"""A request carrying a key in both ``Authorization: Bearer`` and ``x-api-key``
(``app.stages.authenticate.presented_key``): the Bearer key alone decides, and the call is
authorised, limited and recorded under that one key; the other header is never read."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.keys import KeyCreate, KeyDirectory, KeyStore
from app.pipeline import MASTER
from app.stages.authenticate import Authenticate
from tests.pipeline.test_stages import HI, _call

MASTER_KEY = "sk-two-keys-test-master-0123456789"


@pytest.fixture
def authenticate(empty_keys_engine: AsyncEngine) -> Authenticate:
    return Authenticate(SecretStr(MASTER_KEY), KeyDirectory(KeyStore(empty_keys_engine), None))


async def test_the_bearer_key_decides_and_is_the_one_recorded_and_charged(
        authenticate: Authenticate, empty_keys_engine: AsyncEngine) -> None:
    """Bearer key A with x-api-key B (another valid key): the call is A's, in its caller, its
    buckets (A's limits, not B's) and its call record."""
    store = KeyStore(empty_keys_engine)
    a, key_a = await store.create_key(KeyCreate(name="a", rpm=10))
    b, key_b = await store.create_key(KeyCreate(name="b", rpm=99))
    call = _call(headers={"authorization": f"Bearer {key_a}", "x-api-key": key_b},
                 model="chat", messages=HI)
    await authenticate.on_headers(call)
    assert call.caller.key_id == a.id and call.record.key_id == a.id
    assert [(bucket.id, bucket.rpm) for bucket in call.caller.buckets] == [(a.id, 10)]
    # The other way round, B's call.
    call = _call(headers={"authorization": f"Bearer {key_b}", "x-api-key": key_a},
                 model="chat", messages=HI)
    await authenticate.on_headers(call)
    assert call.caller.key_id == b.id and call.record.key_id == b.id


async def test_a_refused_bearer_key_is_not_rescued_by_x_api_key(
        authenticate: Authenticate, empty_keys_engine: AsyncEngine) -> None:
    """A revoked or unknown Bearer key is a 401 even beside a valid x-api-key (or the master
    key): the second header is no fallback; the refusal is recorded under the Bearer key."""
    store = KeyStore(empty_keys_engine)
    revoked, key_r = await store.create_key(KeyCreate(name="r"))
    await store.revoke_key(revoked.id)
    _, good = await store.create_key(KeyCreate(name="g"))
    for bearer, recorded in ((key_r, revoked.id), ("sk-sb-unknown", None)):
        for other in (good, MASTER_KEY):
            call = _call(headers={"authorization": f"Bearer {bearer}", "x-api-key": other},
                         model="chat", messages=HI)
            with pytest.raises(errors.AuthenticationFailed) as refused:
                await authenticate.on_headers(call)
            assert refused.value.code == "invalid_api_key"
            assert call.record.key_id == recorded


async def test_x_api_key_counts_when_there_is_no_bearer_token(
        authenticate: Authenticate, empty_keys_engine: AsyncEngine) -> None:
    """Another scheme (``Basic``) or an empty Bearer token is no Bearer key: x-api-key is then
    the key; the master key as the Bearer key is the master, whatever x-api-key says."""
    b, key_b = await KeyStore(empty_keys_engine).create_key(KeyCreate(name="b"))
    for authorization in ("Basic dXNlcjpwYXNz", "Bearer ", "Bearer"):
        caller = await authenticate.identify({"authorization": authorization,
                                              "x-api-key": key_b})
        assert caller.key_id == b.id, authorization
    assert await authenticate.identify({"authorization": f"Bearer {MASTER_KEY}",
                                        "x-api-key": key_b}) is MASTER

