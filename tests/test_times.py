"""``app.times.iso``: one way to write a moment in every admin answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from app.times import iso


def test_epoch_and_datetimes_read_alike() -> None:
    epoch = 1_801_353_600.25
    aware = datetime.fromtimestamp(epoch, UTC)
    expected = "2027-01-31T00:00:00.250000Z"
    assert iso(epoch) == expected
    assert iso(aware) == expected
    assert iso(aware.replace(tzinfo=None)) == expected  # naive means UTC
    assert iso(aware.astimezone(timezone(timedelta(hours=-5)))) == expected  # shown in UTC


def test_a_whole_second_keeps_its_microseconds() -> None:
    """One width whatever the moment: ``isoformat()`` alone drops a zero fraction."""
    assert iso(0.0) == "1970-01-01T00:00:00.000000Z"
    assert len(iso(0.0)) == len(iso(0.5)) == 27


def test_none_stays_none() -> None:
    assert iso(None) is None
