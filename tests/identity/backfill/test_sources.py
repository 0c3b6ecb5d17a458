"""Pulls from upstream sources, against real HTTP servers (tests/upstream.py) and a stack of
its own whose IDMIRROR_SOURCES names them."""

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cli.embedded import EmbeddedRedis, free_port
from tests.identity.backfill.uploads import wait_done
from tests.identity.backfill.upstream import Upstream
from tests.stack import Stack, database_url_for, wait_until

pytestmark = pytest.mark.slow


def dataset(
    name: str, users: int, agents_per_user: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    people = [
        {"id": str(uuid.uuid4()), "email": f"{name}{i}@example.com", "slug": f"{name}-{i}"}
        for i in range(users)
    ]
    bots = [
        {"key": f"bot{j}@{name}-{i}", "display_name": f"Bot {j}", "metadata": {"from": name}}
        for i in range(users)
        for j in range(agents_per_user)
    ]
    return people, bots


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {
        "crm": Upstream(*dataset("crm", 300, 3), token="s3cret"),
        "flaky": Upstream(*dataset("flaky", 40, 2)),
        "slow": Upstream(*dataset("slow", 100, 6), delay=0.15),
        "locked": Upstream(*dataset("locked", 2, 1), token="the-right-one"),
        "scheduled": Upstream(*dataset("sched", 5, 2)),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def source_stack(postgres_server: str, upstreams: dict[str, Upstream]) -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="idmirror-sources-"))
    broker = EmbeddedRedis(home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_bf_sources_{uuid.uuid4().hex[:10]}")
    config = {
        "crm": {"base_url": upstreams["crm"].url, "token_env": "CRM_TOKEN", "page_size": 100},
        "flaky": {"base_url": upstreams["flaky"].url, "page_size": 25, "timeout_seconds": 1},
        "slow": {"base_url": upstreams["slow"].url, "page_size": 20},
        "locked": {"base_url": upstreams["locked"].url, "token_env": "LOCKED_TOKEN"},
        "down": {"base_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 2},
        "scheduled": {"base_url": upstreams["scheduled"].url, "schedule": 2},
    }
    stack = Stack(url, broker.url, home, sources=json.dumps(config), backfill_chunk_size="50")
    stack.env.update(CRM_TOKEN="s3cret", LOCKED_TOKEN="a-wrong-one")
    try:
        stack.start("worker", "--concurrency", "2")
        stack.start("beat")
        stack.start("api")
        yield stack
    finally:
        stack.stop()
        broker.stop()


@pytest.fixture
def client(source_stack: Stack) -> Iterator[httpx.Client]:
    with source_stack.client() as c:
        yield c


def pull(client: httpx.Client, source: str) -> dict[str, Any]:
    response = client.post("/v1/internal/backfills", json={"source": source})
    assert response.status_code == 202, response.text
    assert response.json()["source"] == source and response.json()["status"] == "receiving"
    run: dict[str, Any] = response.json()
    return run


def stored(stack: Stack, slug_prefix: str) -> tuple[int, int]:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT u.id), count(a.id) FROM users u "
            "LEFT JOIN agents a ON a.user_id = u.id AND a.deleted_at IS NULL WHERE u.slug LIKE %s",
            (f"{slug_prefix}-%",),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_pull_stores_every_page_of_users_then_agents_with_the_sources_token(
    client: httpx.Client, source_stack: Stack, upstreams: dict[str, Upstream]
) -> None:
    run = wait_done(client, pull(client, "crm")["id"])
    assert run["status"] == "completed", run
    assert run["counts"] == {
        "received": 1200,
        "created": 1200,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 0,
    }
    assert stored(source_stack, "crm") == (300, 900)
    seen = upstreams["crm"].seen
    assert [(s.path, s.cursor) for s in seen] == [("/users", c) for c in (None, "100", "200")] + [
        ("/agents", c) for c in (None, *(str(n) for n in range(100, 900, 100)))
    ]
    assert {s.authorization for s in seen} == {"Bearer s3cret"} and {s.limit for s in seen} == {100}

    again = wait_done(client, pull(client, "crm")["id"])
    assert again["counts"]["unchanged"] == 1200
    with psycopg.connect(source_stack.database_url) as conn:
        chunks = conn.execute("SELECT chunks FROM backfills WHERE id = %s", (again["id"],))
        assert chunks.fetchone() == (0,), "the pull's records were all known from the first"


def test_pull_retries_5xx_and_timeouts_and_waits_as_retry_after_says(
    client: httpx.Client, source_stack: Stack, upstreams: dict[str, Upstream]
) -> None:
    flaky = upstreams["flaky"]
    flaky.faults = {"/users": [503, 502], "/agents": [("retry_after", 1), ("hang", 3)]}
    run = wait_done(client, pull(client, "flaky")["id"])
    assert run["status"] == "completed", run
    assert run["counts"]["created"] == 120 and run["counts"]["failed"] == 0
    assert stored(source_stack, "flaky") == (40, 80)
    statuses = [(s.path, s.status) for s in flaky.seen]
    assert statuses[:3] == [("/users", 503), ("/users", 502), ("/users", 200)]
    throttled = next(i for i, s in enumerate(flaky.seen) if s.status == 429)
    assert flaky.seen[throttled + 1].at - flaky.seen[throttled].at >= 1.0
    assert flaky.seen[throttled + 1].status == 0  # hung past the 1 s timeout, then retried
    assert flaky.seen[throttled + 2].status == 200 and flaky.seen[throttled + 2].cursor is None


def test_second_trigger_while_a_pull_runs_is_refused(
    client: httpx.Client, upstreams: dict[str, Upstream]
) -> None:
    first = pull(client, "slow")
    second = client.post("/v1/internal/backfills", json={"source": "slow"})
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "source_busy"
    assert second.json()["error"]["details"]["backfill_id"] == first["id"]
    assert wait_done(client, first["id"])["counts"]["created"] == 700
    assert wait_done(client, pull(client, "slow")["id"])["counts"]["unchanged"] == 700


def test_source_errors_fail_the_run_with_the_reason(client: httpx.Client) -> None:
    locked = wait_done(client, pull(client, "locked")["id"])
    assert locked["status"] == "failed"
    assert (
        locked["error"]["code"] == "invalid_backfill"
        and locked["error"]["details"]["status"] == 401
    )
    down = wait_done(client, pull(client, "down")["id"])
    assert down["status"] == "failed" and down["error"]["code"] == "service_unavailable"
    assert down["error"]["details"]["attempts"] == 2


def test_beat_pulls_a_scheduled_source(client: httpx.Client, source_stack: Stack) -> None:
    def scheduled_run() -> dict[str, Any] | None:
        runs = client.get("/v1/internal/backfills?limit=100").json()["items"]
        return next(
            (r for r in runs if r["source"] == "scheduled" and r["status"] == "completed"), None
        )

    run = wait_until(scheduled_run, timeout=60)
    assert run["counts"]["received"] == 15
    assert stored(source_stack, "sched") == (5, 10)


def test_pull_resumes_from_its_checkpoint_after_its_worker_is_killed(
    client: httpx.Client, source_stack: Stack, upstreams: dict[str, Upstream]
) -> None:
    slow = upstreams["slow"]
    slow.seen.clear()
    with psycopg.connect(source_stack.database_url, autocommit=True) as conn:
        conn.execute("UPDATE agents SET display_name = 'stale' WHERE slug LIKE 'bot%'")
    run = pull(client, "slow")
    wait_until(lambda: len(slow.pages("/agents")) >= 12, timeout=60, interval=0.05)
    source_stack.kill("worker")
    fetched_before_kill = len(slow.pages("/agents"))
    assert fetched_before_kill < 30, "the pull finished before its worker was killed"

    source_stack.start("worker", "--concurrency", "2")
    final = wait_done(client, run["id"], timeout=120)
    assert final["status"] == "completed", final
    assert final["counts"]["received"] == 700 and final["counts"]["failed"] == 0
    assert final["counts"]["updated"] + final["counts"]["unchanged"] == 700
    assert len(slow.pages("/users")) == 5, "the users were checkpointed: not fetched again"
    resumed = slow.pages("/agents")[fetched_before_kill:]
    assert resumed and resumed[0].cursor is not None, "the pull went back to its checkpoint"
