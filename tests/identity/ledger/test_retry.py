"""Retrying a failed job: once, however the retry is sent."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg

from tests.conftest import new_slug, put_user


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
