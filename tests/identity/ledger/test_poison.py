"""A job whose apply kills its drain every time (here: a params pattern that backtracks for
ever, killed by the drain's time limit) ends failed after IDMIRROR_MAX_JOB_STARTS tries, and
takes no other job down with it."""

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import OwnStack
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.slow

BACKTRACKING = {"type": "object", "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}}}


@pytest.fixture
def isolated(own_stack: OwnStack) -> Stack:
    """A stack whose drains are killed after 3 s."""
    return own_stack(
        "worker", "beat", "api", worker_args=["--concurrency", "2"], drain_time_limit_seconds="3"
    )


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return found


def test_a_job_that_kills_its_drain_fails_alone_after_bounded_tries(isolated: Stack) -> None:
    async_ = {"Prefer": "respond-async"}
    with isolated.client() as client:
        owner = f"o-{uuid.uuid4().hex[:8]}"
        assert client.put(
            f"/v1/internal/users/{uuid.uuid4()}", json={"email": "o@example.com", "slug": owner}
        ).is_success
        assert client.put(f"/v1/internal/agents/bot@{owner}", json={"display_name": "B"}).is_success
        node_type = str(uuid.uuid4())
        schema = {"name": "slow", "params_schema": BACKTRACKING}
        assert client.put(f"/v1/internal/node-types/{node_type}", json=schema).is_success

        op = {"op": "create_node", "node_type_id": node_type, "params_used": {"p": "a" * 40 + "!"}}
        poison = client.post(
            f"/v1/agents/bot@{owner}/update", json={"operations": [op]}, headers=async_
        ).headers["Idmirror-Job-Id"]
        after = client.put(
            f"/v1/internal/agents/bot@{owner}", json={"display_name": "After"}, headers=async_
        ).headers["Idmirror-Job-Id"]
        others = [
            client.put(
                f"/v1/internal/users/{uuid.uuid4()}",
                json={"email": "x@example.com", "slug": f"x-{uuid.uuid4().hex[:8]}"},
                headers=async_,
            ).headers["Idmirror-Job-Id"]
            for _ in range(20)
        ]

        def poison_failed() -> dict[str, Any] | None:
            found = job(client, poison)
            return found if found["status"] == "failed" else None

        failed = wait_until(poison_failed, 120)
        assert failed["error"]["code"] == "internal_error"
        assert failed["error"]["details"] == {"reason": "poison", "starts": 3}

        def applied(job_ids: list[str]) -> bool:
            return all(job(client, job_id)["status"] == "applied" for job_id in job_ids)

        assert wait_until(lambda: applied([after, *others]), 60)
        assert client.get(f"/v1/agents/bot@{owner}").json()["display_name"] == "After"
        assert client.get(f"/v1/agents/bot@{owner}/graph").json()["nodes"] == []
