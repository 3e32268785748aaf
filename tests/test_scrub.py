"""The scrubber of upstream errors: configured secrets and minted ones (``app.scrub``)."""

from __future__ import annotations

from app import errors
from app.scrub import REDACTED, Scrubber


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
