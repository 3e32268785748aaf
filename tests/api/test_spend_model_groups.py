"""``switchboard spend --by model`` tells its two nameless groups apart: ``-`` (a model the
gateway does not serve) and ``(no model)`` (calls refused before a model was read), and its
``--help`` says which is which."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.cli import spend
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord, Row
from app.calllog.spend import month_start
from app.calllog.sqlite import SqliteStore
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import Call, CallHour
from tests.api.test_admin import MASTER_KEY, admin_app
from tests.api.test_spend import row, run
from tests.servers import serve


def refused(call_id: str, *, model: str | None, http_status: int) -> Row:
    """A call refused by the gateway itself: an unknown model's 404 (no provider reached), or
    a body with no model read at all."""
    record = CallRecord(id=call_id, endpoint="/v1/chat/completions", caller="master",
                        public_model=model, status="error", http_status=http_status,
                        error_type="invalid_request_error",
                        created_at=(month_start().timestamp() + 1))
    return record.to_row()


@pytest.fixture
async def log_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A call log with a served model's call, an unknown model's 404 and a body that is no
    JSON (no model), written by the backend's store."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(Call))
        await conn.execute(delete(CallHour))
    store = PostgresStore(engine) if engine.dialect.name == "postgresql" else SqliteStore(engine)
    await store.write([row("ok1", cost=1.0),
                       refused("unknown", model="made-up", http_status=404),
                       refused("nojson", model=None, http_status=400),
                       refused("nojson2", model=None, http_status=400)])
    yield engine
    await engine.dispose()


@pytest.fixture
def server(log_engine: AsyncEngine, database_url: str) -> Iterator[str]:
    with serve(admin_app(master_key=MASTER_KEY, database_url=database_url)) as url:
        yield url


async def test_the_two_nameless_model_groups_print_apart(server: str) -> None:
    """The unknown model's group prints as "-", the no-model group as "(no model)"."""
    table = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "model")
    assert table.exit_code == 0, table.output
    groups = {line[:32].rstrip(): line.split()[-5] for line in table.output.splitlines()[1:]}
    assert groups == {"chat": "1", "-": "1", "(no model)": "2"}


async def test_no_key_is_still_a_dash_by_key(server: str) -> None:
    """With --by key the calls without a key print as "-" (no key id is ever "-")."""
    table = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "key")
    assert table.exit_code == 0, table.output
    assert [line.split()[:2] for line in table.output.splitlines()[1:]] == [["-", "4"]]


def test_help_says_what_each_group_means() -> None:
    """--help names both model groups and what each holds."""
    text = " ".join(CliRunner().invoke(spend, ["--help"]).output.split())
    assert '"-" is the calls naming a model the gateway does not serve' in text
    assert '"(no model)" the calls refused before a model was read' in text
