"""Three ``switchboard serve`` processes behind a real nginx (round-robin), sharing one Postgres
and one Redis, driven with the openai SDK, behave as one gateway:

- every call is logged exactly once across replicas (rows counted by ``x-request-id`` in
  Postgres), through a Postgres outage (the private server stopped, calls answered meanwhile and
  their rows spooled in the shared Redis stream) and a ``kill -9`` of one replica during that
  outage (its spooled rows are replayed by the others; it is then started again on its own spool
  directory, as Kubernetes restarts a crashed container in the same pod, and replays its
  journal);
- a real Prometheus scraping the three sums ``switchboard_requests_total`` to the calls sent.
  A killed process takes its counters with it: the test waits until Prometheus has scraped every
  call before the kill, so the killed life's last value is known, and asserts at the end that
  that value plus what the live processes expose equals the calls sent.

nginx names the replica that answered each call (``X-Upstream``), so each process's share is
known exactly.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import sim_config
from tests.calllog import conftest as calllog
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.ops.support import METRICS_KEY
from tests.ops.test_prometheus import run_prometheus, wait_for_value
from tests.replicas.support import (
    MASTER_KEY,
    Replica,
    rows_by_request_id,
    run_nginx,
    tree_env,
    wait_for_rows,
)
from tests.servers import free_port

postgres = calllog.postgres
redis_server = calllog.redis_server
CHAT = 'sum(switchboard_requests_total{endpoint="/v1/chat/completions"})'


class Driver:
    """Sequential calls through nginx; the request ids sent and who answered each."""

    def __init__(self, url: str) -> None:
        self.client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0,
                                    timeout=60)
        self.answered_by: dict[str, str] = {}

    def calls(self, count: int) -> None:
        for i in range(count):
            request_id = f"replicas-{uuid.uuid4().hex}"
            messages: list[ChatCompletionMessageParam] = [
                {"role": "user", "content": f"call {i}"}]
            headers = {"x-request-id": request_id}
            if i % 3 == 0:
                streamed = self.client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages, stream=True, extra_headers=headers)
                chunks = streamed.parse()
                text = "".join(chunk.choices[0].delta.content or ""
                               for chunk in chunks if chunk.choices)
                upstream = streamed.headers["x-upstream"]
            else:
                plain = self.client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages, extra_headers=headers)
                text = plain.parse().choices[0].message.content or ""
                upstream = plain.headers["x-upstream"]
            assert text, request_id
            # nginx lists every replica it tried ("dead, live"): the last one answered
            self.answered_by[request_id] = upstream.split(", ")[-1]


@pytest.fixture
def fleet(tmp_path: Path, simulator: str, postgres: PrivatePostgres,
          redis_server: PrivateRedis) -> Iterator[list[Replica]]:
    raw = sim_config(simulator)
    raw["calllog"] = {"claim_idle_s": 2}  # a dead consumer's pending rows claimed after 2 s
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw))
    replicas = []
    for name in ("a", "b", "c"):
        env = tree_env({"SWITCHBOARD_MASTER_KEY": MASTER_KEY,
                        "SWITCHBOARD_METRICS_KEY": METRICS_KEY,
                        "SWITCHBOARD_CONFIG": str(config),
                        "SWITCHBOARD_DATABASE_URL": postgres.url,
                        "SWITCHBOARD_REDIS_URL": redis_server.url,
                        "SWITCHBOARD_SPOOL_DIR": str(tmp_path / f"spool-{name}")})
        replicas.append(Replica(name, free_port(), env, tmp_path / f"gateway-{name}.log"))
    try:
        for replica in replicas:
            replica.start()
        yield replicas
    finally:
        statuses = {r.name: r.stop() for r in replicas}
        postgres.stop()  # running again for the module's next user, whatever the test did
        postgres.start()
        assert all(s in (0, None) for s in statuses.values()), statuses


@pytest.mark.timeout(600)
def test_three_replicas_behave_as_one(tmp_path: Path, fleet: list[Replica],
                                      postgres: PrivatePostgres) -> None:
    a, b, c = fleet
    upstream = {f"127.0.0.1:{r.port}": r.name for r in fleet}
    with run_nginx(tmp_path / "nginx", upstream) as lb, \
            run_prometheus(tmp_path, a.url, b.url, c.url) as prometheus:
        driver = Driver(lb)
        driver.calls(90)
        shares = Counter(upstream[u] for u in driver.answered_by.values())
        assert shares == {"a": 30, "b": 30, "c": 30}, shares  # round-robin reached all three

        postgres.stop()  # the outage: calls are still answered, rows go to the Redis spool
        driver.calls(60)
        for replica in fleet:  # every replica saw the outage, and still answers ready
            ready = httpx.get(replica.url + "/readyz")
            assert ready.status_code == 200
            assert ready.json()["calllog"]["store"]["up"] is False, ready.json()
            assert ready.json()["calllog"]["spools"]["redis"]["up"] is True, ready.json()
        sent_before_kill = len(driver.answered_by)
        value = wait_for_value(prometheus, CHAT, lambda v: v == sent_before_kill)
        assert value == sent_before_kill, prometheus.diagnostics()
        c_first_life = sum(1 for u in driver.answered_by.values() if upstream[u] == "c")
        c.kill9()  # between calls: every call it answered has its row journaled or spooled
        driver.calls(30)  # nginx fails over to a and b
        assert all(upstream[driver.answered_by[r]] in ("a", "b")
                   for r in list(driver.answered_by)[sent_before_kill:])

        postgres.start()
        c.start()  # the same spool directory: a container restarted in its pod
        driver.calls(60)

        counts = wait_for_rows(postgres.url, driver.answered_by)
        wrong = {r: n for r, n in counts.items() if n != 1}
        assert not wrong, f"{len(wrong)} request ids not logged exactly once: " \
                          f"{list(wrong.items())[:5]}"
        assert len(counts) == 240

        live = len(driver.answered_by) - c_first_life
        value = wait_for_value(prometheus, CHAT, lambda v: v == live)
        assert value == live, \
            f"{CHAT} = {value}, expected {live} (+{c_first_life} scraped from the killed " \
            f"process before it died)\n{prometheus.diagnostics()}"
        up = prometheus.query('up{job="switchboard"}')["data"]["result"]
        assert sorted(r["value"][1] for r in up) == ["1", "1", "1"], prometheus.diagnostics()
        assert rows_by_request_id(postgres.url, driver.answered_by) == counts
