"""Virtual keys through running gateways and the openai SDK: lifecycle, allow-lists, restart,
and the key itself never stored or logged anywhere (only its hash)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key, sdk


def test_key_lifecycle_create_use_rotate_revoke_expire(fleet_factory: Any,
                                                       redis_server: PrivateRedis) -> None:
    fleet: Fleet = fleet_factory(redis_server.url)
    url, other = fleet.start(2)
    created = create_key(fleet, models=["chat"])
    key = created["key"]
    for gateway in (url, other):  # any replica knows it
        answer = sdk(gateway, key).chat.completions.create(model="chat", messages=HI)
        assert answer.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(url, key).embeddings.create(model="embed", input="x")
    assert denied.value.code == "model_not_allowed"
    assert [m.id for m in sdk(url, key).models.list()] == ["chat"]  # only what it may use
    with pytest.raises(openai.NotFoundError):
        sdk(url, key).models.retrieve("embed")

    with fleet.admin() as admin:
        rotated = admin.post(f"/admin/keys/{created['id']}/rotate").json()
    assert rotated["id"] == created["id"] and rotated["key"] != key
    _refused_within_a_second(other, key)  # the other replica heard of it
    assert sdk(other, rotated["key"]).chat.completions.create(model="chat", messages=HI)

    with fleet.admin() as admin:
        assert admin.post(f"/admin/keys/{created['id']}/revoke").status_code == 200
    _refused_within_a_second(other, rotated["key"])

    soon = create_key(fleet, expires_at=(datetime.now(UTC) + timedelta(seconds=2)).isoformat())
    assert sdk(url, soon["key"]).chat.completions.create(model="chat", messages=HI)
    time.sleep(2.2)
    with pytest.raises(openai.AuthenticationError) as expired:
        sdk(url, soon["key"]).chat.completions.create(model="chat", messages=HI)
    assert expired.value.code == "invalid_api_key"
    # The refusal is a row naming the key, so who still uses an expired key can be found.
    refused: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    with fleet.admin() as admin:
        while not refused and time.monotonic() < deadline:
            time.sleep(0.2)
            refused = [r for r in admin.get("/admin/calls", params={"key_id": soon["id"]}
                                            ).json()["data"] if r["http_status"] == 401]
    assert [(r["caller"], r["error_message"]) for r in refused] == [
        ("unauthenticated", "This API key is expired.")]


_READ: dict[str, Callable[[redis.Redis, bytes], object]] = {
    "string": lambda c, k: c.get(k), "hash": lambda c, k: c.hgetall(k),
    "list": lambda c, k: c.lrange(k, 0, -1), "set": lambda c, k: c.smembers(k),
    "zset": lambda c, k: c.zrange(k, 0, -1, withscores=True),
    "stream": lambda c, k: c.xrange(k),
}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redis_text(url: str) -> str:
    """Every key and value in the Redis at ``url``, as text."""
    client = redis.Redis.from_url(url)
    try:
        return "\n".join(f"{name!r} {_READ[_text(client.type(name))](client, name)!r}"
                         for name in client.scan_iter())
    finally:
        client.close()


def _refused_within_a_second(url: str, key: str) -> None:
    deadline = time.monotonic() + 1.0
    while True:
        try:
            sdk(url, key).chat.completions.create(model="chat", messages=HI)
        except openai.AuthenticationError as exc:
            assert exc.code == "invalid_api_key"
            return
        assert time.monotonic() < deadline, "a changed key still worked after a second"
        time.sleep(0.05)


def test_a_privacy_change_reaches_the_other_replica(fleet_factory: Any,
                                                     redis_server: PrivateRedis) -> None:
    """A key's privacy set to block through one replica blocks its next call with an email on
    the other (which had the key cached) within a second; cleared, the call passes again."""
    fleet: Fleet = fleet_factory(redis_server.url)
    url, other = fleet.start(2)
    created = create_key(fleet)
    mail: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "write to ann.lee@corp-example.com"}]
    assert sdk(other, created["key"]).chat.completions.create(model="chat", messages=mail)
    with fleet.admin(url) as admin:
        changed = admin.patch(f"/admin/keys/{created['id']}", json={"privacy": "block"})
    assert changed.json()["privacy"] == "block"
    deadline = time.monotonic() + 1.0
    while True:
        try:
            sdk(other, created["key"]).chat.completions.create(model="chat", messages=mail)
        except openai.BadRequestError as exc:
            assert exc.code == "sensitive_data_blocked"
            break
        assert time.monotonic() < deadline, "the other replica still let the email through"
        time.sleep(0.05)
    assert sdk(other, created["key"]).chat.completions.create(model="chat", messages=HI)
    with fleet.admin(url) as admin:
        admin.patch(f"/admin/keys/{created['id']}", json={"privacy": None})
    deadline = time.monotonic() + 1.0
    while True:
        try:
            sdk(other, created["key"]).chat.completions.create(model="chat", messages=mail)
            break
        except openai.BadRequestError:
            assert time.monotonic() < deadline, "the other replica still blocked the email"
            time.sleep(0.05)


def test_keys_survive_a_restart_and_are_never_stored_or_logged(
        fleet_factory: Any, redis_server: PrivateRedis, postgres: PrivatePostgres) -> None:
    fleet: Fleet = fleet_factory(redis_server.url)
    fleet.start()
    created = create_key(fleet)
    key = created["key"]
    stream = sdk(fleet.urls[0], key).chat.completions.create(
        model="chat", messages=HI, stream=True, extra_headers={"x-request-id": "who-1"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    fleet.stop()
    fleet.start()
    assert sdk(fleet.urls[0], key).chat.completions.create(model="chat", messages=HI)
    with fleet.admin() as admin:
        rows = admin.get("/admin/calls", params={"request_id": "who-1"}).json()["data"]
    assert [(r["caller"], r["key_id"]) for r in rows] == [("key", created["id"])]
    fleet.stop()  # everything written and flushed

    dump = subprocess.run(["pg_dumpall", "-h", "127.0.0.1", "-p", str(postgres.port),
                           "-U", "postgres"], capture_output=True, text=True, check=True).stdout
    redis_dump = redis_text(redis_server.url)
    secret = key.removeprefix("sk-sb-")
    assert created["id"] in dump  # the dump holds the key's records...
    for where, text in (("postgres", dump), ("redis", redis_dump), ("logs", fleet.logs())):
        assert secret not in text, f"the key itself is in {where}"  # ...never the key
