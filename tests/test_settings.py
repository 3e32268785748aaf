"""Settings' key checks: placeholders in their look-alike spellings are refused."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.settings import Settings, UnsafeSettings, is_placeholder, weak_secret

MASTER = "sk-Yq2c8Zr0_u4Wm1pXv7Lb3nHs"


@pytest.mark.parametrize("key", [
    "sk-examp1e-Kq8z7w6v5u", "sk-1etmein-Kq8z7w6v5u", "sk-p1aceholder-Kq8z7w6v",
    "sk-rep1aceme-Kq8z7w6v5u", "sk-1etme1n-Kq8z7w6v5u", "sk-examp|e-Kq8z7w6v5u",
    "sk-pa$$w0rd-Kq8z7w6v5u", "sk-3x4mp13-Kq8z7w6v5u", "sk-pass!word-Kq8z7w6v5u"])
def test_a_placeholder_spelt_with_look_alikes_is_refused(key: str) -> None:
    """A 1 or a | reads as an l (or an i), as @/4, 3, 0 and $/5 read as a, e, o and s."""
    assert weak_secret(key) == "is a placeholder or a well-known value (anyone can guess it)"
    with pytest.raises(UnsafeSettings, match="SWITCHBOARD_MASTER_KEY is a placeholder"):
        Settings(master_key=SecretStr(key)).check_exposure()


@pytest.mark.parametrize("value", ["sk-Yq2c8Zr0_u4Wm1pXv7Lb3nHs", "3f9a1c7e52b04d86",
                                   "sk-bench-calllog-master-key", "1ll1-Kq8z7w6v5u"])
def test_keys_with_ones_and_bars_that_spell_no_placeholder_pass(value: str) -> None:
    """Look-alikes only matter inside a placeholder word."""
    assert not is_placeholder(value)


@pytest.mark.parametrize("url", [
    "postgresql://switchboard@db:5432/x?password=change-me-postgres-password",
    "postgresql://switchboard:Xk29fQp7Lm4s@db/x?sslmode=require&password=p%40ssw0rd"])
def test_a_placeholder_database_password_in_the_query_is_refused(url: str) -> None:
    """asyncpg takes ``?password=`` as well as ``user:password@``: a placeholder there is
    refused too, without quoting it."""
    with pytest.raises(UnsafeSettings, match="POSTGRES_PASSWORD") as refused:
        Settings(master_key=SecretStr(MASTER), database_url=url).check_exposure()
    assert "change-me" not in str(refused.value) and "ssw0rd" not in str(refused.value)
    Settings(master_key=SecretStr(MASTER),
             database_url="postgresql://u@db/x?password=Xk29fQp7Lm4s").check_exposure()


def test_a_metrics_key_equal_to_the_master_key_is_refused() -> None:
    """The metrics key is for Prometheus alone: the master key in its place would hand
    whoever reads /metrics the admin API, so the gateway refuses to start, saying why."""
    with pytest.raises(UnsafeSettings, match="SWITCHBOARD_METRICS_KEY is the master key"):
        Settings(master_key=SecretStr(MASTER), metrics_key=SecretStr(MASTER)).check_exposure()
    Settings(master_key=SecretStr(MASTER),
             metrics_key=SecretStr("sk-Pz4d9Ks1_v5Xn2qYw8Mc4oJt")).check_exposure()


@pytest.mark.parametrize(("written", "level"), [("INFO", "info"), ("Debug", "debug"),
                                                ("warning", "warning")])
def test_the_log_level_takes_any_case(written: str, level: str) -> None:
    assert Settings(log_level=written).log_level == level  # type: ignore[arg-type]
