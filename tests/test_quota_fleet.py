"""Three `registry-gateway serve` replicas on one PostgreSQL state database enforce one quota
together (issue 53), counted in Redis or in the database.

Each replica gets its own client sending as fast as it is answered, until that replica answers
429. With Redis a quota in requests is checked and counted in one script: exactly the amount is
admitted. With the database each replica sees the others' use once they flushed it and it read
the sums back: the fleet overshoots by what the replicas serve while their counts are on their
way, at most two flush intervals (one to be written, one to be read), plus a request in flight
each. The test derives that bound from what the replicas were seen to serve, then checks that,
once the last counts are flushed, every replica refuses.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.demo import IRIS
from registry_sync.database import make_engine, upgrade
from registry_sync.keys import KeyStore, Scopes
from registry_sync.quotas import Quota, QuotaStore
from tests.conftest import Registry, iris_split
from tests.support.postgres import postgres_database
from tests.support.redis import redis_client, redis_url
from tests.support.servers import gateway_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])
AMOUNT = 60
FLUSH_SECONDS = 0.5
REPLICAS = 3


def _most_within(moments: list[float], span: float) -> int:
    """The most of ``moments`` (sorted) that any window of ``span`` seconds holds."""
    most, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] > span:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_three_replicas_on_postgresql_enforce_one_quota_together(
    iris_registry: Registry, tmp_path: Path, backend: str
) -> None:
    if backend == "redis":
        redis_client()  # skips (or fails in CI) without one
    with postgres_database() as state_url:
        engine = make_engine(state_url)
        try:
            upgrade(engine)
            _, secret = KeyStore(engine).create(
                "fleet-app", Scopes.parse("predict:*"), rate=None, concurrency=None, actor="test"
            )
            QuotaStore(engine).put(Quota("fleet-day", "fleet-app", "*", "day", "requests", AMOUNT), actor="test")
        finally:
            engine.dispose()
        env = {
            "GATEWAY_DATABASE_URL": state_url,
            "GATEWAY_AUTH": "keys",
            "GATEWAY_USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_ACCESS_LOG": "false",
            **({"GATEWAY_RATE_LIMIT_REDIS": redis_url()} if backend == "redis" else {}),
        }
        replicas = [
            gateway_server(tracking_uri=iris_registry.tracking_uri, workdir=tmp_path / f"replica-{i}", env=env)
            for i in range(REPLICAS)
        ]
        try:
            for process, _ in replicas:
                process.launch()
            for process, _ in replicas:
                process.wait_up(timeout=180)
            headers = {"Authorization": f"Bearer {secret}"}
            admitted: list[list[float]] = [[] for _ in replicas]
            refusals: list[httpx.Response] = []
            go = threading.Barrier(REPLICAS)

            def send(index: int, base: str) -> None:
                with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
                    go.wait()
                    while True:
                        answer = client.post(f"/models/{IRIS}/predict", json=ROW)
                        if answer.status_code == 429:
                            refusals.append(answer)
                            return
                        assert answer.status_code == 200, answer.text
                        admitted[index].append(time.monotonic())

            threads = [threading.Thread(target=send, args=(i, base)) for i, (_, base) in enumerate(replicas)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=240)
            total = sum(len(a) for a in admitted)
            assert len(refusals) == REPLICAS
            if backend == "redis":
                assert total == AMOUNT  # checked and counted atomically: not one more
            else:
                # What the replicas served in two flush intervals, at their busiest: the counts on
                # their way to the others when the quota was reached; and a request in flight each.
                overshoot = sum(_most_within(a, 2 * FLUSH_SECONDS) for a in admitted) + REPLICAS
                assert AMOUNT <= total <= AMOUNT + overshoot, (total, overshoot, [len(a) for a in admitted])
            for refused in refusals:
                assert refused.headers["X-RateLimit-Limit"] == str(AMOUNT)
                assert refused.headers["X-RateLimit-Remaining"] == "0"
                assert refused.json()["quota"] == "fleet-day"

            # Once every replica's counts are in the database, the fleet's sum is what was
            # admitted, and every replica refuses.
            def summed() -> bool:
                answer = httpx.get(f"{replicas[0][1]}/usage", headers=headers, timeout=30)
                return sum(u["requests"] for u in answer.json()["usage"]) == total

            wait_until(summed, timeout=60, what="every replica's usage flushed")
            for _, base in replicas:
                answer = httpx.post(f"{base}/models/{IRIS}/predict", json=ROW, headers=headers, timeout=30)
                assert answer.status_code == 429, answer.text
        finally:
            for process, _ in replicas:
                process.stop()
