"""Settings' key checks: placeholders in their look-alike spellings are refused."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.settings import Settings, UnsafeSettings, is_placeholder, weak_secret


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
