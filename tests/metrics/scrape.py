"""Reading a gateway's ``/metrics`` in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, label set)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def scrape(base_url: str, key: str | None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def wait_for(base_url: str, key: str | None, check: Callable[[Samples], bool],
             timeout_s: float = 15.0) -> Samples:
    """Scrape until ``check`` holds (bounded); return the last scrape either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(base_url, key)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
