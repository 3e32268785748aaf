"""An experiment's report over real rows (SQLite and Postgres): a variant a live reload removed
can still be the control it is compared with, and feedback scores are judged on the scale the
experiment's scores span, so a variant whose ratings were all the same has a sequence of
positive width."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import errors, experiments
from app.db.models import Feedback
from app.feedback import MAX_SCORE
from tests.test_experiment_report import call, engine  # noqa: F401 - engine is a fixture


async def test_a_variant_a_reload_removed_can_be_the_control(
        engine: AsyncEngine) -> None:  # noqa: F811 - the fixture
    """``treat`` was configured, took calls, and a reload removed it: the report still lists
    it, and ``?control=treat`` compares the others with it; a name with no call and no
    config is still a 400 naming every variant the report knows."""
    rows = [call(f"{variant}-{i}", variant) for variant in ("control", "treat", "third")
            for i in range(3)]
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()
    report = await experiments.report_of(engine, "ab", ["control", "third"], control="treat")
    assert report["control"] == "treat"
    assert list(report["variants"]) == ["control", "third", "treat"]
    assert report["variants"]["treat"]["differs_from_control"] is None
    assert report["variants"]["third"]["differs_from_control"] is not None
    with pytest.raises(errors.InvalidRequest) as bad:
        await experiments.report_of(engine, "ab", ["control", "third"], control="nope")
    assert bad.value.param == "control" and "control, third, treat" in bad.value.message


async def test_ratings_all_the_same_are_no_proof_of_their_mean(
        engine: AsyncEngine) -> None:  # noqa: F811 - the fixture
    """30 ratings of 5 for the control, ratings from 1 to 5 for the candidate: the control's
    sequence is judged on the 1-to-5 scale the scores span and reaches below 5; with every
    score of the experiment the same, no scale is known: the sequence is judged on the range of
    every score allowed, and is wide."""
    rows = [call(f"c-{i}", "control") for i in range(30)]
    rows += [call(f"v-{i}", "candidate") for i in range(30)]
    at = datetime.now(UTC) - timedelta(seconds=30)
    ratings = [5.0] * 30 + [float(1 + i % 5) for i in range(30)]
    notes = [Feedback(id=f"f-{row.id}", call_id=row.id, created_at=at, score=score)
             for row, score in zip(rows, ratings, strict=True)]
    async with engine.begin() as conn:  # the fixture empties the calls only
        await conn.execute(delete(Feedback))
    async with AsyncSession(engine) as session:
        session.add_all([*rows, *notes])
        await session.commit()
    report = await experiments.report(engine, "ab", ["control", "candidate"], control="control")
    control = report["variants"]["control"]["feedback_score"]
    assert (control["n"], control["mean"]) == (30, 5.0)
    assert 1.0 <= control["ci95"][0] < 5.0 and control["ci95"][1] == 5.0
    assert report["variants"]["candidate"]["differs_from_control"]["feedback_score"] is False

    async with engine.begin() as conn:
        await conn.execute(delete(Feedback).where(Feedback.call_id.like("v-%")))
    alone = (await experiments.report(engine, "ab", ["control", "candidate"],
                                      control="control"))["variants"]["control"]
    low, high = alone["feedback_score"]["ci95"]
    assert -MAX_SCORE <= low < -1000 and 1000 < high <= MAX_SCORE
