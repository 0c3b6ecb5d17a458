"""The sweeper does not trust the "drain queued" flag for jobs it finds stray: the flag may
stand for a message a dead worker took with it. It runs every few seconds, so it logs only
when it re-queued something."""

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import OwnStack
from tests.stack import Stack, keys_busy, wait_until

FLAG = "idmirror:drain-queued"


def write_only_a_sweep_drains(stack: Stack, client: httpx.Client) -> None:
    """Write a user while the flag says a drain is queued (as a worker killed after it took the
    message leaves it), and wait until the user is there."""
    broker = redis.Redis.from_url(stack.redis_url)
    broker.set(FLAG, 1, ex=300)
    try:
        user_id = uuid.uuid4()
        with keys_busy(stack.database_url, f"user:{user_id}"):  # left pending by the API
            accepted = client.put(
                f"/v1/internal/users/{user_id}",
                json={"email": "stray@example.com", "slug": f"stray-{uuid.uuid4().hex[:8]}"},
                headers={"Prefer": "respond-async"},
            )
        assert accepted.status_code == 202
        assert accepted.json()["status"] == "pending"
        # The stacks sweep every second and call a job stray after two.
        wait_until(
            lambda: client.get(f"/v1/internal/users/{user_id}").status_code == 200, timeout=15
        )
    finally:
        broker.delete(FLAG)


def test_a_stray_job_is_drained_though_the_flag_says_a_drain_is_on_its_way(
    stack: Stack, client: httpx.Client
) -> None:
    write_only_a_sweep_drains(stack, client)


def records(log: Path) -> list[dict[str, Any]]:
    """The records of a JSON log; the banners Celery prints are not records."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_sweeps_are_silent_at_info_unless_they_requeue_something(own_stack: OwnStack) -> None:
    stack = own_stack("api", "worker", "beat", log_level="INFO", log_format="json")
    with stack.client() as client:
        write_only_a_sweep_drains(stack, client)
    time.sleep(2)  # sweeps that find nothing, every second
    worker = records(stack.log_dir / "worker.log")
    beat = records(stack.log_dir / "beat.log")
    mentions = [r for r in worker + beat if "sweep" in r["message"]]
    assert mentions == []
    requeued = [r for r in beat if r["logger"] == "tasks.sweep"]  # beat runs the sweeper
    assert [(r["level"], r["message"]) for r in requeued] == [
        ("INFO", "re-queued a drain for stray pending jobs (keys with them: 1)")
    ]
    assert any(r["message"].endswith(" ready.") for r in worker)
    assert any(r["message"] == "beat: Starting..." for r in beat)
    beat_lines = (stack.log_dir / "beat.log").read_text().splitlines()
    assert all(line.startswith("{") for line in beat_lines if line.strip())
    assert "[tasks]" not in (stack.log_dir / "worker.log").read_text()  # no banner either
