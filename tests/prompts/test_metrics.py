"""Calls that rendered a template are counted by template version, under a bounded label."""

from __future__ import annotations

from app.calllog import CallRecord
from app.metrics.families import MAX_PROMPTS, Metrics
from app.metrics.recorder import Recorder
from app.usage import Usage


def record(prompt_id: str | None, version: int | None, *, status: int = 200,
           refusal: bool | None = None) -> CallRecord:
    rec = CallRecord(id="c", endpoint="/v1/chat/completions", caller="master",
                     public_model="chat", provider="sim", prompt_id=prompt_id,
                     prompt_version=version, http_status=status,
                     status="ok" if status == 200 else "error", latency_ms=12.0,
                     refusal=refusal)
    if status == 200:
        rec.usage = Usage(prompt_tokens=3, completion_tokens=5)
    return rec


def test_prompt_families_by_version_and_bounded() -> None:
    """Calls, completion tokens and refusals per ``<template>@v<n>``; calls without a template
    add nothing; past ``MAX_PROMPTS`` values the rest count as ``other``."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"])
    for rec in (record("summarise", 1), record("summarise", 1, refusal=True),
                record("summarise", 2, status=400), record(None, None)):
        recorder.observe(rec)
    recorder.drain()
    value = metrics.registry.get_sample_value
    assert value("switchboard_prompt_calls_total", {"prompt": "summarise@v1",
                                                    "status_class": "2xx"}) == 2
    assert value("switchboard_prompt_calls_total", {"prompt": "summarise@v2",
                                                    "status_class": "4xx"}) == 1
    assert value("switchboard_prompt_completion_tokens_total", {"prompt": "summarise@v1"}) == 10
    assert value("switchboard_prompt_refusals_total", {"prompt": "summarise@v1"}) == 1
    for n in range(MAX_PROMPTS + 5):
        recorder.observe(record("many", n + 1))
    recorder.drain()
    labels = {s.labels["prompt"] for m in metrics.registry.collect()
              if m.name == "switchboard_prompt_calls" for s in m.samples}
    assert len(labels) == MAX_PROMPTS + 1 and "other" in labels


def test_a_call_without_a_version_adds_no_prompt_series() -> None:
    """A call naming a template but no version (a variant pinning one the template lacks:
    the 404) adds no ``prompt`` series: the label holds only versions that exist."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"])
    recorder.observe(record("one", None, status=404))
    recorder.drain()
    labels = {s.labels["prompt"] for m in metrics.registry.collect()
              if m.name.startswith("switchboard_prompt") for s in m.samples}
    assert labels == set()
