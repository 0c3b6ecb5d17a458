"""A write to an idle key is applied in the transaction that accepts it; any other stays pending.

Invariant 2 (per-key order) decides what idle means: the key's lock is free and no job of it but
the batch's own is pending. These run the API's accept path in this process, with no worker, so
a job that is not applied on accept stays pending and shows it.
"""

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest
import redis

from identity.access import Actor
from identity.appliers import apply_on_accept
from identity.ledger.accept import Accepts
from identity.ledger.jobs import Submission
from tests.identity.ledger.test_accept import Services, services, with_accepts

__all__ = ["services"]  # the module's database and Redis, as test_accept's


def user_write(user_id: uuid.UUID, slug: str, **fields: Any) -> Submission:
    payload = {"email": f"{slug}@example.com", "slug": slug, **fields}
    return Submission(key=f"user:{user_id}", kind="user.upsert", payload=payload)


def agent_write(key: str, name: str) -> Submission:
    payload: dict[str, Any] = {"display_name": name, "webhook_url": None, "metadata": {}}
    return Submission(key=key, kind="agent.upsert", payload=payload)


def accept(services: Services, subs: list[Submission], *, apply: bool = True) -> list[Any]:
    """Accept `subs` together, applying on accept unless `apply` is false; each one's
    (Accepted, queued) or the exception it raised."""

    async def work(accepts: Accepts) -> list[Any]:
        return await asyncio.gather(*(accepts.accept(s) for s in subs), return_exceptions=True)

    return with_accepts(services, work, apply=apply_on_accept if apply else None)


def drain_messages(services: Services) -> int:
    return int(redis.Redis.from_url(services[1]).llen("celery"))


def clear_queue(services: Services) -> None:
    redis.Redis.from_url(services[1]).delete("celery", "idmirror:drain-queued")


def ledger(services: Services, subs: list[Submission]) -> list[tuple[str, str | None]]:
    """Each job's (status, outcome), in the order of `subs`."""
    with psycopg.connect(services[0]) as conn:
        rows = conn.execute(
            "SELECT id, status, outcome FROM jobs WHERE id = ANY(%s)", ([s.job_id for s in subs],)
        ).fetchall()
    found = {row[0]: (row[1], row[2]) for row in rows}
    return [found[s.job_id] for s in subs]


def test_writes_to_idle_keys_are_answered_applied_and_ask_for_no_drain(
    services: Services,
) -> None:
    clear_queue(services)
    user_id = uuid.uuid4()
    slug = f"idle-{user_id.hex[:8]}"
    subs = [user_write(user_id, slug), agent_write(f"agent:scout@{slug}", "Scout")]
    subs.append(user_write(user_id, slug, plan="pro"))  # the same key again, in the same batch

    answers = accept(services, subs)

    jobs = [answer[0].job for answer in answers]
    assert [(j["status"], j["outcome"]) for j in jobs] == [
        ("applied", "created"),
        ("applied", "created"),
        ("applied", "updated"),
    ]
    assert jobs[2]["result"]["plan"] == "pro" and jobs[2]["finished_at"] is not None
    assert ledger(services, subs) == [(j["status"], j["outcome"]) for j in jobs]
    assert [(j["key"], j["seq"]) for j in jobs] == [
        (subs[0].key, 1),
        (subs[1].key, 1),
        (subs[0].key, 2),
    ]
    assert all(j["attempts"] == 1 and j["finished_at"] >= j["accepted_at"] for j in jobs)
    assert drain_messages(services) == 0
    with psycopg.connect(services[0]) as conn:
        audited = conn.execute(
            "SELECT outcome FROM audit WHERE job_id = ANY(%s)", ([s.job_id for s in subs],)
        ).fetchall()
        counted = conn.execute(
            "SELECT sum(value) FROM metric_counters WHERE name = 'jobs_finished_total' AND labels = %s",
            ('{"kind": "agent.upsert", "outcome": "created"}',),
        ).fetchone()
    assert sorted(row[0] for row in audited) == ["created", "created", "updated"]
    assert counted is not None and counted[0] >= 1


def _rows_written(services: Services) -> dict[str, tuple[int, int]]:
    """(rows inserted, rows updated) in `jobs` and `audit`, as the server's statistics count
    them. A backend reports its counts when it ends, at the latest."""
    with psycopg.connect(services[0]) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables "
            "WHERE relname IN ('jobs', 'audit')"
        ).fetchall()
    return {name: (inserted, updated) for name, inserted, updated in rows}


def test_a_write_applied_on_accept_writes_its_job_and_audit_rows_once(
    services: Services,
) -> None:
    """Inserted pending and then marked, each job row would also enter the pending indexes and
    leave a dead row behind."""
    before = _rows_written(services)
    user_id = uuid.uuid4()
    slug = f"once-{user_id.hex[:8]}"
    subs = [user_write(user_id, slug), agent_write(f"agent:a@{slug}", "A")]
    subs.append(user_write(user_id, slug, plan="pro"))

    answers = accept(services, subs)  # its connections are closed when it returns

    assert [a[0].job["status"] for a in answers] == ["applied"] * 3
    written = {}
    for _ in range(100):  # until the accept's backend has reported
        written = {
            table: (ins - before[table][0], upd - before[table][1])
            for table, (ins, upd) in _rows_written(services).items()
        }
        if written["jobs"][0] >= len(subs):
            break
        time.sleep(0.1)
    assert written == {"jobs": (3, 0), "audit": (3, 0)}


def test_a_write_behind_a_pending_job_of_its_key_stays_pending_and_asks_for_a_drain(
    services: Services,
) -> None:
    user_id = uuid.uuid4()
    slug = f"busy-{user_id.hex[:8]}"
    first = user_write(user_id, slug)
    accept(services, [first], apply=False)  # pending: no worker reads this database
    clear_queue(services)
    second, other = user_write(user_id, slug, plan="pro"), user_write(uuid.uuid4(), slug + "x")

    answers = accept(services, [second, other])

    assert [a[0].job["status"] for a in answers] == ["pending", "applied"]
    assert answers[0][1] is True  # its drain is queued
    assert ledger(services, [first, second]) == [("pending", None), ("pending", None)]
    assert drain_messages(services) == 1


def test_a_write_to_a_key_whose_lock_is_held_stays_pending(services: Services) -> None:
    user_id = uuid.uuid4()
    sub = user_write(user_id, f"locked-{user_id.hex[:8]}")

    with psycopg.connect(services[0], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (sub.key,))
        answers = accept(services, [sub])

    assert answers[0][0].job["status"] == "pending"
    assert ledger(services, [sub]) == [("pending", None)]


def test_a_kind_left_to_the_workers_holds_back_the_writes_after_it(services: Services) -> None:
    user_id = uuid.uuid4()
    slug = f"graph-{user_id.hex[:8]}"
    accept(services, [user_write(user_id, slug), agent_write(f"agent:g@{slug}", "G")])
    update = Submission(
        key=f"agent:g@{slug}", kind="agent.update", payload={"operations": [], "version": None}
    )
    after = agent_write(f"agent:g@{slug}", "G2")

    answers = accept(services, [update, after])

    assert [a[0].job["status"] for a in answers] == ["pending", "pending"]
    assert [a[0].job["seq"] for a in answers] == [2, 3]
    assert {(a[0].job["attempts"], a[0].job["finished_at"]) for a in answers} == {(0, None)}
    with psycopg.connect(services[0]) as conn:
        audited = conn.execute(
            "SELECT action, outcome FROM audit WHERE job_id = ANY(%s) ORDER BY id",
            ([update.job_id, after.job_id],),
        ).fetchall()
    assert audited == [("agent.update", None), ("agent.upsert", None)]


def test_a_write_refused_when_applied_fails_alone(services: Services) -> None:
    user_id = uuid.uuid4()
    slug = f"owned-{user_id.hex[:8]}"
    accept(services, [user_write(user_id, slug)])
    foreign = Actor("someone-else", None, False)
    refused = Submission(
        key=f"user:{user_id}",
        kind="user.upsert",
        payload={"email": "x@example.com", "slug": slug},
        actor=foreign,
    )
    fine = user_write(uuid.uuid4(), slug + "-fine")

    answers = accept(services, [refused, fine])

    assert answers[0][0].job["status"] == "failed"
    assert answers[0][0].job["error"]["code"] == "owned_by_another_integrator"
    assert answers[1][0].job["status"] == "applied"
    assert answers[0][0].job["attempts"] == 1 and answers[0][0].job["finished_at"] is not None
    with psycopg.connect(services[0]) as conn:
        audited = conn.execute(
            "SELECT job_id, outcome FROM audit WHERE job_id = ANY(%s)",
            ([refused.job_id, fine.job_id],),
        ).fetchall()
        counted = conn.execute(
            "SELECT sum(value) FROM metric_counters WHERE name = 'jobs_failed_total' "
            "AND labels = %s",
            ('{"code": "owned_by_another_integrator", "kind": "user.upsert"}',),
        ).fetchone()
    assert dict(audited) == {
        refused.job_id: "failed:owned_by_another_integrator",
        fine.job_id: "created",
    }
    assert counted is not None and counted[0] == 1


def test_a_write_with_an_idempotency_key_is_applied_on_accept_too(services: Services) -> None:
    user_id = uuid.uuid4()
    sub = user_write(user_id, f"idem-{user_id.hex[:8]}")
    sub = Submission(sub.key, sub.kind, sub.payload, idempotency_key=f"k-{user_id}")

    first = accept(services, [sub])[0][0]
    again = accept(
        services, [Submission(sub.key, sub.kind, sub.payload, idempotency_key=sub.idempotency_key)]
    )[0][0]

    assert (first.job["status"], first.job["outcome"]) == ("applied", "created")
    assert again.reused and again.job["id"] == first.job["id"]


def test_a_batch_that_cannot_be_applied_is_recorded_pending_for_the_workers(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = uuid.uuid4()
    slug = f"rowlock-{user_id.hex[:8]}"
    accept(services, [user_write(user_id, slug)])
    subs = [user_write(user_id, slug, plan="pro"), user_write(uuid.uuid4(), slug + "-b")]

    async def work(accepts: Accepts) -> list[Any]:
        return await asyncio.gather(*(accepts.accept(s) for s in subs))

    # A row lock taken without the key's lock (as no part of idmirror does): applying waits
    # for it past the lock timeout, and the whole batch is recorded pending instead.
    with psycopg.connect(services[0]) as holder:
        holder.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        answers = with_accepts(services, work, apply=apply_on_accept, lock_timeout="200ms")

    assert [a[0].job["status"] for a in answers] == ["pending", "pending"]
    assert ledger(services, subs) == [("pending", None), ("pending", None)]
    assert "left to the workers" in caplog.text


def test_a_keyed_write_that_cannot_be_applied_is_recorded_pending(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = uuid.uuid4()
    slug = f"rowlock-k-{user_id.hex[:8]}"
    accept(services, [user_write(user_id, slug)])
    plain = user_write(user_id, slug, plan="pro")
    keyed = Submission(plain.key, plain.kind, plain.payload, idempotency_key=f"k-{user_id}")

    async def work(accepts: Accepts) -> Any:
        return await accepts.accept(keyed)

    with psycopg.connect(services[0]) as holder:
        holder.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        accepted, queued = with_accepts(services, work, apply=apply_on_accept, lock_timeout="200ms")

    assert accepted.job["status"] == "pending" and queued is True
    assert ledger(services, [keyed]) == [("pending", None)]
    assert "left to the workers" in caplog.text


def test_a_batch_that_fails_when_applied_together_is_left_to_the_workers(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    # Two SCIM creates whose userNames give one slug: the statement that writes both breaks.
    # Applied on accept without a savepoint, the accept fails with it and records both
    # pending; a drain applies them one by one (test_user_writes), both created.
    run = uuid.uuid4().hex[:8]
    names = [f"Ada.Lovelace.{run}@Example.com", f"ada-lovelace-{run}@example.com"]
    subs = [
        Submission(
            key=f"user:{uuid.uuid4()}",
            kind="user.scim_create",
            payload={"fields": {"user_name": name, "active": True}},
        )
        for name in names
    ]

    answers = accept(services, subs)

    assert [a[0].job["status"] for a in answers] == ["pending", "pending"]
    assert ledger(services, subs) == [("pending", None), ("pending", None)]
    assert "2 writes left to the workers" in caplog.text
    assert "one by one instead" not in caplog.text
