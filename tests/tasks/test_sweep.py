"""The sweeper does not trust the "drain queued" flag for jobs it finds stray: the flag may
stand for a message a dead worker took with it."""

import uuid

import httpx
import redis

from tests.stack import Stack, wait_until

FLAG = "idmirror:drain-queued"


def test_a_stray_job_is_drained_though_the_flag_says_a_drain_is_on_its_way(
    stack: Stack, client: httpx.Client
) -> None:
    broker = redis.Redis.from_url(stack.redis_url)
    broker.set(FLAG, 1, ex=300)  # as a worker killed after it took the message leaves it
    try:
        user_id = uuid.uuid4()
        accepted = client.put(
            f"/v1/internal/users/{user_id}",
            json={"email": "stray@example.com", "slug": f"stray-{uuid.uuid4().hex[:8]}"},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        # The stack sweeps every second and calls a job stray after two.
        wait_until(
            lambda: client.get(f"/v1/internal/users/{user_id}").status_code == 200, timeout=15
        )
    finally:
        broker.delete(FLAG)
