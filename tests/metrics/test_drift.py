"""Drift signals on the monitor itself: the targets of issue 4 and the baseline life cycle.

Answers are ``CallRecord``s as the gateway fills them; lengths come from a seeded generator whose
shape (a log-normal around ~150 tokens) resembles real chat answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from app.answers import judge
from app.calllog import CallRecord
from app.cli import main
from app.config import Drift
from app.db.engine import make_engine
from app.metrics.baselines import DatabaseBaselines, MemoryBaselines
from app.metrics.drift import N_BINS, DriftMonitor, length_bin, psi
from app.metrics.families import MAX_VERSIONS, Metrics
from tests.db.conftest import fresh_pg, migrated_pg, migrated_sqlite, sqlite_url

__all__ = ["fresh_pg", "migrated_pg", "migrated_sqlite", "sqlite_url"]  # fixtures used here

TARGET = {"model": "chat", "provider": "sim", "upstream_model": "gpt-4o-mini"}
NORMAL = "Here is a short answer about the topic you asked for."
REFUSAL = "I'm sorry, but I can't help with that."
DEFAULT = Drift()


def answer(*, text: str = NORMAL, reason: str = "stop", model: str = "gpt-4o-mini",
           fingerprint: str = "fp_1", wants_json: bool = False, refused: bool = False,
           drift: Drift = DEFAULT) -> CallRecord:
    """A call's record as the gateway ends it: ``refused``, an explicit refusal; ``judge``
    (with ``drift``'s phrases) decides the rest, as ``Gateway.finish`` does."""
    record = CallRecord(id="r", endpoint="/v1/chat/completions", caller="t")
    record.answer_text, record.finish_reason, record.wants_json = text, reason, wants_json
    record.response_model, record.system_fingerprint = model, fingerprint
    record.target_model = "gpt-4o-mini"
    record.refusal = refused
    judge(record, text, phrases=drift.refusal_phrases, scan_chars=drift.refusal_scan_chars)
    return record


def lengths(seed: int, scale: float = 1.0) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield max(1, round(rng.lognormvariate(5.0, 0.6) * scale))


def gauge(metrics: Metrics, name: str, **labels: str) -> float:
    metrics.pending.flush()  # what a scrape does first
    got = metrics.registry.get_sample_value(name, {**TARGET, **labels})
    return 0.0 if got is None else got


def monitor(**config: object) -> tuple[DriftMonitor, Metrics]:
    metrics = Metrics()
    return DriftMonitor(Drift.model_validate(config), metrics=metrics,
                        store=MemoryBaselines()), metrics


def feed(mon: DriftMonitor, n: int, source: Iterator[int], **kwargs: object) -> None:
    for _ in range(n):
        mon.observe("chat", "sim", next(source), answer(**kwargs))  # type: ignore[arg-type]


def answers_until(mon: DriftMonitor, metrics: Metrics, signal: str, source: Iterator[int],
                  *, limit: int, refusal_share: float = 0.0) -> int | None:
    """How many answers it takes to flag ``signal`` (None: not within ``limit``)."""
    rng = random.Random(7)
    for i in range(1, limit + 1):
        text = REFUSAL if rng.random() < refusal_share else NORMAL
        mon.observe("chat", "sim", next(source), answer(text=text))
        if gauge(metrics, "switchboard_drift_flagged", signal=signal) == 1:
            return i
    return None


def test_psi_is_zero_for_identical_histograms_and_large_for_a_shift() -> None:
    """PSI: 0 for the same histogram, past 0.25 when the mass moves one bin over."""
    same = [0, 10, 40, 30, 20]
    assert psi(same, same) == pytest.approx(0.0)
    assert psi(same, [10, 40, 30, 20, 0]) > 0.25
    assert length_bin(0) == 0 and length_bin(1) == 1 and length_bin(100) < length_bin(200)


def test_stable_stream_stays_below_threshold_over_5000_answers() -> None:
    """5,000 answers from the baseline's own distribution never flag length or refusals."""
    mon, metrics = monitor(baseline_size=1000, window=500)
    source = lengths(1)
    feed(mon, 1000, source)
    worst = 0.0
    for _ in range(5000):
        mon.observe("chat", "sim", next(source), answer())
        worst = max(worst, gauge(metrics, "switchboard_drift_length_psi"))
        assert gauge(metrics, "switchboard_drift_flagged", signal="length") == 0
        assert gauge(metrics, "switchboard_drift_flagged", signal="refusals") == 0
    assert 0 < worst < 0.1


def test_halved_answers_are_flagged_within_500() -> None:
    """Answers half as long flag the length signal within 500 answers."""
    mon, metrics = monitor(baseline_size=1000, window=500)
    feed(mon, 1500, lengths(2))  # baseline, then a full window of stable answers
    taken = answers_until(mon, metrics, "length", lengths(3, scale=0.5), limit=500)
    assert taken is not None and taken <= 500
    assert gauge(metrics, "switchboard_drift_length_psi") > 0.25


def test_refusals_at_20_percent_are_flagged_within_500() -> None:
    """A 20% refusal rate flags the refusal signal within 500 answers; length stays calm."""
    mon, metrics = monitor(baseline_size=1000, window=500)
    feed(mon, 1500, lengths(4))
    taken = answers_until(mon, metrics, "refusals", lengths(5), limit=500, refusal_share=0.2)
    assert taken is not None and taken <= 500
    assert gauge(metrics, "switchboard_refusals_total") > 0
    assert gauge(metrics, "switchboard_drift_flagged", signal="length") == 0


def test_refusal_phrases_are_configurable_and_case_insensitive() -> None:
    """Configured phrases match case-insensitively, with curly apostrophes too."""
    own = Drift(refusal_phrases=["Computer says no"])
    assert answer(text="COMPUTER SAYS NO, sorry.", drift=own).refusal
    assert not answer(text=REFUSAL, drift=own).refusal
    assert answer(text="I\u2019m sorry, but I can\u2019t help with that.").refusal
    assert answer(text="As an AI language model, I have no opinions.").refusal
    assert not answer(text=NORMAL).refusal


@pytest.mark.parametrize("how", ["explicit-refusal", "content-filter", "phrase"])
def test_drift_counts_the_refusals_the_call_rows_hold(how: str) -> None:
    """Every answer a call row marks ``refusal`` counts in ``switchboard_refusals_total``: an
    explicit refusal and a ``content_filter`` finish as well as a phrase (drift searched the
    phrases on its own, so the first two were rows' refusals that the metric never saw)."""
    mon, metrics = monitor()
    record = {"explicit-refusal": answer(text="", refused=True),
              "content-filter": answer(text="", reason="content_filter"),
              "phrase": answer(text=REFUSAL)}[how]
    assert record.refusal
    mon.observe("chat", "sim", 12, record)
    mon.observe("chat", "sim", 12, answer())
    assert gauge(metrics, "switchboard_refusals_total") == 1


def test_invalid_json_answers_are_counted_and_flagged() -> None:
    """Answers to JSON requests are checked: invalid ones count and flag the JSON signal."""
    mon, metrics = monitor(baseline_size=100, window=100, evaluate_every=10)
    source = lengths(6)
    feed(mon, 200, source, text='{"ok": true}', wants_json=True)
    assert gauge(metrics, "switchboard_drift_flagged", signal="json") == 0
    feed(mon, 30, source, text='{"ok": tr', wants_json=True)
    assert gauge(metrics, "switchboard_json_answers_total", valid="false") == 30
    assert gauge(metrics, "switchboard_json_answers_total", valid="true") == 200
    assert gauge(metrics, "switchboard_drift_json_invalid_rate") > 0.2
    assert gauge(metrics, "switchboard_drift_flagged", signal="json") == 1


@pytest.mark.parametrize("window", [10, 19])
def test_a_window_below_20_still_judges_json_on_20_answers(window: int) -> None:
    """With ``window`` 10-19 the JSON signal works (it was never evaluated: the window could not
    hold the 20 JSON answers it needs), judged on the last 20 JSON answers, not fewer."""
    mon, metrics = monitor(baseline_size=10, window=window, evaluate_every=5)
    source = lengths(8)
    feed(mon, 20, source, text='{"ok": true}', wants_json=True)  # baseline, then 10
    feed(mon, 10, source, text='{"ok": tr', wants_json=True)
    # 10 invalid in the last 20 JSON answers since the baseline
    assert gauge(metrics, "switchboard_drift_json_invalid_rate") == pytest.approx(0.5)
    assert gauge(metrics, "switchboard_drift_flagged", signal="json") == 1


def test_finish_reasons_are_counted_with_a_bounded_label() -> None:
    """Finish reasons count by name; unknown ones count as "other"."""
    mon, metrics = monitor()
    source = lengths(8)
    feed(mon, 3, source, reason="length")
    feed(mon, 2, source, reason="stop")
    feed(mon, 1, source, reason="a-new-reason")
    assert gauge(metrics, "switchboard_finish_reasons_total", reason="length") == 3
    assert gauge(metrics, "switchboard_finish_reasons_total", reason="stop") == 2
    assert gauge(metrics, "switchboard_finish_reasons_total", reason="other") == 1


def test_a_new_model_version_counts_once_and_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """A new fingerprint counts one change, moves the info gauge and logs before/after;
    flipping back to a version already seen counts nothing more."""
    mon, metrics = monitor()
    source = lengths(9)
    feed(mon, 5, source, fingerprint="fp_1")
    with caplog.at_level(logging.WARNING, logger="switchboard.drift"):
        feed(mon, 5, source, fingerprint="fp_2")
    feed(mon, 5, source, fingerprint="fp_1")
    feed(mon, 5, source, fingerprint="fp_2")
    assert gauge(metrics, "switchboard_upstream_version_changes_total") == 1
    info = "switchboard_upstream_model_info"
    assert gauge(metrics, info, response_model="gpt-4o-mini", system_fingerprint="fp_2") == 1
    assert gauge(metrics, info, response_model="gpt-4o-mini", system_fingerprint="fp_1") == 0
    assert any("fp_1 -> gpt-4o-mini fp_2" in r.getMessage() for r in caplog.records)
    assert mon.events[-1]["before"]["system_fingerprint"] == "fp_1"


def test_an_upstream_model_with_a_newline_cannot_forge_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """An upstream ``model`` or fingerprint holding a newline (or another control character)
    is logged escaped: one record, one line, the forged text inside it; the event keeps the
    value as sent."""
    forged = "m3\n2026-12-07 00:15:00,000 WARNING switchboard.keys: FORGED\r\x1b[31m"
    mon, _ = monitor()
    source = lengths(9)
    feed(mon, 5, source, model="m2")
    with caplog.at_level(logging.WARNING, logger="switchboard.drift"):
        feed(mon, 5, source, model=forged, fingerprint="fp\n2")
    [record] = [r for r in caplog.records if "version changed" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert message.endswith(
        "m2 fp_1 -> m3\\n2026-12-07 00:15:00,000 WARNING switchboard.keys: FORGED\\r\\x1b[31m "
        "fp\\n2")
    assert mon.events[-1]["after"] == {"model": forged, "system_fingerprint": "fp\n2"}


def test_an_upstream_rotating_its_fingerprint_adds_a_bounded_number_of_series() -> None:
    """An upstream with a new fingerprint on every answer: the first ``MAX_VERSIONS`` versions
    are exported under their own values, every later one as ``other``, so the family holds at
    most ``MAX_VERSIONS + 1`` series a target, one of them at 1 (the current)."""
    mon, metrics = monitor()
    source = lengths(9)
    for i in range(3 * MAX_VERSIONS):
        feed(mon, 1, source, fingerprint=f"fp_{i}")
    info = "switchboard_upstream_model_info"
    series = [s for family in metrics.registry.collect() if family.name == info
              for s in family.samples]
    assert len(series) == MAX_VERSIONS + 1
    assert [s.labels["system_fingerprint"] for s in series if s.value == 1] == ["other"]
    assert gauge(metrics, info, response_model="gpt-4o-mini", system_fingerprint="fp_0") == 0
    assert gauge(metrics, "switchboard_upstream_version_changes_total") == 3 * MAX_VERSIONS - 1


async def test_baselines_persist_are_shared_and_reset(engine: AsyncEngine) -> None:
    """A captured baseline is saved; another process adopts it; a reset makes both recapture."""
    store = DatabaseBaselines(engine)
    config = Drift(baseline_size=50, window=50, evaluate_every=10)
    first_metrics, second_metrics = Metrics(), Metrics()
    first = DriftMonitor(config, metrics=first_metrics, store=store)
    second = DriftMonitor(config, metrics=second_metrics, store=store)
    feed(first, 50, lengths(10))
    await first.sync()
    stored = await store.load_all()
    assert stored[("chat", "sim", "gpt-4o-mini", "length")].samples == 50
    feed(second, 20, lengths(11))  # still capturing its own
    await second.sync()
    assert gauge(second_metrics, "switchboard_drift_baseline_samples", signal="length") == 50
    assert second.status()[0]["baseline"]["samples"] == 50
    assert await store.delete("chat") == 1
    await first.sync()
    await second.sync()
    for metrics in (first_metrics, second_metrics):
        assert gauge(metrics, "switchboard_drift_baseline_samples", signal="length") == 0
    assert first.status()[0]["capturing"] == 0


async def test_its_own_baseline_read_back_keeps_the_window(engine: AsyncEngine) -> None:
    """The process that captured a baseline reads it back from the store (its timestamp through
    a datetime column) as the same baseline: its window is kept, not restarted."""
    config = Drift(baseline_size=50, window=50, evaluate_every=10)
    mon = DriftMonitor(config, metrics=Metrics(), store=DatabaseBaselines(engine))
    feed(mon, 50, lengths(12))
    feed(mon, 30, lengths(13))
    for _ in range(3):
        await mon.sync()
        assert mon.status()[0]["window"] == 30


@pytest.mark.parametrize("database", ["migrated_sqlite", "migrated_pg"])
def test_cli_lists_and_resets_baselines(request: pytest.FixtureRequest, database: str) -> None:
    """`switchboard drift baseline list|reset MODEL` shows and deletes stored baselines."""
    database_url = str(request.getfixturevalue(database))

    async def capture() -> None:
        eng = make_engine(database_url)
        try:
            mon = DriftMonitor(Drift(baseline_size=10), metrics=Metrics(),
                               store=DatabaseBaselines(eng))
            feed(mon, 10, lengths(12))
            await mon.sync()
        finally:
            await eng.dispose()

    asyncio.run(capture())
    runner = CliRunner()
    listed = runner.invoke(main, ["drift", "baseline", "list", "--database-url", database_url])
    assert listed.exit_code == 0, listed.output
    assert "chat" in listed.output and "length" in listed.output
    reset = runner.invoke(main, ["drift", "baseline", "reset", "chat", "--provider", "sim",
                                 "--database-url", database_url])
    assert reset.exit_code == 0 and "removed 1 baseline" in reset.output
    again = runner.invoke(main, ["drift", "baseline", "reset", "chat",
                                 "--database-url", database_url])
    assert again.exit_code == 0 and "no baseline stored" in again.output
    # the reset markers the two resets left are not baselines
    listed = runner.invoke(main, ["drift", "baseline", "list", "--database-url", database_url])
    assert listed.exit_code == 0 and "no drift baselines stored" in listed.output


async def test_a_reset_starts_the_new_baseline_on_an_empty_window(engine: AsyncEngine) -> None:
    """After a reset the window, scores and flags of the answers before it are gone: the new
    baseline is compared with the answers after it only, so the change the operator accepted
    is not flagged (the tester's report, defect 2)."""
    store = DatabaseBaselines(engine)
    mon, metrics = monitor_on(store, baseline_size=20, window=20, evaluate_every=5)
    feed(mon, 40, lengths(20, scale=0.1))  # a baseline of short answers, a window of them
    await mon.sync()
    feed(mon, 20, lengths(21, scale=2.0))  # the upstream changes: flagged
    assert gauge(metrics, "switchboard_drift_flagged", signal="length") == 1
    await store.delete("chat")  # the operator accepts the change
    await mon.sync()
    status = mon.status()[0]
    assert (status["baseline"], status["window"], status["flagged"]) == (None, 0, [])
    assert "psi" not in status
    assert gauge(metrics, "switchboard_drift_length_psi") == 0
    feed(mon, 20, lengths(22, scale=2.0))  # the new baseline
    await mon.sync()
    feed(mon, 5, lengths(23, scale=2.0))
    assert gauge(metrics, "switchboard_drift_flagged", signal="length") == 0
    feed(mon, 20, lengths(24, scale=2.0))
    assert mon.status()[0]["flagged"] == []


async def test_a_reset_during_a_capture_restarts_it(engine: AsyncEngine) -> None:
    """A reset that comes while a target is still capturing (nothing saved for it to delete)
    restarts the capture: the baseline holds only answers from after the reset, in this
    process and in one that first sees the target after the reset."""
    store = DatabaseBaselines(engine)
    mon, _ = monitor_on(store, baseline_size=20, window=20, evaluate_every=5)
    feed(mon, 15, lengths(30, scale=0.1))
    await mon.sync()
    assert await store.delete("chat") == 0  # nothing stored yet
    await mon.sync()
    assert mon.status()[0]["capturing"] == 0
    feed(mon, 20, lengths(31, scale=2.0))
    await mon.sync()
    captured = (await store.load_all())[("chat", "sim", "gpt-4o-mini", "length")]
    assert captured.samples == 20
    after = lengths(31, scale=2.0)
    assert captured.data["bins"] == psi_bins(next(after) for _ in range(20))
    later, _ = monitor_on(store, baseline_size=20)  # a worker started after the reset
    await later.sync()
    feed(later, 3, lengths(32))
    await later.sync()  # the old reset is not news to it: it adopts the stored baseline
    assert later.status()[0]["baseline"]["samples"] == 20


def psi_bins(tokens: Iterable[int]) -> list[int]:
    bins = [0] * N_BINS
    for n in tokens:
        bins[length_bin(n)] += 1
    return bins


def monitor_on(store: DatabaseBaselines, **config: object) -> tuple[DriftMonitor, Metrics]:
    metrics = Metrics()
    return DriftMonitor(Drift.model_validate(config), metrics=metrics, store=store), metrics


async def test_two_targets_of_one_model_on_one_provider_drift_apart(
        caplog: pytest.LogCaptureFixture) -> None:
    """Two targets of one public model on one provider (two arms of an experiment, each
    answering as its own model): interleaved answers are no version change, and each target
    captures, and stores, its own length baseline from its own answers only."""
    store, metrics = MemoryBaselines(), Metrics()
    mon = DriftMonitor(Drift(baseline_size=40, window=40), metrics=metrics, store=store)
    short, long = lengths(21, scale=0.2), lengths(22, scale=5.0)
    with caplog.at_level(logging.WARNING, logger="switchboard.drift"):
        for _ in range(40):
            for upstream, source in (("gpt-4o-mini", short), ("gpt-4o", long)):
                record = answer(model=upstream)
                record.target_model = upstream
                mon.observe("chat", "sim", next(source), record)
    assert not [r for r in caplog.records if "version changed" in r.getMessage()]
    assert list(mon.events) == []
    for upstream in ("gpt-4o-mini", "gpt-4o"):
        assert gauge(metrics, "switchboard_upstream_version_changes_total",
                     upstream_model=upstream) == 0
        assert gauge(metrics, "switchboard_upstream_model_info", upstream_model=upstream,
                     response_model=upstream, system_fingerprint="fp_1") == 1
        assert gauge(metrics, "switchboard_drift_baseline_samples", upstream_model=upstream,
                     signal="length") == 40
    assert {s["upstream_model"] for s in mon.status()} == {"gpt-4o-mini", "gpt-4o"}
    await mon.sync()
    stored = await store.load_all()
    bins = {upstream: stored[("chat", "sim", upstream, "length")].data["bins"]
            for upstream in ("gpt-4o-mini", "gpt-4o")}
    # the short answers' bins and the long answers' bins do not overlap: nothing was mixed
    assert max(i for i, n in enumerate(bins["gpt-4o-mini"]) if n) < \
        min(i for i, n in enumerate(bins["gpt-4o"]) if n)
