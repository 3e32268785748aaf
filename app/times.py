"""Times in the gateway's answers: every admin and CLI read-out writes a moment one way, ISO 8601
in UTC with microseconds and a ``Z`` suffix (``2026-12-06T23:00:00.000000Z``), whether it was
kept as epoch seconds (keys, prompts, reloads, drift) or as a datetime (the call log)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import overload


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@overload
def iso(moment: float | datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: float | datetime | None) -> str | None: ...
def iso(moment: float | datetime | None) -> str | None:
    """``moment`` (epoch seconds or a datetime; naive means UTC) as ISO 8601 UTC with
    microseconds and ``Z``; ``None`` stays ``None``."""
    if moment is None:
        return None
    when = datetime.fromtimestamp(moment, UTC) if not isinstance(moment, datetime) \
        else as_utc(moment)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])", re.ASCII)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WHEN_FORMS = "ISO 8601 (2025-01-31T12:00:00Z) or an age such as 30m, 1h, 7d"
"""What ``parse_when`` takes, as an error message says it."""


class TooFarBack(ValueError):
    """An age that reaches back before the first representable moment."""


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (naive means UTC) or an age such as ``90s``,
    ``15m``, ``1h``, ``7d``, ``2w`` (that long before ``now``, default: the current time):
    the admin API's ``since``/``until`` and the CLI's ``--since``/``--until``, one grammar.

    ASCII digits only (a full-width digit or ``1_0h`` is no age). Raises ``TooFarBack`` for an
    age past the first representable moment, ``ValueError`` for anything else it is not."""
    text = value.strip()
    if not text.isascii():
        raise ValueError(f"not {WHEN_FORMS}")
    match = _AGE.fullmatch(text)
    if match:
        seconds = float(match.group(1)) * _AGE_UNITS[match.group(2)]
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            raise TooFarBack("reaches too far back") from None
    try:
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # OverflowError: out of range once moved to UTC
        raise ValueError(f"not {WHEN_FORMS}") from None
