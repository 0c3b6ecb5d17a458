"""Stalls page someone: with the workers stopped and jobs pending, /healthz/stall and /metrics
report a stall within IDMIRROR_STALL_AFTER_SECONDS, the sweeper (in beat) goes on beating and
the workers drop out of the count; once the workers resume, the stall clears."""

import time
from typing import Any

import httpx

from tests.api.test_metrics import sample
from tests.conftest import OwnStack, put_pending_users
from tests.stack import wait_until

STALL_AFTER = 3.0


def test_a_stall_is_reported_in_time_and_clears_once_the_workers_resume(
    own_stack: OwnStack,
) -> None:
    stack = own_stack(
        "worker", "beat", "api", stall_after_seconds=str(STALL_AFTER), worker_heartbeat_seconds="1"
    )
    with stack.client() as client:
        assert client.get("/healthz/stall").json()["status"] == "idle"
        wait_until(lambda: sample(client.get("/metrics").text, "idmirror_workers_alive") == 1)
        stack.pause("worker")
        try:
            accepted_at = time.monotonic()
            put_pending_users(stack, client, 5)
            stalled = wait_until(lambda: _stalled(client), timeout=STALL_AFTER + 10)
            assert time.monotonic() - accepted_at < STALL_AFTER + 3
            details = stalled["error"]["details"]
            assert details["pending"] == 5 and details["oldest_pending_age_seconds"] > STALL_AFTER
            metrics = client.get("/metrics").text
            assert sample(metrics, "idmirror_stalled") == 1
            assert sample(metrics, "idmirror_sweeper_heartbeat_age_seconds") < 2.5
            wait_until(lambda: sample(client.get("/metrics").text, "idmirror_workers_alive") == 0)
        finally:
            stack.pause("worker", resume=True)
        moving = wait_until(lambda: _moving(client), timeout=30)
        assert moving["pending"] == 0 and moving["drain_heartbeat_age_seconds"] < STALL_AFTER
        assert sample(client.get("/metrics").text, "idmirror_stalled") == 0


def _stalled(client: httpx.Client) -> dict[str, Any] | None:
    answer = client.get("/healthz/stall")
    return answer.json() if answer.status_code == 503 else None


def _moving(client: httpx.Client) -> dict[str, Any] | None:
    answer = client.get("/healthz/stall")
    found = answer.json()
    return found if answer.status_code == 200 and found["pending"] == 0 else None
