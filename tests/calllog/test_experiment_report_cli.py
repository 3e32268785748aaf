"""``switchboard experiments report`` prints every metric the report compares with the
control, latency included (its mean, confidence sequence and verdict), and the time to first
token: over real rows in a SQLite call log, read through a running gateway."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncSession

from app.calllog.cli import experiments as experiments_cli
from app.db.engine import make_engine
from app.db.migrate import upgrade
from tests.api.conftest import MASTER_KEY
from tests.servers import serve
from tests.test_experiment_report import ab_config, call, sqlite_app


async def test_the_latency_comparison_and_first_token_are_printed(simulator: str,
                                                                   tmp_path: Path) -> None:
    """40 calls a variant, 20 ms against 400 ms: the candidate's latency row says it differs
    from the control, as ``differs_from_control.latency_ms`` does."""
    database = f"sqlite:///{tmp_path / 'calls.db'}"
    await upgrade(database)
    engine = make_engine(database)
    rows = [call(f"c-{i}", "control", latency_ms=20.0) for i in range(40)]
    rows += [call(f"v-{i}", "candidate", latency_ms=400.0) for i in range(40)]
    for row in rows:
        row.ttft_ms = 10.0 if row.variant == "control" else 200.0
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()
    await engine.dispose()
    with serve(sqlite_app(tmp_path, ab_config(simulator))) as url:
        printed = CliRunner().invoke(experiments_cli, [
            "report", "ab", "--url", url, "--key", MASTER_KEY], env={})
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert "candidate: 40 calls, p50 400 ms, p95 400 ms, time to first token p50 200 ms" in lines
    latency = [line for line in lines if line.strip().startswith("latency_ms")]
    assert len(latency) == 2, printed.output
    assert latency[0].split()[:4] == ["latency_ms", "n=40", "mean", "20"]
    assert latency[1].endswith("differs from control"), latency[1]
