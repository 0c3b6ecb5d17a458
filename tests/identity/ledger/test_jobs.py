"""The ledger as clients see it: async answers, idempotency keys, job reads, retries, metrics."""

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.conftest import new_slug, put_user
from tests.stack import Stack, scalar, wait_until


def test_respond_async_answers_202_with_a_location_that_later_shows_the_applied_job(
    client: httpx.Client,
) -> None:
    user_id = str(uuid.uuid4())
    response = client.put(
        f"/v1/internal/users/{user_id}",
        json={"email": "async@example.com", "slug": new_slug("u")},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    location = response.headers["Location"]
    assert location == f"/v1/jobs/{response.headers['Idmirror-Job-Id']}"
    assert response.json()["status"] in ("pending", "applied")
    job = wait_until(lambda: (j := client.get(location).json())["status"] == "applied" and j)
    assert job["outcome"] == "created" and job["key"] == f"user:{user_id}"
    assert job["result"]["id"] == user_id and job["finished_at"] is not None


def test_sync_write_carries_its_job_id(client: httpx.Client) -> None:
    user = put_user(client)
    response = client.put(
        f"/v1/internal/users/{user['id']}", json={"email": user["email"], "slug": user["slug"]}
    )
    job = client.get(f"/v1/jobs/{response.headers['Idmirror-Job-Id']}").json()
    assert job["status"] == "applied" and job["outcome"] == "unchanged"
    assert job["result"] == response.json()


def test_failed_write_answers_with_the_jobs_error_and_keeps_it(client: httpx.Client) -> None:
    response = client.put(f"/v1/internal/agents/x@{new_slug('nobody')}", json={"display_name": "X"})
    assert response.status_code == 404
    job = client.get(f"/v1/jobs/{response.headers['Idmirror-Job-Id']}").json()
    assert job["status"] == "failed" and job["error"] == response.json()["error"]


def test_same_idempotency_key_and_body_returns_the_first_job(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user_id, key = str(uuid.uuid4()), uuid.uuid4().hex
    body = {"email": "idem@example.com", "slug": new_slug("u")}
    first = client.put(f"/v1/internal/users/{user_id}", json=body, headers={"Idempotency-Key": key})
    second = client.put(
        f"/v1/internal/users/{user_id}", json=body, headers={"Idempotency-Key": key}
    )
    assert first.headers["Idmirror-Job-Id"] == second.headers["Idmirror-Job-Id"]
    assert second.json() == first.json() and second.json()["outcome"] == "created"
    assert scalar(db, "SELECT count(*) FROM jobs WHERE key = %s", (f"user:{user_id}",)) == 1


def test_same_idempotency_key_with_another_body_is_422(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user_id, key = str(uuid.uuid4()), uuid.uuid4().hex
    slug = new_slug("u")
    client.put(
        f"/v1/internal/users/{user_id}",
        json={"email": "a@example.com", "slug": slug},
        headers={"Idempotency-Key": key},
    )
    reused = client.put(
        f"/v1/internal/users/{user_id}",
        json={"email": "b@example.com", "slug": slug},
        headers={"Idempotency-Key": key},
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert client.get(f"/v1/internal/users/{user_id}").json()["email"] == "a@example.com"


def test_overlong_idempotency_key_is_refused(client: httpx.Client) -> None:
    response = client.put(
        f"/v1/internal/users/{uuid.uuid4()}",
        json={"email": "a@example.com", "slug": new_slug("u")},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def test_jobs_list_filters_by_key_status_and_kind(client: httpx.Client) -> None:
    user = put_user(client)
    client.put(f"/v1/internal/agents/j1@{user['slug']}", json={"display_name": "J"})
    client.put(f"/v1/internal/agents/j1@{user['slug']}", json={"display_name": "J2"})
    key = f"agent:j1@{user['slug']}"
    jobs = client.get("/v1/jobs", params={"key": key}).json()["items"]
    assert [j["seq"] for j in jobs] == [2, 1]
    assert all(j["kind"] == "agent.upsert" and j["status"] == "applied" for j in jobs)
    assert client.get("/v1/jobs", params={"key": key, "status": "failed"}).json()["items"] == []
    assert client.get("/v1/jobs", params={"key": key, "kind": "user.upsert"}).json()["items"] == []


def test_failed_job_can_be_retried_once_its_cause_is_fixed(client: httpx.Client) -> None:
    slug = new_slug("late")
    failed = client.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "Bot"})
    assert failed.status_code == 404
    job_id = failed.headers["Idmirror-Job-Id"]
    put_user(client, slug=slug)
    retried = client.post(f"/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["outcome"] == "created"
    assert retried.headers["Idmirror-Job-Id"] != job_id
    again = client.post(f"/v1/jobs/{retried.headers['Idmirror-Job-Id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_failed"


def test_unknown_job_is_404(client: httpx.Client) -> None:
    assert client.get(f"/v1/jobs/{uuid.uuid4()}").json()["error"]["code"] == "job_not_found"
    assert client.get("/v1/jobs/not-a-uuid").status_code == 404


def test_metrics_count_finished_jobs_by_kind_and_outcome(
    client: httpx.Client, stack: Stack
) -> None:
    def finished(text: str, outcome: str) -> float:
        label = f'idmirror_jobs_finished_total{{kind="user.upsert",outcome="{outcome}"}}'
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(label))

    before = client.get("/metrics").text
    user = put_user(client)
    client.put(
        f"/v1/internal/users/{user['id']}", json={"email": user["email"], "slug": user["slug"]}
    )
    after = client.get("/metrics").text
    assert finished(after, "created") == finished(before, "created") + 1
    assert finished(after, "unchanged") == finished(before, "unchanged") + 1
    assert "idmirror_jobs_pending" in after and "idmirror_job_latency_seconds_bucket" in after
    assert "idmirror_jobs_forgotten_total" in after


def test_metrics_count_accepted_jobs_and_carry_no_created_series(client: httpx.Client) -> None:
    def accepted(text: str) -> float:
        label = 'idmirror_jobs_accepted_total{kind="user.upsert"}'
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(label))

    before = client.get("/metrics").text
    put_user(client)
    after = client.get("/metrics").text
    assert accepted(after) == accepted(before) + 1
    names = {line.split("{")[0].split()[0] for line in after.splitlines() if line[:1] != "#"}
    assert [name for name in names if name.endswith("_created")] == []


def test_health_and_readiness_need_no_token(stack: Stack) -> None:
    import httpx

    assert httpx.get(stack.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(stack.base_url + "/readyz").json()
    assert ready == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_at_most_one_drain_message_waits_in_the_queue(tmp_home: Path) -> None:
    from cli.embedded import EmbeddedRedis
    from worker.producer import Producer

    broker = EmbeddedRedis(tmp_home / "redis")  # no worker reads this one
    broker.start()
    try:
        dispatcher = Producer(broker.url, flag_seconds=30)
        assert dispatcher.send_drain(f"user:{uuid.uuid4()}") == "sent"
        assert dispatcher.send_drain(f"user:{uuid.uuid4()}") == "already_queued"
        dispatcher.clear_flag()  # what a drain does first
        assert dispatcher.send_drain(f"user:{uuid.uuid4()}") == "sent"
        assert redis.Redis.from_url(broker.url).llen("celery") == 2
    finally:
        broker.stop()


def test_the_apis_dispatcher_sends_one_message_while_the_flag_is_up(tmp_home: Path) -> None:
    from cli.embedded import EmbeddedRedis
    from worker.producer import AsyncDispatcher, Producer

    broker = EmbeddedRedis(tmp_home / "redis")  # no worker reads this one
    broker.start()

    async def request_drains(dispatcher: AsyncDispatcher) -> list[bool]:
        try:
            return [await dispatcher.request_drain(f"user:{uuid.uuid4()}") for _ in range(3)]
        finally:
            await dispatcher.close()

    try:
        sender = Producer(broker.url, flag_seconds=30)
        dispatcher = AsyncDispatcher(broker.url, 30, sender)
        assert asyncio.run(request_drains(dispatcher)) == [True, True, True]
        assert redis.Redis.from_url(broker.url).llen("celery") == 1
        sender.clear_flag()
        assert asyncio.run(request_drains(AsyncDispatcher(broker.url, 30, sender))) == [True] * 3
        assert redis.Redis.from_url(broker.url).llen("celery") == 2
    finally:
        broker.stop()
    # With the broker gone the write is still accepted; the answer says nothing was queued.
    assert asyncio.run(request_drains(AsyncDispatcher(broker.url, 30, sender))) == [False] * 3


def test_finished_jobs_past_the_retention_are_forgotten_oldest_first(postgres_server: str) -> None:
    """Pending jobs stay whatever their age; an old job's Idempotency-Key goes with it."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from identity.db import sqlalchemy_url
    from identity.ledger.retention import forget_finished_jobs
    from tests.stack import database_url_for

    url = database_url_for(postgres_server, f"idmirror_retention_{uuid.uuid4().hex[:10]}")
    ages = {"applied": [300, 200, 100, 1], "failed": [250], "pending": [400]}  # hours
    with psycopg.connect(url, autocommit=True) as conn:
        ids: dict[str, list[uuid.UUID]] = {}
        for status, hours in ages.items():
            for n, age in enumerate(hours):
                job_id = uuid.uuid4()
                ids.setdefault(status, []).append(job_id)
                insert_job(conn, job_id, f"user:{status}", n + 1, status, age)
        conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, job_id) VALUES ('old', '', %s)",
            (ids["applied"][0],),
        )

        engine = create_engine(sqlalchemy_url(url))
        try:
            with Session(engine) as session, session.begin():
                first = forget_finished_jobs(session, retention_hours=168, limit=2)
            after_first = {row[0] for row in conn.execute("SELECT id FROM jobs")}
            with Session(engine) as session, session.begin():
                second = forget_finished_jobs(session, retention_hours=168, limit=2)
        finally:
            engine.dispose()

        left = {row[0] for row in conn.execute("SELECT id FROM jobs")}
        keys = scalar(conn, "SELECT count(*) FROM idempotency_keys")
    assert (first, second) == (2, 1)
    assert ids["applied"][0] not in after_first and ids["failed"][0] not in after_first
    assert ids["applied"][1] in after_first  # 200 h: younger than the two first forgotten
    assert left == {ids["applied"][2], ids["applied"][3], ids["pending"][0]}
    assert keys == 0


def insert_job(
    conn: psycopg.Connection[Any],
    job_id: uuid.UUID,
    key: str,
    seq: int,
    status: str,
    age_hours: float,
) -> None:
    """A job accepted `age_hours` ago, finished a minute later unless pending."""
    conn.execute(
        "INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, status, "
        "accepted_at, finished_at) VALUES (%s, %s, %s, 'user.upsert', '{}', '', 1, %s, "
        "now() - make_interval(secs => %s * 3600), CASE WHEN %s <> 'pending' "
        "THEN now() - make_interval(secs => %s * 3600) + interval '1 minute' END)",
        (job_id, key, seq, status, age_hours, status, age_hours),
    )


def test_the_sweeper_forgets_old_jobs_a_batch_per_transaction_and_counts_them(
    domain: None, db: psycopg.Connection[Any]
) -> None:
    """On the shared database: ages of a few hours, which the shared sweeper's retention of
    days leaves alone, and a retention of one hour here."""
    from tasks.sweep import forget_old_jobs

    def forgotten() -> float:
        row = db.execute(
            "SELECT sum(value) FROM metric_counters WHERE name = 'jobs_forgotten_total'"
        ).fetchone()
        return float(row[0] or 0.0) if row else 0.0

    key = f"user:{uuid.uuid4()}"
    for n, age in enumerate([5, 4.5, 4, 3.5, 3, 2.5, 2]):
        insert_job(db, uuid.uuid4(), key, n + 1, "applied", age)
    recent, pending = uuid.uuid4(), uuid.uuid4()
    insert_job(db, recent, key, 8, "applied", 0.1)
    insert_job(db, pending, f"user:{uuid.uuid4()}", 1, "pending", 6)  # no drain will come
    before = forgotten()

    assert forget_old_jobs(1, batch=3, batches=2) == 6  # two full batches, then it stops
    assert forget_old_jobs(1, batch=3, batches=2) == 1  # a short batch ends the sweep
    assert forgotten() == before + 7
    left = db.execute("SELECT id FROM jobs WHERE key = %s", (key,)).fetchall()
    assert left == [(recent,)]
    db.execute("DELETE FROM jobs WHERE id = %s", (pending,))  # left for no sweeper to find


def test_the_default_retention_grows_with_a_longer_idempotency_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from identity.settings import Settings

    monkeypatch.setenv("IDMIRROR_IDEMPOTENCY_TTL_HOURS", "500")
    monkeypatch.delenv("IDMIRROR_JOB_RETENTION_HOURS", raising=False)
    assert Settings().job_retention_hours == 500


def test_a_job_retention_shorter_than_the_idempotency_ttl_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from identity.settings import Settings

    monkeypatch.setenv("IDMIRROR_JOB_RETENTION_HOURS", "12")
    monkeypatch.setenv("IDMIRROR_IDEMPOTENCY_TTL_HOURS", "24")
    with pytest.raises(ValidationError, match="IDMIRROR_JOB_RETENTION_HOURS"):
        Settings()


def test_the_write_paths_job_form_is_the_models(client: httpx.Client, domain: None) -> None:
    from identity.db import transaction
    from identity.ledger.jobs import JOB_BY_ID, JobOut, job_out

    accepted = client.put(
        f"/v1/internal/users/{uuid.uuid4()}",
        json={"email": "form@example.com", "slug": new_slug("form")},
        headers={"Prefer": "respond-async"},
    )
    job_id = accepted.headers["Idmirror-Job-Id"]
    for _ in ("as accepted", "once applied"):
        with transaction() as session:
            row = session.execute(JOB_BY_ID, {"id": job_id}).one()
        assert job_out(row) == JobOut.model_validate(row).model_dump(mode="json")
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "applied")
