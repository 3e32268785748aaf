"""Why the call log's store takes no rows, as ``/readyz`` says it, when a running writer's write
fails: a database that cannot be reached at all (a stopped Postgres refuses the connection) is
``unreachable``, as the start-up check calls it; one that answers and refuses the write is
``write_failed``. Either is a counted store failure, and the rows go to the spool."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from app.calllog.file_spool import FileSpool
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
from tests.servers import free_port

REAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@pytest.mark.parametrize(("url", "reason"), [
    (f"postgresql://postgres@127.0.0.1:{free_port()}/calls", "unreachable"),  # nothing listens
    (f"postgresql://postgres@localhost:{free_port()}/calls", "unreachable"),
    (f"{REAL_POSTGRES}/no_such_database_{uuid.uuid4().hex[:8]}", "write_failed"),
], ids=["refused", "refused, by name", "no such database"])  # the same in every xdist worker
async def test_a_failed_writes_reason_says_whether_the_database_was_reached(
        url: str, reason: str, tmp_path: Path) -> None:
    """A write whose connection is refused reads ``unreachable``; a write the database answers
    with an error (no such database) reads ``write_failed``; both count and spool the row."""
    engine = make_engine(url)
    writer = CallLogWriter(store=PostgresStore(engine), file_spool=FileSpool(tmp_path / "spool"))
    try:
        writer.submit(CallRecord(id="row-1", endpoint="/v1/chat/completions", caller="master"))
        await writer.flush_once()
        store = writer.conditions()["store"]
        assert (store.up, store.reason) == (False, reason), store
        assert writer.stats.store_failures == 1 and writer.stats.file_spooled == 1
        assert writer.stats.dropped == 0
    finally:
        await writer.aclose(timeout_s=2)
        await engine.dispose()
