"""Writes that arrive together are accepted by one statement, in arrival order, each failing alone.

These run the API's accept path in this process, on a database and a Redis of their own that
no worker reads, so every job stays as the accept left it.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cli.embedded import EmbeddedRedis, free_port
from identity.db import accept_engine
from identity.ledger.accept import Accepts
from identity.ledger.jobs import Accepted, Submission
from identity.ledger.record import ApplyAccepted
from tests.stack import database_url_for
from worker.producer import AsyncDispatcher, Producer

T = TypeVar("T")
Services = tuple[str, str]  # the module's database URL and Redis URL


@pytest.fixture(scope="module")
def services(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    broker = EmbeddedRedis(tmp_path_factory.mktemp("accepts") / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_accepts_{uuid.uuid4().hex[:10]}")
    try:
        yield url, broker.url
    finally:
        broker.stop()


def with_accepts(
    services: Services,
    work: Callable[[Accepts], Coroutine[Any, Any, T]],
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    pool_timeout: float = 10.0,
    lock_timeout: str = "0",
    pool_size: int = 4,
    writers: int = 2,
    apply: ApplyAccepted | None = None,
) -> T:
    """Run `work(accepts)` on an event loop, as the API process does; by default on the
    module's database and Redis."""
    database_url = database_url or services[0]
    redis_url = redis_url or services[1]

    async def run() -> T:
        engine = accept_engine(
            database_url,
            pool_size=pool_size,
            timeout=pool_timeout,
            connect_args={"options": f"-c lock_timeout={lock_timeout}"},
        )
        dispatcher = AsyncDispatcher(redis_url, 30, Producer(redis_url, 30))
        accepts = Accepts(engine, dispatcher, idempotency_ttl_hours=1, writers=writers, apply=apply)
        try:
            return await work(accepts)
        finally:
            await accepts.close()
            await dispatcher.close()
            await engine.dispose()

    return asyncio.run(run())


def agent_write(key: str, name: str, version: int | None = None) -> Submission:
    return Submission(
        key=key,
        kind="agent.upsert",
        payload={"display_name": name, "webhook_url": None, "metadata": {}},
        explicit_version=version,
    )


def accept_together(services: Services, subs: list[Submission]) -> list[Any]:
    """Accept `subs` concurrently; each one's (Accepted, queued) or the exception it raised."""

    async def work(accepts: Accepts) -> list[Any]:
        return await asyncio.gather(*(accepts.accept(s) for s in subs), return_exceptions=True)

    return with_accepts(services, work)


def jobs(services: Services, subs: list[Submission]) -> list[Any]:
    with psycopg.connect(services[0]) as conn:
        rows = conn.execute(
            "SELECT id, seq, version, xmin::text::bigint FROM jobs WHERE id = ANY(%s)",
            ([s.job_id for s in subs],),
        ).fetchall()
    by_id = {row[0]: row for row in rows}
    return [by_id.get(s.job_id) for s in subs]


def test_writes_arriving_together_share_one_statement_and_one_drain_message(
    services: Services,
) -> None:
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


def test_a_keys_writes_accepted_together_keep_their_arrival_order(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"agent:hot-{uuid.uuid4().hex[:8]}@order"
    accept_together(services, [agent_write(key, "v0")])  # the key has a head row from here on
    explicit = 1_000_000  # an old source_updated_at: kept as given, not renumbered
    subs = []
    for i in range(1, 31):
        subs.append(agent_write(key, f"v{i}", explicit if i == 10 else None))
        subs.append(agent_write(f"agent:other{i}-{uuid.uuid4().hex[:6]}@order", "other"))
    accept_together(services, subs)
    later = [agent_write(key, f"v{i}") for i in range(31, 34)]
    for sub in later:  # one at a time: each its own statement
        accept_together(services, [sub])

    assert "one by one instead" not in caplog.text  # the batch statement numbered them itself
    mine = jobs(services, subs[0::2] + later)
    assert [row[1] for row in mine] == list(range(2, 35))
    assert mine[9][2] == explicit
    live = [row[2] for i, row in enumerate(mine) if i != 9]
    assert live == sorted(live) and len(set(live)) == len(live)  # strictly increasing
    with psycopg.connect(services[0]) as conn:
        head = conn.execute("SELECT last_seq FROM key_heads WHERE key = %s", (key,)).fetchone()
    assert head == (34,)


def test_a_write_sent_again_after_it_committed_is_recorded_once(services: Services) -> None:
    """What the second try after a broken connection does when the first had committed."""
    from identity.ledger.record import accept_many

    key = f"agent:k-{uuid.uuid4().hex[:8]}@again"
    sub, other = agent_write(key, "once"), agent_write(key, "next")

    async def run() -> tuple[list[Accepted], list[Accepted]]:
        engine = accept_engine(services[0])
        try:
            async with engine.connect() as conn:
                first = await accept_many(conn, [sub])
                return first, await accept_many(conn, [sub, other], again=True)
        finally:
            await engine.dispose()

    first, again = asyncio.run(run())

    assert again[0].job == first[0].job
    assert [row[1] for row in jobs(services, [sub, other])] == [1, 2]
    with psycopg.connect(services[0]) as conn:
        head = conn.execute("SELECT last_seq FROM key_heads WHERE key = %s", (key,)).fetchone()
    assert head == (2,)


def test_a_write_the_database_refuses_fails_alone(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"agent:k-{uuid.uuid4().hex[:8]}@alone"
    # A NUL character, which jsonb cannot store (the API refuses it before it gets here).
    refused = Submission(key=key, kind="agent.upsert", payload={"display_name": "a\x00b"})
    subs = [agent_write(key, "before"), refused, agent_write(key, "after")]
    subs += [agent_write(f"agent:n{i}-{uuid.uuid4().hex[:6]}@alone", "n") for i in range(8)]

    answers = accept_together(services, subs)

    assert isinstance(answers[1], DataError)  # SQLAlchemy's wrapper of the driver's error
    assert isinstance(answers[1].orig, psycopg.errors.UntranslatableCharacter)
    assert all(isinstance(a, tuple) for i, a in enumerate(answers) if i != 1)
    assert [row[1] for row in jobs(services, [subs[0], subs[2]])] == [1, 2]  # no seq taken
    assert jobs(services, [refused]) == [None]
    assert "one by one instead" in caplog.text


def test_a_batch_rolled_back_as_a_deadlock_victim_is_written_one_by_one(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    database_url, _ = services
    tag = uuid.uuid4().hex[:8]
    k1, k2 = f"agent:k1-{tag}@deadlock", f"agent:k2-{tag}@deadlock"
    accept_together(services, [agent_write(k1, "0"), agent_write(k2, "0")])
    subs = [agent_write(k1, "1"), agent_write(k2, "1")]
    lock = "SELECT 1 FROM key_heads WHERE key = %s FOR UPDATE"

    async def work(accepts: Accepts) -> list[Any]:
        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        async with conn as holder:
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                # The holder checks for a deadlock long after the accept does, so the accept
                # is always the one rolled back.
                await holder.execute("SET deadlock_timeout = '10s'")
            async with holder.transaction():
                await holder.execute(lock, [k2])
                writes = asyncio.gather(*(accepts.accept(s) for s in subs))
                await wait_for_a_lock_wait(database_url)
                await holder.execute(lock, [k1])  # the accept holds k1 and waits for k2
        return await writes

    answers = with_accepts(services, work)

    assert [a[0].job["seq"] for a in answers] == [2, 2]
    assert [row[1] for row in jobs(services, subs)] == [2, 2]
    assert "one by one instead" in caplog.text


def test_a_drain_deleting_a_key_holds_no_accept_of_it_back(services: Services) -> None:
    """The tombstone a delete writes is locked until its drain commits; accepts of that key
    (and the other writes of their batch) do not wait for it."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from identity.db import sqlalchemy_url
    from identity.ledger.tombstones import set_tombstone

    key = f"agent:k-{uuid.uuid4().hex[:8]}@tomb"
    accept_together(services, [agent_write(key, "v0")])
    subs = [agent_write(key, "v1"), agent_write(f"agent:n-{uuid.uuid4().hex[:8]}@tomb", "n")]

    async def work(accepts: Accepts) -> list[Any]:
        return await asyncio.gather(*(accepts.accept(sub) for sub in subs))

    engine = create_engine(sqlalchemy_url(services[0]))
    try:
        with Session(engine) as session, session.begin():  # a drain applying the delete
            set_tombstone(session, key, 1)
            # Were the accept to wait for the drain's row, it would give up after 5 s.
            answers = with_accepts(services, work, lock_timeout="5s")
    finally:
        engine.dispose()

    assert [a[0].job["seq"] for a in answers] == [2, 1]


def test_each_write_waits_for_an_unreachable_database_from_its_own_arrival(
    services: Services,
) -> None:
    """Writes queued behind batches that are still waiting fail when their own wait is over,
    not one batch after another."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/idmirror"
    subs = [agent_write(f"agent:w{i}@down", "w") for i in range(250)]  # three batches

    async def work(accepts: Accepts) -> list[tuple[float, Any]]:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed(sub: Submission) -> tuple[float, Any]:
            try:
                return loop.time() - started, await accepts.accept(sub)
            except Exception as exc:
                return loop.time() - started, exc

        return await asyncio.gather(*(timed(sub) for sub in subs))

    answers = with_accepts(services, work, database_url=nowhere, pool_timeout=1.0)

    assert all(isinstance(answer, PoolTimeout) for _, answer in answers)
    assert max(seconds for seconds, _ in answers) < 1.7  # one batch after another: 2 s and more


def test_a_write_whose_wait_is_not_over_outlives_the_batch_that_timed_out(
    services: Services,
) -> None:
    """With the only connection held: A times out alone; B and C form the next batch, which
    times out at B's deadline; C, whose wait is not over, goes back to the queue and is
    written once the connection is free."""
    subs = {name: agent_write(f"agent:{name}-{uuid.uuid4().hex[:8]}@wait", name) for name in "ABC"}

    async def work(accepts: Accepts) -> dict[str, Any]:
        engine = accepts._engine

        async def later(name: str, seconds: float) -> Any:
            await asyncio.sleep(seconds)
            try:
                return await accepts.accept(subs[name])
            except PoolTimeout as exc:
                return exc

        async with engine.connect():  # the pool's only connection, for 3.2 s
            writes = [
                asyncio.create_task(later(n, s)) for n, s in (("A", 0), ("B", 1.0), ("C", 1.5))
            ]
            await asyncio.sleep(3.2)
        return dict(zip("ABC", await asyncio.gather(*writes), strict=True))

    answers = with_accepts(services, work, pool_timeout=2.0, pool_size=1, writers=1)

    assert isinstance(answers["A"], PoolTimeout) and isinstance(answers["B"], PoolTimeout)
    assert answers["C"][0].job["status"] == "pending"
    assert jobs(services, [subs["A"], subs["B"]]) == [None, None]


def test_a_redis_that_does_not_answer_holds_no_commit_back(services: Services) -> None:
    """The drain requests of a batch go beside the writers: every write is committed while the
    first drain request still waits for Redis."""
    tag = uuid.uuid4().hex[:8]
    subs = [agent_write(f"agent:r{i}-{tag}@silent", "r") for i in range(300)]  # three batches
    silent_port = free_port()

    async def work(accepts: Accepts) -> tuple[int, int, list[Any]]:
        async def never_answer(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
            await reader.read()  # until the client gives up

        server = await asyncio.start_server(never_answer, "127.0.0.1", silent_port)
        async with server:
            writes = [asyncio.create_task(accepts.accept(sub)) for sub in subs]
            async with await psycopg.AsyncConnection.connect(services[0]) as conn:
                committed = answered = 0
                while committed < len(subs) and not answered:
                    await asyncio.sleep(0.05)
                    cursor = await conn.execute(
                        "SELECT count(*) FROM jobs WHERE key LIKE %s", [f"%-{tag}@silent"]
                    )
                    committed = (await cursor.fetchone() or (0,))[0]
                    await conn.rollback()
                    answered = sum(write.done() for write in writes)
            return committed, answered, await asyncio.gather(*writes)

    committed, answered, answers = with_accepts(
        services, work, redis_url=f"redis://127.0.0.1:{silent_port}/0"
    )

    assert (committed, answered) == (len(subs), 0)
    assert {queued for _, queued in answers} == {False}  # the sweeper will queue their drains


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
