"""Invariant 1 and 2 under faults: broker down, Redis flushed, worker killed mid-drain.

Each test runs its own stack on its own database and its own Redis, so nothing the shared stack
does (its sweeper, its worker) can mask a failure here.
"""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from cli.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.stack import Stack, database_url_for, scalar, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(postgres_server: str, tmp_home: Path) -> Iterator[tuple[Stack, EmbeddedRedis]]:
    broker = EmbeddedRedis(tmp_home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_fault_{uuid.uuid4().hex[:10]}")
    # Every write through the workers: the API applies none where it accepts it.
    stack = Stack(url, broker.url, tmp_home, apply_on_accept="false")
    try:
        yield stack, broker
    finally:
        stack.stop()
        broker.stop()


def counts(stack: Stack) -> dict[str, int]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    return {"pending": 0, "applied": 0, "failed": 0, **dict(rows)}


def submit_async(stack: Stack, requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """PUT every (path, body) with Prefer: respond-async; every answer must be 202."""
    with stack.client() as client, ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda r: client.put(r[0], json=r[1], headers={"Prefer": "respond-async"}),
                requests,
            )
        )
    assert {r.status_code for r in responses} == {202}
    return [r.headers["Idmirror-Job-Id"] for r in responses]


def test_put_while_broker_is_down_is_accepted_and_applied_once_it_is_back(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, broker = isolated
    for name in ("worker", "beat", "api"):
        stack.start(name)
    port = broker.port
    broker.stop()

    user_id = str(uuid.uuid4())
    with stack.client() as client:
        response = client.put(
            f"/v1/internal/users/{user_id}", json={"email": "down@example.com", "slug": "down"}
        )
        assert response.status_code == 202
        job_id = response.headers["Idmirror-Job-Id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "pending"

        restarted = EmbeddedRedis(broker.directory, port=port)
        restarted.start()
        try:
            job = wait_until(
                lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] != "pending" and j,
                timeout=60,
            )
            assert job["status"] == "applied" and job["outcome"] == "created"
            assert client.get(f"/v1/internal/users/{user_id}").json()["slug"] == "down"
        finally:
            stack.stop()
            restarted.stop()


def test_put_while_broker_is_down_is_applied_by_the_api_that_accepts_it(
    postgres_server: str, tmp_home: Path
) -> None:
    """A write to an idle key needs no broker and no worker: the API applies it as it
    accepts it."""
    url = database_url_for(postgres_server, f"idmirror_fault_{uuid.uuid4().hex[:10]}")
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # no broker listens there
    stack = Stack(url, nobody, tmp_home)
    try:
        stack.start("api")
        user_id = str(uuid.uuid4())
        with stack.client() as client:
            response = client.put(
                f"/v1/internal/users/{user_id}",
                json={"email": "d@example.com", "slug": "down-too"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["created"] is True
            assert client.get(f"/v1/internal/users/{user_id}").json()["slug"] == "down-too"
        assert counts(stack) == {"pending": 0, "applied": 1, "failed": 0}
    finally:
        stack.stop()


def test_redis_flushed_with_500_pending_jobs_all_reach_a_final_state(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, broker = isolated
    stack.start("api")  # no worker yet: the jobs stay pending and their messages queued
    job_ids = submit_async(
        stack,
        [
            (f"/v1/internal/users/{uuid.uuid4()}", {"email": "f@example.com", "slug": f"flush-{i}"})
            for i in range(500)
        ],
    )
    assert counts(stack)["pending"] == 500
    assert redis.Redis.from_url(broker.url).llen("celery") > 0
    redis.Redis.from_url(broker.url).flushall()

    stack.start("worker")
    stack.start("beat")
    wait_until(lambda: counts(stack)["pending"] == 0, timeout=120)
    final = counts(stack)
    assert final["applied"] == 500 and final["failed"] == 0
    with psycopg.connect(stack.database_url) as conn:
        applied = scalar(
            conn,
            "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'applied' "
            "AND outcome = 'created' AND attempts = 1",
            (job_ids,),
        )
        users = scalar(conn, "SELECT count(*) FROM users")
    assert applied == 500 and users == 500


def test_worker_killed_mid_drain_every_job_applied_exactly_once(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, _ = isolated
    stack.env["IDMIRROR_DRAIN_BATCH_SIZE"] = "20"
    stack.start("worker", "--concurrency", "1")
    stack.start("api")
    owners = [f"owner-{i}" for i in range(20)]
    put_users(stack, owners)
    stack.kill("worker", sig=15)

    per_key = 60
    submit_async(
        stack,
        [
            (f"/v1/internal/agents/bot@{owner}", {"display_name": f"{owner} v{n}"})
            for n in range(per_key)
            for owner in owners
        ],
    )
    total = len(owners) * per_key
    assert counts(stack)["pending"] == total

    stack.start("worker", "--concurrency", "1")
    wait_until(lambda: counts(stack)["applied"] >= 20 + 100, timeout=60, interval=0.02)
    stack.kill("worker")  # SIGKILL to the whole group, mid-transaction
    at_kill = counts(stack)
    assert at_kill["pending"] > 0, "the worker finished before it could be killed"

    stack.start("worker", "--concurrency", "2")
    stack.start("beat")
    wait_until(lambda: counts(stack)["pending"] == 0, timeout=120)

    with psycopg.connect(stack.database_url) as conn:
        final = counts(stack)
        assert final == {"pending": 0, "applied": 20 + total, "failed": 0}
        assert scalar(conn, "SELECT count(*) FROM jobs WHERE attempts <> 1") == 0
        for owner in owners:
            assert_agent_applied_in_order(conn, owner, per_key)


def put_users(stack: Stack, slugs: list[str]) -> None:
    """One user per slug, applied before the answer."""
    with stack.client() as client:
        for slug in slugs:
            user = client.put(
                f"/v1/internal/users/{uuid.uuid4()}", json={"email": "o@example.com", "slug": slug}
            )
            assert user.status_code == 200


def assert_agent_applied_in_order(conn: psycopg.Connection[Any], owner: str, jobs: int) -> None:
    """The owner's bot was created by its first job, updated by every later one, and holds the
    body of the last job accepted."""
    key = f"agent:bot@{owner}"
    outcomes = [
        row[0]
        for row in conn.execute("SELECT outcome FROM jobs WHERE key = %s ORDER BY seq", (key,))
    ]
    assert outcomes == ["created"] + ["updated"] * (jobs - 1), owner
    # Sixteen threads submit at once, so the last accepted body (highest seq) is not
    # always the last one in the list: it is the one that must be stored.
    last = conn.execute(
        "SELECT payload->>'display_name' FROM jobs WHERE key = %s ORDER BY seq DESC LIMIT 1",
        (key,),
    ).fetchone()
    live = conn.execute(
        "SELECT a.display_name FROM agents a JOIN users u ON u.id = a.user_id "
        "WHERE u.slug = %s AND a.deleted_at IS NULL",
        (owner,),
    ).fetchall()
    assert live == [last]


def test_postgres_restart_loses_nothing_accepted(tmp_home: Path) -> None:
    """A restart drops every pooled connection of the API and the worker: accepted jobs are
    applied once it is back, and writes arriving after it are accepted without a 5xx."""
    postgres, broker = EmbeddedPostgres(tmp_home / "postgres"), EmbeddedRedis(tmp_home / "redis")
    server_url = postgres.start()
    broker.start()
    stack = Stack(
        database_url_for(server_url, "idmirror_restart"),
        broker.url,
        tmp_home,
        apply_on_accept="false",
    )
    try:
        for name in ("api", "worker", "beat"):
            stack.start(name)
        with stack.client() as client:
            user = client.put(
                f"/v1/internal/users/{uuid.uuid4()}",
                json={"email": "r@example.com", "slug": "restart"},
            )
            assert user.status_code == 200
        stack.pause("worker")  # its pooled connections will be dead when it wakes
        before = submit_async(
            stack,
            [(f"/v1/internal/agents/a{i}@restart", {"display_name": "one"}) for i in range(50)],
        )

        assert counts(stack)["pending"] == 50
        postgres.stop()
        with stack.client() as client:
            down = client.put("/v1/internal/agents/c@restart", json={"display_name": "lost"})
        assert down.status_code == 503 and down.headers["Retry-After"] == "1"
        assert down.json()["error"]["code"] == "database_unavailable"
        assert postgres.start() == server_url  # the same server, back where it was
        stack.pause("worker", resume=True)

        with stack.client() as client:
            after = [
                client.put(f"/v1/internal/agents/b{i}@restart", json={"display_name": "two"})
                for i in range(20)
            ]
        assert [r.status_code for r in after] == [200] * 20
        wait_until(lambda: counts(stack)["pending"] == 0, timeout=90)
        with psycopg.connect(stack.database_url) as conn:
            jobs = conn.execute(
                "SELECT status, attempts, count(*) FROM jobs WHERE kind = 'agent.upsert' "
                "GROUP BY 1, 2"
            ).fetchall()
            agents = scalar(conn, "SELECT count(*) FROM agents")
        assert jobs == [("applied", 1, 70)] and agents == 70
        assert len(set(before)) == 50
    finally:
        stack.stop()
        broker.stop()
        postgres.stop()


def test_writes_after_the_database_dropped_every_connection_are_accepted(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, _ = isolated
    for name in ("worker", "beat", "api"):
        stack.start(name)
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    with stack.client() as client:
        user = client.put(
            f"/v1/internal/users/{uuid.uuid4()}", json={"email": "o@example.com", "slug": owner}
        )
        assert user.status_code == 200
    # Enough concurrent writes that the API pools several connections, all of which then die.
    submit_async(
        stack, [(f"/v1/internal/agents/a{i}@{owner}", {"display_name": "A"}) for i in range(32)]
    )
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        dropped = scalar(
            conn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    assert dropped >= 3  # the API's LISTEN connection and at least two pooled ones

    with stack.client() as client:
        plain = client.put(
            f"/v1/internal/agents/late@{owner}",
            json={"display_name": "Late"},
            headers={"Prefer": "respond-async"},
        )
        keyed = client.put(
            f"/v1/internal/agents/keyed@{owner}",
            json={"display_name": "Keyed"},
            headers={"Prefer": "respond-async", "Idempotency-Key": uuid.uuid4().hex},
        )
    assert (plain.status_code, keyed.status_code) == (202, 202)
    job_ids = [r.headers["Idmirror-Job-Id"] for r in (plain, keyed)]
    wait_until(lambda: counts(stack)["pending"] == 0, timeout=60)
    with psycopg.connect(stack.database_url) as conn:
        statuses = conn.execute("SELECT status FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchall()
    assert statuses == [("applied",), ("applied",)]
