"""Writes that arrive together are accepted by one statement, in arrival order, each failing alone.

These run the API's accept path in this process, on a database and a Redis of their own that
no worker reads, so every job stays as the accept left it.
"""

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from api.accepts import Accepts
from cli.embedded import EmbeddedRedis
from identity.ledger import Accepted, Submission
from identity.queue import AsyncDispatcher, Dispatcher
from tests.stack import database_url_for


@pytest.fixture(scope="module")
def services(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    broker = EmbeddedRedis(tmp_path_factory.mktemp("accepts") / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_accepts_{uuid.uuid4().hex[:10]}")
    try:
        yield url, broker.url
    finally:
        broker.stop()


def with_accepts(services: Any, work: Any) -> Any:
    """Run `work(accepts)` on an event loop, as the API process does."""
    from psycopg.rows import namedtuple_row
    from psycopg_pool import AsyncConnectionPool

    database_url, redis_url = services

    async def run() -> Any:
        pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "row_factory": namedtuple_row},
            open=False,
        )
        await pool.open()
        dispatcher = AsyncDispatcher(redis_url, 30, Dispatcher(redis_url, 30))
        accepts = Accepts(pool, dispatcher, idempotency_ttl_hours=1)
        try:
            return await work(accepts)
        finally:
            await accepts.close()
            await dispatcher.close()
            await pool.close()

    return asyncio.run(run())


def agent_write(key: str, name: str, version: int | None = None) -> Submission:
    return Submission(
        key=key,
        kind="agent.upsert",
        payload={"display_name": name, "webhook_url": None, "metadata": {}},
        explicit_version=version,
    )


def accept_together(services: Any, subs: list[Submission]) -> list[Any]:
    """Accept `subs` concurrently; each one's (Accepted, queued) or the exception it raised."""

    async def work(accepts: Accepts) -> list[Any]:
        return await asyncio.gather(*(accepts.accept(s) for s in subs), return_exceptions=True)

    return with_accepts(services, work)


def jobs(services: Any, subs: list[Submission]) -> list[Any]:
    with psycopg.connect(services[0]) as conn:
        rows = conn.execute(
            "SELECT id, seq, version, xmin::text::bigint FROM jobs WHERE id = ANY(%s)",
            ([s.job_id for s in subs],),
        ).fetchall()
    by_id = {row[0]: row for row in rows}
    return [by_id.get(s.job_id) for s in subs]


def test_writes_arriving_together_share_one_statement_and_one_drain_message(services):
    _, redis_url = services
    queue = redis.Redis.from_url(redis_url)
    queue.delete("celery", "idmirror:drain-queued")
    subs = [agent_write(f"agent:a{i}@together", f"A{i}") for i in range(40)]

    answers = accept_together(services, subs)

    assert all(isinstance(a[0], Accepted) and a[1] is True for a in answers)
    assert [a[0].job["id"] for a in answers] == [str(s.job_id) for s in subs]
    assert {a[0].job["status"] for a in answers} == {"pending"}
    transactions = {row[3] for row in jobs(services, subs)}
    assert 1 <= len(transactions) <= 2  # one per writer at the most, not one per write
    assert queue.llen("celery") == 1


def test_a_keys_writes_accepted_together_keep_their_arrival_order(services):
    key = f"agent:hot-{uuid.uuid4().hex[:8]}@order"
    explicit = 1_000_000  # an old source_updated_at: kept as given, not renumbered
    subs = []
    for i in range(30):
        subs.append(agent_write(key, f"v{i}", explicit if i == 10 else None))
        subs.append(agent_write(f"agent:other{i}-{uuid.uuid4().hex[:6]}@order", "other"))
    accept_together(services, subs)
    later = [agent_write(key, f"v{i}") for i in range(30, 33)]
    for sub in later:  # one at a time: each its own statement
        accept_together(services, [sub])

    mine = jobs(services, subs[0::2] + later)
    assert [row[1] for row in mine] == list(range(1, 34))
    assert mine[10][2] == explicit
    live = [row[2] for i, row in enumerate(mine) if i != 10]
    assert live == sorted(live) and len(set(live)) == len(live)  # strictly increasing
    with psycopg.connect(services[0]) as conn:
        head = conn.execute("SELECT last_seq FROM key_heads WHERE key = %s", (key,)).fetchone()
    assert head == (33,)


def test_a_write_the_database_refuses_fails_alone(services):
    key = f"agent:k-{uuid.uuid4().hex[:8]}@alone"
    (first,) = accept_together(services, [agent_write(key, "first")])
    again = first[0].job["id"]  # the same job id twice: the database refuses the second
    duplicate = Submission(
        key=key, kind="agent.upsert", payload={"display_name": "dup"}, job_id=uuid.UUID(again)
    )
    subs = [agent_write(key, "before"), duplicate, agent_write(key, "after")]
    subs += [agent_write(f"agent:n{i}-{uuid.uuid4().hex[:6]}@alone", "n") for i in range(8)]

    answers = accept_together(services, subs)

    assert isinstance(answers[1], psycopg.errors.UniqueViolation)
    assert all(isinstance(a, tuple) for i, a in enumerate(answers) if i != 1)
    rows = jobs(services, [subs[0], subs[2]])
    assert [row[1] for row in rows] == [2, 3]  # the refused write took no seq


def test_an_accept_chosen_as_a_deadlock_victim_is_written_again(services):
    database_url, _ = services
    tag = uuid.uuid4().hex[:8]
    k1, k2 = f"agent:k1-{tag}@deadlock", f"agent:k2-{tag}@deadlock"
    accept_together(services, [agent_write(k1, "0"), agent_write(k2, "0")])
    subs = [agent_write(k1, "1"), agent_write(k2, "1")]
    lock = "SELECT 1 FROM key_heads WHERE key = %s FOR UPDATE"

    async def work(accepts: Accepts) -> list[Any]:
        async with await psycopg.AsyncConnection.connect(database_url) as holder:
            await holder.execute(lock, [k2])
            writes = asyncio.gather(*(accepts.accept(s) for s in subs))
            await wait_for_a_lock_wait(database_url)
            # The accept holds k1 and waits for k2; taking k1 now closes the cycle. The accept
            # waited first, so its deadlock check runs first and it is the one rolled back.
            await holder.execute(lock, [k1])
            await holder.commit()
        return await writes

    answers = with_accepts(services, work)

    assert [a[0].job["seq"] for a in answers] == [2, 2]
    assert [row[1] for row in jobs(services, subs)] == [2, 2]


async def wait_for_a_lock_wait(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for _ in range(200):
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO jobs%%'"
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the accept never waited for the held row")
