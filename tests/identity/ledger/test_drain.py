"""Draining applies upserts of distinct keys together; the outcome is the one-by-one one."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from identity.answers import Applied
from identity.appliers import BATCH_APPLIERS, apply_agent_upserts, apply_job
from identity.db import accept_engine, transaction
from identity.errors import IdmirrorError
from identity.ledger.apply import Finished, PendingJob, record_decisions
from identity.ledger.drain import drain
from identity.ledger.jobs import NOTIFY_CHANNEL, Submission, get_job
from identity.ledger.record import accept
from identity.settings import get_settings
from tests.conftest import new_slug, put_user

NOW = int(time.time() * 1_000_000)
NOW_AT = datetime.now(UTC)
LATER = NOW + 3_600_000_000  # an hour ahead: newer than anything the tests store
BODY = {"display_name": "Scout", "webhook_url": None, "metadata": {"team": "a"}}


def job_for(key: str, version: int, **body: Any) -> PendingJob:
    payload = {**BODY, **body}
    return PendingJob(
        uuid.uuid4(), f"agent:{key}", 1, "agent.upsert", payload, version, datetime.now(UTC)
    )


def normalised(outcome: Applied | IdmirrorError) -> dict[str, Any]:
    """An outcome without what differs between two keys in the same state."""
    if isinstance(outcome, IdmirrorError):
        return {"error": outcome.envelope()}
    result = {
        k: v
        for k, v in outcome.result.items()
        if k not in ("id", "slug", "created_at", "updated_at", "deleted_at", "version")
    }
    return {"outcome": outcome.outcome, "result": result}


SCENARIOS = {
    # name: (the job's version, its body's changes, the outcome expected)
    "new": (LATER, {}, "created"),
    "same": (LATER, {}, "unchanged"),
    "changed": (LATER, {"display_name": "Scout 2"}, "updated"),
    "older": (1, {"display_name": "Scout 2"}, "superseded"),
    "newer-than-delete": (LATER, {}, "created"),
    "older-than-delete": (1, {}, "superseded"),
    "tombstone-only": (1, {}, "superseded"),
    "no-user": (LATER, {}, "user_not_found"),
}


def prepare(client: httpx.Client, key: str, scenario: str) -> None:
    """Put `key` in the state `scenario` starts from."""
    path = f"/v1/internal/agents/{key}"
    if scenario in ("same", "changed", "older", "newer-than-delete", "older-than-delete"):
        assert client.put(path, json=BODY).status_code == 200
    if scenario in ("newer-than-delete", "older-than-delete", "tombstone-only"):
        assert client.delete(path).status_code == 200


def test_agent_upserts_applied_together_match_one_by_one(
    client: httpx.Client, domain: None
) -> None:
    user_slug, missing = put_user(client)["slug"], new_slug("gone")
    twins: dict[str, list[PendingJob]] = {"together": [], "alone": []}
    for scenario, (version, changes, _) in SCENARIOS.items():
        for twin in twins:
            key = f"{scenario}-{twin}@{missing if scenario == 'no-user' else user_slug}"
            prepare(client, key, scenario)
            twins[twin].append(job_for(key, version, **changes))

    with transaction() as session:
        together = apply_agent_upserts(session, twins["together"])
    alone: list[Applied | IdmirrorError] = []
    for job in twins["alone"]:
        with transaction() as session:
            try:
                alone.append(apply_job(session, job))
            except IdmirrorError as exc:
                alone.append(exc)

    assert [normalised(o) for o in together] == [normalised(o) for o in alone]
    got = [o.code if isinstance(o, IdmirrorError) else o.outcome for o in together]
    assert got == [expected for _, _, expected in SCENARIOS.values()]
    by_name = {
        name: o for name, o in zip(SCENARIOS, together, strict=True) if isinstance(o, Applied)
    }
    assert by_name["new"].result["created"] is True
    assert by_name["changed"].result["display_name"] == "Scout 2"
    assert by_name["older"].result["display_name"] == "Scout"  # the stored one stays


def accept_all(subs: list[Submission]) -> list[str]:
    """Record the jobs as the API does, without sending a drain message."""

    async def run() -> list[str]:
        engine = accept_engine()
        try:
            async with engine.connect() as conn:
                accepted = [await accept(conn, sub, idempotency_ttl_hours=1) for sub in subs]
            return [a.job["id"] for a in accepted]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def drain_all(count_starts_after: float = 0.0) -> int:
    """Drain here until nothing is pending; how many jobs this process finished."""
    finished = 0
    while True:
        with transaction() as session:
            report = drain(
                session,
                None,
                apply_job,
                batch_size=500,
                batch_appliers=BATCH_APPLIERS,
                count_starts_after=count_starts_after,
            )
        if report.applied + report.failed == 0:
            return finished
        finished += report.applied + report.failed


def test_jobs_of_one_key_apply_in_order_among_others_applied_together(
    client: httpx.Client,
    domain: None,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = put_user(client)
    keys = [f"agent:k{i}@{user['slug']}" for i in range(5)]
    subs = [
        Submission(key, "agent.upsert", {**BODY, "display_name": f"v{n}"})
        for n in range(3)
        for key in keys
    ]
    ids = accept_all(subs)
    assert drain_all() == len(ids)  # here, not by the shared worker: the log below is ours

    with transaction() as session:
        jobs = [get_job(session, job_id).model_dump(mode="json") for job_id in ids]
    by_key: dict[str, list[str]] = {}
    for job in jobs:
        by_key.setdefault(job["key"], []).append(job["outcome"])
    assert all(outcomes == ["created", "updated", "updated"] for outcomes in by_key.values())
    assert "one by one instead" not in caplog.text  # each round held distinct keys
    names = db.execute(
        "SELECT DISTINCT a.display_name FROM agents a JOIN users u ON u.id = a.user_id "
        "WHERE u.slug = %s AND a.deleted_at IS NULL",
        (user["slug"],),
    ).fetchall()
    assert names == [("v2",)]


def test_starts_are_counted_only_on_batches_with_a_job_that_has_waited(
    client: httpx.Client, domain: None, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)

    def starts(after: float) -> list[int]:
        subs = [Submission(f"agent:s{i}@{user['slug']}", "agent.upsert", BODY) for i in range(3)]
        ids = accept_all(subs)
        assert drain_all(count_starts_after=after) == len(ids)
        rows = db.execute("SELECT starts FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))
        return [row[0] for row in rows]

    assert starts(after=3600) == [0, 0, 0]  # fresh jobs: no commit of their own
    assert starts(after=0) == [1, 1, 1]  # every job has waited longer than 0 s


def upserts_with_a_bad_one(kind: str, client: httpx.Client) -> list[Submission]:
    """Four valid upserts of distinct keys of `kind`, with one whose body lacks a field third."""
    if kind == "agent.upsert":
        user_slug = put_user(client)["slug"]
        good = [Submission(f"agent:ok{i}@{user_slug}", kind, BODY) for i in range(4)]
        bad = Submission(f"agent:bad@{user_slug}", kind, {"metadata": {}})
    elif kind.startswith("user.scim_"):
        keys = [f"user:{uuid.uuid4()}" for _ in range(5)]
        if kind != "user.scim_create":  # a replace or a patch needs its user
            accept_all(
                [Submission(key, "user.scim_create", scim_job("user.scim_create")) for key in keys]
            )
            drain_all()
        good = [Submission(key, kind, scim_job(kind)) for key in keys[:4]]
        bad = Submission(keys[4], kind, {"if_match": None})
    else:
        assert kind == "user.upsert", "a new batch kind needs jobs of its own here"
        good = [
            Submission(f"user:{uuid.uuid4()}", kind, {"email": "a@example.com", "slug": new_slug()})
            for _ in range(4)
        ]
        bad = Submission(f"user:{uuid.uuid4()}", kind, {"slug": new_slug()})
    return [*good[:2], bad, *good[2:]]


def scim_job(kind: str) -> dict[str, Any]:
    """The payload of a SCIM user write of `kind` (a new userName each time)."""
    if kind == "user.scim_patch":
        title = {"op": "replace", "path": "title", "value": "Engineer"}
        return {"operations": [title], "dialect": "strict", "if_match": None}
    return {"fields": {"user_name": new_slug("scim"), "active": True}, "if_match": None}


@pytest.mark.parametrize("kind", sorted(BATCH_APPLIERS))
def test_a_bad_job_among_others_fails_alone(kind: str, client: httpx.Client, domain: None) -> None:
    ids = accept_all(upserts_with_a_bad_one(kind, client))
    drain_all()

    with transaction() as session:
        jobs = [get_job(session, job_id).model_dump(mode="json") for job_id in ids]
    assert [j["status"] for j in jobs] == ["applied", "applied", "failed", "applied", "applied"]
    assert jobs[2]["error"]["code"] == "internal_error"
    made = "created" if kind.endswith(("upsert", "create")) else "updated"
    assert {j["outcome"] for j in jobs if j["status"] == "applied"} == {made}


def test_a_drain_notifies_each_job_it_finished_once_with_its_answer(
    client: httpx.Client, domain: None, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)
    small = Submission(f"agent:small@{user['slug']}", "agent.upsert", BODY)
    big = Submission(  # its answer does not fit in a notification: the waiter reads the ledger
        f"agent:big@{user['slug']}",
        "agent.upsert",
        {**BODY, "metadata": {"blob": "x" * 9000}},
    )
    failing = Submission(f"agent:lost@{new_slug('gone')}", "agent.upsert", BODY)
    ids = accept_all([small, big, failing])
    with psycopg.connect(get_settings().require_database_url(), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        assert drain_all() == 3  # here, not by the shared worker: the notes below are ours
        with transaction() as session:
            finished = get_job(session, ids[0]).model_dump(mode="json")  # applied, with its answer
        # The same job as a duplicate drain that read it before it was applied still holds it.
        late = PendingJob(uuid.UUID(ids[0]), small.key, 1, small.kind, small.payload, 1, NOW_AT)
        with transaction() as session:  # a second decision for a finished job marks nothing
            record_decisions(session, [Finished(late, "created", result={"late": True})])
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=0.5)]
    mine = [note for note in notes if note["id"] in ids]

    with transaction() as session:
        jobs = {job_id: get_job(session, job_id).model_dump(mode="json") for job_id in ids}
    assert sorted(note["id"] for note in mine) == sorted(ids)  # each once
    by_id = {note["id"]: note for note in mine}
    assert by_id[ids[0]] == {"id": ids[0], "status": "applied", "body": jobs[ids[0]]["result"]}
    assert by_id[ids[1]] == {"id": ids[1]}
    assert by_id[ids[2]] == {"id": ids[2], "status": "failed", "body": jobs[ids[2]]["error"]}
    assert jobs[ids[2]]["error"]["code"] == "user_not_found"
    assert jobs[ids[0]] == finished  # the late decision changed nothing


@pytest.mark.parametrize("kind", sorted(BATCH_APPLIERS))
def test_every_batch_kind_can_be_applied_alone(
    kind: str, client: httpx.Client, domain: None
) -> None:
    # A batch that fails is applied again job by job: each of its kinds needs a single applier.
    assert kind in (
        "agent.upsert",
        "user.upsert",
        "user.scim_create",
        "user.scim_replace",
        "user.scim_patch",
    ), "a new batch kind needs a job of its own here"
    if kind == "agent.upsert":
        job = job_for(f"alone@{put_user(client)['slug']}", LATER)
    elif kind.startswith("user.scim_"):
        key = f"user:{uuid.uuid4()}"
        if kind != "user.scim_create":
            accept_all([Submission(key, "user.scim_create", scim_job("user.scim_create"))])
            drain_all()
        job = PendingJob(uuid.uuid4(), key, 2, kind, scim_job(kind), LATER, NOW_AT)
    else:
        body = {"email": "a@example.com", "slug": new_slug("alone")}
        job = PendingJob(uuid.uuid4(), f"user:{uuid.uuid4()}", 1, kind, body, LATER, NOW_AT)
    with transaction() as session:
        made = "created" if kind.endswith(("upsert", "create")) else "updated"
        assert apply_job(session, job).outcome == made
