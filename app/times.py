"""Times in the gateway's answers: every admin and CLI read-out writes a moment one way, ISO 8601
in UTC with microseconds and a ``Z`` suffix (``2026-12-06T23:00:00.000000Z``), whether it was
kept as epoch seconds (keys, prompts, reloads, drift) or as a datetime (the call log)."""

from __future__ import annotations

from datetime import UTC, datetime
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
