"""Retrying a failed job: once, however the retry is sent."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg

from tests.conftest import new_slug, put_user
from tests.stack import wait_until


def failed_job(client: httpx.Client) -> tuple[str, str]:
    """A job that failed because its agent's user does not exist yet; its id and user slug."""
    slug = new_slug("late")
    failed = client.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": "Bot"})
    assert failed.status_code == 404
    return failed.headers["Idmirror-Job-Id"], slug


def jobs_of(db: psycopg.Connection[Any], key: str) -> int:
    row = db.execute("SELECT count(*) FROM jobs WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_failed_job_is_retried_once_and_a_second_retry_names_the_first(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    job_id, slug = failed_job(client)
    put_user(client, slug=slug)
    first = client.post(f"/v1/jobs/{job_id}/retry")
    assert first.status_code == 200 and first.json()["outcome"] == "created"
    retry_id = first.headers["Idmirror-Job-Id"]
    for headers in ({}, {"Idempotency-Key": uuid.uuid4().hex}):
        again = client.post(f"/v1/jobs/{job_id}/retry", headers=headers)
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error["code"] == "already_retried"
        assert error["details"]["retry_job_id"] == retry_id
    assert jobs_of(db, f"agent:bot@{slug}") == 2  # the failed job and its one retry


def test_retries_sent_at_once_record_one_job(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    job_id, slug = failed_job(client)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post(f"/v1/jobs/{job_id}/retry"), range(8)))
    retried = [a for a in answers if a.status_code != 409]
    refused = [a.json()["error"] for a in answers if a.status_code == 409]
    assert len(retried) == 1 and retried[0].status_code == 404  # the user is still missing
    retry_id = retried[0].headers["Idmirror-Job-Id"]
    assert {e["code"] for e in refused} == {"already_retried"}
    assert {e["details"]["retry_job_id"] for e in refused} == {retry_id}
    assert jobs_of(db, f"agent:bot@{slug}") == 2


def test_failed_jobs_matching_a_filter_are_retried_in_bulk_once_each(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    slug = new_slug("late")
    failed_ids = []
    for name in ("A", "B", "C"):
        failed = client.put(f"/v1/internal/agents/bot@{slug}", json={"display_name": name})
        assert failed.status_code == 404
        failed_ids.append(failed.headers["Idmirror-Job-Id"])
    put_user(client, slug=slug)
    key = f"agent:bot@{slug}"
    bulk = client.post("/v1/jobs/retry", params={"key": key, "code": "user_not_found"})
    assert bulk.status_code == 200, bulk.text
    retried = bulk.json()["retried"]
    assert [r["job_id"] for r in retried] == failed_ids  # oldest first
    assert bulk.json()["already_retried"] == []
    again = client.post("/v1/jobs/retry", params={"key": key})
    assert again.json() == {"retried": [], "already_retried": []}
    one = client.post(f"/v1/jobs/{failed_ids[0]}/retry")
    assert one.status_code == 409
    assert one.json()["error"]["details"]["retry_job_id"] == retried[0]["retry_job_id"]
    assert jobs_of(db, key) == 6

    def last_applied() -> str | None:
        agent = client.get(f"/v1/agents/bot@{slug}")
        return agent.json()["display_name"] if agent.status_code == 200 else None

    # The retries keep the failed jobs' order: the last one's body wins.
    assert wait_until(lambda: last_applied() == "C")
