"""What /metrics tells an operator before users notice: failures by error code, and how long
the oldest pending job has waited. Every metric it serves is documented in docs/api.md."""

import re
import time
import uuid

import httpx
import pytest

from tests.conftest import OwnStack, new_slug
from tests.stack import ROOT, Stack, keys_busy, wait_until


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
    """An API with no worker, which applies nothing on accept: what it accepts stays pending."""
    return own_stack("api", apply_on_accept="false")


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


def documented_metrics() -> set[str]:
    """The metrics docs/api.md's table under `GET /metrics` describes."""
    section = (ROOT / "docs" / "api.md").read_text().split("### `GET /metrics`")[1]
    return set(re.findall(r"^\| `(\w+)` \|", section.split("\n#")[0], re.MULTILINE))


def test_every_metric_served_is_documented_and_every_documented_one_served(
    stack: Stack, client: httpx.Client
) -> None:
    # A write the workers apply (its key busy while the API accepts it), so that the counters
    # and heartbeats that start with a drain have started.
    user_id = uuid.uuid4()
    with keys_busy(stack.database_url, f"user:{user_id}"):
        put = client.put(
            f"/v1/internal/users/{user_id}",
            json={"email": "m@example.com", "slug": new_slug()},
            headers={"Prefer": "respond-async"},
        )
    job = f"/v1/jobs/{put.headers['Idmirror-Job-Id']}"
    wait_until(lambda: client.get(job).json()["status"] == "applied")
    scrape = client.get("/metrics")
    assert scrape.status_code == 200
    families = set(re.findall(r"^# TYPE (\S+) ", scrape.text, re.MULTILINE))
    ours = {name for name in families if name.startswith("idmirror_")}
    assert ours == documented_metrics()
    # The rest are the Prometheus client's own, which the page names by their prefixes.
    assert {name.split("_")[0] for name in families - ours} <= {"process", "python"}
