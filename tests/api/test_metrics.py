"""What /metrics tells an operator before users notice: failures by error code, and how long
the oldest pending job has waited."""

import re
import time
import uuid

import httpx
import pytest

from tests.conftest import OwnStack, new_slug
from tests.stack import Stack


def sample(text: str, series: str) -> float:
    """The value of one series (name and labels exactly as written) in a scrape, 0 if absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_failed_jobs_are_counted_by_kind_and_error_code(client: httpx.Client) -> None:
    series = 'idmirror_jobs_failed_total{code="user_not_found",kind="agent.upsert"}'
    before = sample(client.get("/metrics").text, series)
    for _ in range(3):
        failed = client.put(f"/v1/internal/agents/x@{new_slug('gone')}", json={"display_name": "X"})
        assert failed.status_code == 404
    assert sample(client.get("/metrics").text, series) == before + 3


@pytest.fixture
def without_workers(own_stack: OwnStack) -> Stack:
    """An API with no worker: what it accepts stays pending."""
    return own_stack("api")


def test_the_oldest_pending_job_age_grows_while_nothing_drains(without_workers: Stack) -> None:
    with without_workers.client() as client:
        age = "idmirror_oldest_pending_job_age_seconds"
        assert sample(client.get("/metrics").text, age) == 0
        accepted = client.put(
            f"/v1/internal/users/{uuid.uuid4()}",
            json={"email": "a@example.com", "slug": new_slug()},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        time.sleep(1.5)
        first = sample(client.get("/metrics").text, age)
        time.sleep(1.0)
        second = sample(client.get("/metrics").text, age)
    assert 1.0 <= first < second
