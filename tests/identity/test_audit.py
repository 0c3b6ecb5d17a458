"""The audit trail: an entry for every acknowledged write (with its outcome once its job
finished), every backfill and every admin action; listed newest first with filters and cursor
paging; append-only; forgotten after IDMIRROR_AUDIT_RETENTION_DAYS."""

import asyncio
import uuid
from typing import Any

import aiohttp
import httpx
import psycopg
import pytest

from tests.conftest import new_slug, put_user
from tests.integrators import client_for, new_integrator, new_token
from tests.stack import Stack, scalar, wait_until

WRITES = 10_000


async def write_many(stack: Stack, token: str, user_slugs: list[str], count: int) -> list[str]:
    """`count` respond-async agent upserts over the users, 32 clients at a time; the job ids
    acknowledged."""
    headers = {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(stack.base_url, headers=headers, connector=connector) as c:
        paths = iter(
            f"/v1/internal/agents/a{n}@{user_slugs[n % len(user_slugs)]}" for n in range(count)
        )
        acknowledged: list[str] = []

        async def client() -> None:
            for path in paths:
                async with c.put(path, json={"display_name": "A"}) as answer:
                    if answer.status == 202:
                        acknowledged.append(answer.headers["Idmirror-Job-Id"])

        await asyncio.gather(*(client() for _ in range(32)))
    return acknowledged


@pytest.mark.slow
def test_every_acknowledged_write_of_a_large_run_has_its_audit_entry(
    stack: Stack, client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    integrator = new_integrator(client)
    created = new_token(client, integrator, ["users:write", "agents:write"])
    with client_for(stack, created["token"]) as c:
        slugs = [put_user(c)["slug"] for _ in range(10)]
    acknowledged = asyncio.run(write_many(stack, created["token"], slugs, WRITES))
    assert len(acknowledged) == WRITES
    entries = scalar(
        db,
        "SELECT count(*) FROM audit WHERE job_id = ANY(%s::uuid[]) AND integrator = %s "
        "AND token_id = %s AND action = 'agent.upsert' AND key LIKE 'agent:%%' "
        "AND client = '127.0.0.1' AND request_id IS NOT NULL",
        (acknowledged, integrator, created["id"]),
    )
    assert entries == WRITES

    def outcomes_filled() -> bool:
        missing = scalar(
            db,
            "SELECT count(*) FROM audit WHERE job_id = ANY(%s::uuid[]) AND outcome IS NULL",
            (acknowledged,),
        )
        return bool(missing == 0)

    wait_until(outcomes_filled, timeout=120, interval=1)
    outcomes = db.execute(
        "SELECT outcome, count(*) FROM audit WHERE job_id = ANY(%s::uuid[]) GROUP BY outcome",
        (acknowledged,),
    ).fetchall()
    assert outcomes == [("created", WRITES)]


def test_admin_actions_and_backfills_are_audited_and_listed_with_filters(
    stack: Stack, client: httpx.Client
) -> None:
    integrator = new_integrator(client)
    created = new_token(client, integrator, ["users:write", "backfills:write"])
    client.patch(f"/v1/admin/integrators/{integrator}", json={"display_name": "Renamed"})
    with client_for(stack, created["token"]) as c:
        user_id = str(uuid.uuid4())
        wrote = c.put(
            f"/v1/internal/users/{user_id}",
            json={"email": "x@example.com", "slug": new_slug("x")},
            headers={"X-Request-Id": "req-42"},
        )
        failed = c.put(
            f"/v1/internal/users/{user_id}", json={"email": "x@example.com", "slug": "a b"}
        )
        assert failed.status_code == 422  # refused before it was a job: not in the trail
        run = c.post(
            "/v1/internal/backfills",
            content=b"",
            headers={"Content-Type": "application/x-ndjson"},
        ).json()
    client.delete(f"/v1/admin/tokens/{created['id']}")

    mine = client.get("/v1/audit", params={"integrator": integrator}).json()["items"]
    assert [e["action"] for e in mine] == ["backfill.create", "user.upsert"]
    write = mine[1]
    assert write["job_id"] == wrote.headers["Idmirror-Job-Id"]
    assert (write["key"], write["outcome"]) == (f"user:{user_id}", "created")
    assert (write["request_id"], write["token_id"]) == ("req-42", created["id"])
    assert mine[0]["key"] == f"backfill:{run['id']}"
    about = client.get("/v1/audit", params={"key": f"integrator:{integrator}"}).json()["items"]
    assert [e["action"] for e in about] == [
        "token.revoke",
        "integrator.update",
        "token.create",
        "integrator.create",
    ]
    assert about[0]["integrator"] is None, "the bootstrap admin acts for no integrator"
    by_token = client.get("/v1/audit", params={"token_id": created["id"]}).json()["items"]
    assert len(by_token) == 2

    first = client.get("/v1/audit", params={"limit": 2}).json()
    second = client.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert first["items"][-1]["id"] > second["items"][0]["id"]
    later = client.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert later["items"] == []
    assert client.get("/v1/audit", params={"cursor": "nope"}).status_code == 400
    assert client.get("/v1/audit", params={"since": "yesterday"}).status_code == 422


def test_audit_entries_cannot_be_changed(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO audit (action, key) VALUES ('token.create', 'integrator:x')")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        db.execute("UPDATE audit SET action = 'token.revoke' WHERE key = 'integrator:x'")
    db.execute("UPDATE audit SET outcome = 'created' WHERE key = 'integrator:x'")  # filled once
    with pytest.raises(psycopg.errors.RaiseException):
        db.execute("UPDATE audit SET outcome = 'updated' WHERE key = 'integrator:x'")


def test_entries_older_than_the_retention_are_forgotten(
    domain: None, db: psycopg.Connection[Any]
) -> None:
    from tasks.sweep import forget_old_audit

    key = f"integrator:{uuid.uuid4().hex}"
    db.execute(
        "INSERT INTO audit (at, action, key) VALUES (now() - interval '91 days', 'token.create', %s),"
        " (now() - interval '89 days', 'token.revoke', %s)",
        (key, key),
    )
    assert forget_old_audit(90) >= 1
    kept = db.execute("SELECT action FROM audit WHERE key = %s", (key,)).fetchall()
    assert kept == [("token.revoke",)]
