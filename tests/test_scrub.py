"""The scrubber of upstream errors: configured secrets and minted ones (``app.scrub``)."""

from __future__ import annotations

from pydantic import SecretStr

from app import errors
from app.providers.openai import OpenAIProvider
from app.scrub import REDACTED, Scrubber, config_secrets


def test_minted_sources_are_read_at_each_scrub() -> None:
    """A credential a source hands out after the scrubber was built is scrubbed from the
    message, param, code and ``str(exc)``; one no longer handed out is not."""
    minted: list[str] = []
    scrubber = Scrubber(["sk-configured-0123"], minted=[lambda: tuple(minted)])
    minted.append("ya29.minted-token-0123")
    exc = scrubber.error(errors.UpstreamError(
        "echo: sk-configured-0123 Bearer ya29.minted-token-0123",
        code="ya29.minted-token-0123", param="x ya29.minted-token-0123"))
    assert exc.message == f"echo: {REDACTED} Bearer {REDACTED}" == str(exc)
    assert exc.code == REDACTED and exc.param == f"x {REDACTED}"
    minted.clear()
    assert scrubber.text("ya29.minted-token-0123") == "ya29.minted-token-0123"


def test_longest_secret_first_across_configured_and_minted() -> None:
    """A minted value containing a configured one is replaced whole, and values too short to
    hide anything are left alone."""
    scrubber = Scrubber(["AKID"], minted=[lambda: ("AKID-session-token", "abc")])
    assert scrubber.text("AKID-session-token abc") == f"{REDACTED} abc"


def test_no_secrets_leaves_the_error_untouched() -> None:
    """With nothing to find (no configured secret, sources empty) the error is unchanged."""
    exc = errors.UpstreamError("plain", code="c")
    assert Scrubber([], minted=[lambda: ()]).error(exc) is exc and exc.message == "plain"


def test_every_configured_header_value_is_a_secret_but_plain_ones() -> None:
    """Any extra header may carry a credential (``Cookie``, ``X-Password``), so its value is
    scrubbed, a cookie's pairs each too; protocol headers (``Content-Type``...) and values
    under 4 characters are not."""
    provider = OpenAIProvider(type="openai", api_key=SecretStr("sk-configured-0123"), headers={
        "Cookie": "session=cookie-secret-42; theme=dark-mode", "X-Password": "hunter2-pw",
        "Content-Type": "application/json", "Accept": "text/event-stream", "X-Flag": "1",
        "anthropic-version": "2023-06-01"})
    found = set(config_secrets([provider]))
    assert {"sk-configured-0123", "session=cookie-secret-42; theme=dark-mode",
            "session=cookie-secret-42", "cookie-secret-42", "theme=dark-mode", "dark-mode",
            "hunter2-pw"} <= found
    assert not found & {"application/json", "text/event-stream", "1", "2023-06-01"}
    scrubbed = Scrubber(found).text("bad cookie-secret-42 / hunter2-pw in application/json")
    assert scrubbed == f"bad {REDACTED} / {REDACTED} in application/json"


def test_a_label_header_is_not_a_secret_but_a_long_value_is() -> None:
    """A header not named as a credential is scrubbed from 16 characters: ``X-Who: private``
    would otherwise garble every "private" in messages (it turned ``no_private_target`` into
    ``no_[redacted]_target``), while a token in ``X-Api`` is still caught."""
    provider = OpenAIProvider(type="openai", api_key=SecretStr("sk-configured-0123"), headers={
        "X-Who": "private", "X-Team": "acme-platform", "X-Api": "tok-0123456789abcdef"})
    found = set(config_secrets([provider]))
    assert "tok-0123456789abcdef" in found
    assert not found & {"private", "acme-platform"}
