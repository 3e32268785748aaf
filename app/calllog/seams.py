"""The call log's seams: where rows are stored for good, and where they wait until then.

Flow (``app.calllog.writer``): a request hands its record to the writer and returns; the writer
batches rows, makes each batch durable in a ``Spool`` (a Redis stream, or a local append-only
file when Redis is absent or down), writes it to the ``CallStore`` (Postgres or SQLite), and only
then acknowledges it in the spool. A crash between the two replays the batch; the store ignores
rows it already has (same ``(id, created_at)``), so replay never duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.calllog.record import Row


class StoreUnavailable(Exception):
    """The store could not take the batch now (down, slow, full); try again later."""


class StoreNotReady(StoreUnavailable):
    """The store answered but cannot take rows: it is not at this version's schema."""


class SpoolUnavailable(Exception):
    """The spool could not take or give rows now (e.g. Redis down)."""


class SpoolWriteFailed(SpoolUnavailable):
    """A ``put`` that failed part-way: the first ``kept`` rows of the batch were appended whole
    (they will be taken like any other) and the rest were not. ``errno`` and ``strerror`` give
    the OS reason when there was one (e.g. ``ENOSPC``)."""

    def __init__(self, message: str, *, kept: int, errno: int | None = None,
                 strerror: str | None = None) -> None:
        super().__init__(message)
        self.kept = kept
        self.errno = errno
        self.strerror = strerror


class CallStore(Protocol):
    """The durable home of call rows (Postgres, or SQLite in embedded mode)."""

    async def write(self, rows: Sequence[Row]) -> int:
        """Insert ``rows``, ignoring ones already present; return how many were new.
        Raises ``StoreUnavailable`` when the batch could not be committed (nothing then is)."""
        ...

    async def aclose(self) -> None: ...


class Spool(Protocol):
    """Rows waiting for the store, safe across a gateway crash (at-least-once)."""

    async def put(self, rows: Sequence[Row]) -> None:
        """Make ``rows`` durable. Raises ``SpoolUnavailable``."""
        ...

    async def take(self, limit: int) -> list[tuple[str, Row]]:
        """Up to ``limit`` rows not yet acknowledged, oldest first, each with its spool token:
        rows put by this process, and rows left behind by a process that died. Raises
        ``SpoolUnavailable``."""
        ...

    async def ack(self, tokens: Sequence[str]) -> None:
        """Forget rows now committed to the store. Raises ``SpoolUnavailable``."""
        ...

    async def aclose(self) -> None: ...
