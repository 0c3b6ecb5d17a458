"""A backfill survives a worker killed mid-run, a Redis flush mid-run and a PostgreSQL crash
mid-run with exact results.

Each test runs its own stack on its own database and Redis (as tests/test_faults.py does), with
small chunks so that a run has many of them in flight.
"""

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import redis

from cli.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.identity.backfill.uploads import agent_item, ndjson, post_ndjson, user_item, wait_done
from tests.stack import Stack, database_url_for, scalar, wait_until

pytestmark = pytest.mark.slow

USERS, AGENTS_PER_USER = 2_000, 20
TOTAL = USERS * (1 + AGENTS_PER_USER)


@pytest.fixture
def isolated(postgres_server: str, tmp_home: Path) -> Iterator[tuple[Stack, EmbeddedRedis]]:
    broker = EmbeddedRedis(tmp_home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_bf_fault_{uuid.uuid4().hex[:10]}")
    stack = Stack(url, broker.url, tmp_home, backfill_chunk_size="400")
    try:
        yield stack, broker
    finally:
        stack.stop()
        broker.stop()


def body() -> bytes:
    users = [user_item(f"u{i}") for i in range(USERS)]
    agents = [agent_item(f"a{j}@u{i}") for i in range(USERS) for j in range(AGENTS_PER_USER)]
    return ndjson(users + agents)


def progress(client: httpx.Client, backfill_id: str) -> dict[str, Any]:
    run: dict[str, Any] = client.get(f"/v1/internal/backfills/{backfill_id}").json()
    return run


def assert_exact_final_state(stack: Stack, run: dict[str, Any]) -> None:
    assert run["status"] == "completed", run
    assert run["counts"] == {
        "received": TOTAL,
        "created": TOTAL,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 0,
    }
    with psycopg.connect(stack.database_url) as conn:
        users = scalar(conn, "SELECT count(*) FROM users")
        agents = conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, slug)) FROM agents WHERE deleted_at IS NULL"
        ).fetchone()
        leftovers = scalar(conn, "SELECT count(*) FROM backfill_chunks")
    assert users == USERS
    assert agents == (USERS * AGENTS_PER_USER, USERS * AGENTS_PER_USER)
    assert leftovers == 0


def test_worker_killed_mid_backfill_ends_with_the_exact_state_and_counts(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, _ = isolated
    stack.start("api")
    stack.start("beat")
    stack.start("worker", "--concurrency", "1")
    with stack.client() as client:
        run = post_ndjson(client, body())
        at_kill = wait_until(
            lambda: (r := progress(client, run["id"]))["counts"]["created"] > USERS + 4_000 and r,
            timeout=120,
            interval=0.02,
        )
        stack.kill("worker")  # SIGKILL to the whole group, mid-transaction
        assert at_kill["status"] == "running", "the run finished before the worker was killed"
        assert progress(client, run["id"])["counts"]["created"] < TOTAL

        stack.start("worker", "--concurrency", "2")
        final = wait_done(client, run["id"], timeout=180)
    assert_exact_final_state(stack, final)


def test_redis_flushed_mid_backfill_ends_with_the_exact_state_and_counts(
    isolated: tuple[Stack, EmbeddedRedis],
) -> None:
    stack, broker = isolated
    stack.start("api")
    stack.start("worker", "--concurrency", "1")
    with stack.client() as client:
        run = post_ndjson(client, body())
        wait_until(
            lambda: progress(client, run["id"])["counts"]["created"] > USERS + 2_000,
            timeout=120,
            interval=0.02,
        )
        redis.Redis.from_url(broker.url).flushall()
        flushed = progress(client, run["id"])
        assert flushed["status"] == "running", "the run finished before Redis was flushed"

        # Without a sweeper, the chunks whose messages were flushed would wait forever.
        stack.start("beat")
        final = wait_done(client, run["id"], timeout=180)
        metrics = client.get("/metrics").text
    assert_exact_final_state(stack, final)
    requeued = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("idmirror_backfill_sweeper_reenqueued_total")
    )
    assert requeued > 0


def test_postgres_crash_mid_backfill_ends_with_the_exact_state_and_counts(tmp_home: Path) -> None:
    """Chunks commit without waiting for the disk: a crash (an immediate stop, no checkpoint)
    may lose the last of them, effect, done mark and counts together; after recovery they are
    applied again and the run ends exact."""
    postgres, broker = EmbeddedPostgres(tmp_home / "postgres"), EmbeddedRedis(tmp_home / "redis")
    server_url = postgres.start()
    broker.start()
    stack = Stack(
        database_url_for(server_url, "idmirror_bf_crash"),
        broker.url,
        tmp_home,
        backfill_chunk_size="400",
    )
    try:
        for name in ("api", "beat", "worker"):
            stack.start(name)
        with stack.client() as client:
            stack.pause("worker")  # the chunks wait for the upload's end, then run while it dies
            run = post_ndjson(client, body())
            stack.pause("worker", resume=True)
            wait_until(
                lambda: progress(client, run["id"])["counts"]["created"] > USERS + 8_000,
                timeout=120,
                interval=0.02,
            )
            postmaster = int((tmp_home / "postgres" / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGQUIT)  # pg_ctl stop -m immediate
            wait_until(lambda: not psutil.pid_exists(postmaster), timeout=30)
            postgres.stop()  # forgets the dead server
            assert postgres.start() == server_url  # recovers from the WAL
            path = f"/v1/internal/backfills/{run['id']}"
            wait_until(lambda: client.get(path).status_code == 200, timeout=60)  # pools renewed
            final = wait_done(client, run["id"], timeout=240)
        assert_exact_final_state(stack, final)
    finally:
        stack.stop()
        broker.stop()
        postgres.stop()
