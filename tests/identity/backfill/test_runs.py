"""Backfills end to end on the shared stack: NDJSON in, exact counts out, versions respected."""

import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.stack import ROOT, TOKEN, wait_until

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(items: Iterable[dict[str, Any] | str]) -> bytes:
    return "".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items).encode()


def post_ndjson(client: httpx.Client, body: bytes | Iterator[bytes], **params: Any) -> dict:
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    response = client.post("/v1/internal/backfills", content=body, params=query, headers=NDJSON)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/internal/backfills/{response.json()['id']}"
    return response.json()


def wait_done(client: httpx.Client, backfill_id: str, timeout: float = 120) -> dict:
    def finished() -> dict | None:
        run = client.get(f"/v1/internal/backfills/{backfill_id}").json()
        return run if run["status"] not in ("receiving", "running") else None

    return wait_until(finished, timeout=timeout, interval=0.2)


def run_backfill(client: httpx.Client, items: Iterable[dict | str], **params: Any) -> dict:
    return wait_done(client, post_ndjson(client, ndjson(items), **params)["id"])


def failures(client: httpx.Client, backfill_id: str) -> list[dict]:
    response = client.get(f"/v1/internal/backfills/{backfill_id}/failures?limit=500")
    assert response.status_code == 200
    return response.json()["items"]


def prefix() -> str:
    return "bf" + uuid.uuid4().hex[:8]


def user_item(slug: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "user",
        "id": str(uuid.uuid4()),
        "email": f"{slug}@example.com",
        "slug": slug,
        **fields,
    }


def agent_item(key: str, **fields: Any) -> dict[str, Any]:
    return {"type": "agent", "key": key, "display_name": key.split("@")[0], **fields}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def test_ten_thousand_users_and_fifty_thousand_agents_exact_counts_and_a_rerun_rewrites_nothing(
    client, db
):
    p = prefix()
    users = [user_item(f"{p}-u{i}", plan="pro", metadata={"n": i}) for i in range(10_000)]
    agents = [
        agent_item(
            f"a{j}@{p}-u{i}",
            webhook_url=f"https://hooks.example.com/{i}/{j}",
            metadata={"team": "t", "j": j},
        )
        for i in range(10_000)
        for j in range(5)
    ]
    body = ndjson(users + agents)
    started = time.monotonic()
    first = wait_done(client, post_ndjson(client, body)["id"], timeout=240)
    first_seconds = time.monotonic() - started
    assert first["status"] == "completed", first
    assert first["counts"] == {
        "received": 60_000,
        "created": 60_000,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 0,
    }
    assert first["items_per_second"] > 0

    def rows() -> dict[str, tuple[str, datetime]]:
        found = db.execute(
            "SELECT u.id::text, u.xmin::text, u.updated_at FROM users u WHERE u.slug LIKE %s "
            "UNION ALL SELECT a.id, a.xmin::text, a.updated_at FROM agents a "
            "JOIN users u ON u.id = a.user_id WHERE u.slug LIKE %s AND a.deleted_at IS NULL",
            (f"{p}-%", f"{p}-%"),
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in found}

    before = rows()
    assert len(before) == 60_000
    sample = db.execute(
        "SELECT u.plan, u.metadata, a.display_name, a.webhook_url, a.metadata FROM agents a "
        "JOIN users u ON u.id = a.user_id WHERE u.slug = %s AND a.slug = 'a3'",
        (f"{p}-u42",),
    ).fetchone()
    assert sample == (
        "pro",
        {"n": 42},
        "a3",
        "https://hooks.example.com/42/3",
        {"team": "t", "j": 3},
    )

    started = time.monotonic()
    second = wait_done(client, post_ndjson(client, body)["id"], timeout=240)
    second_seconds = time.monotonic() - started
    assert second["counts"] == {
        "received": 60_000,
        "created": 0,
        "updated": 0,
        "unchanged": 60_000,
        "superseded": 0,
        "failed": 0,
    }
    assert rows() == before, "an unchanged item rewrote its row"
    print(f"first run {first_seconds:.1f}s, unchanged rerun {second_seconds:.1f}s")


def test_live_write_after_the_snapshot_is_not_overwritten(client, db):
    p = prefix()
    snapshot = datetime.now(UTC) - timedelta(minutes=5)
    user = user_item(f"{p}-u", plan="live")
    assert (
        client.put(
            f"/v1/internal/users/{user['id']}", json={k: user[k] for k in ("email", "slug", "plan")}
        ).status_code
        == 200
    )
    live = client.put(f"/v1/internal/agents/bot@{p}-u", json={"display_name": "Live"}).json()

    stale = {**user, "plan": "stale"}
    run = run_backfill(
        client, [stale, agent_item(f"bot@{p}-u", display_name="Stale")], snapshot_at=iso(snapshot)
    )
    assert run["counts"]["superseded"] == 2 and run["counts"]["updated"] == 0
    agent = client.get(f"/v1/agents/bot@{p}-u").json()
    assert agent["display_name"] == "Live" and agent["updated_at"] == live["updated_at"]
    assert client.get(f"/v1/internal/users/{user['id']}").json()["plan"] == "live"

    # An item dated after the live write wins, whatever the snapshot.
    newer = iso(datetime.now(UTC) + timedelta(seconds=1))
    run = run_backfill(
        client,
        [agent_item(f"bot@{p}-u", display_name="Newer", source_updated_at=newer)],
        snapshot_at=iso(snapshot),
    )
    assert run["counts"]["updated"] == 1
    assert client.get(f"/v1/agents/bot@{p}-u").json()["display_name"] == "Newer"


def test_deleted_agent_is_not_resurrected_by_an_older_item(client, db):
    p = prefix()
    before_delete = datetime.now(UTC) - timedelta(seconds=30)
    run_backfill(client, [user_item(f"{p}-u"), agent_item(f"bot@{p}-u")])
    first = client.get(f"/v1/agents/bot@{p}-u").json()
    assert client.delete(f"/v1/internal/agents/bot@{p}-u").json()["outcome"] == "deleted"

    stale = run_backfill(
        client, [agent_item(f"bot@{p}-u", display_name="Back?")], snapshot_at=iso(before_delete)
    )
    assert stale["counts"]["superseded"] == 1 and stale["counts"]["created"] == 0
    assert client.get(f"/v1/agents/bot@{p}-u").status_code == 404

    # An item newer than the delete starts a fresh agent.
    fresh = run_backfill(client, [agent_item(f"bot@{p}-u", display_name="Fresh")])
    assert fresh["counts"]["created"] == 1
    agent = client.get(f"/v1/agents/bot@{p}-u").json()
    assert agent["id"] != first["id"] and agent["display_name"] == "Fresh"
    live = db.execute(
        "SELECT count(*) FROM agents a JOIN users u ON u.id = a.user_id "
        "WHERE u.slug = %s AND a.deleted_at IS NULL",
        (f"{p}-u",),
    ).fetchone()
    assert live == (1,)


def test_deleted_user_is_not_resurrected_by_an_older_item(client):
    p = prefix()
    user = user_item(f"{p}-u")
    before = datetime.now(UTC) - timedelta(seconds=30)
    run_backfill(client, [user])
    assert client.delete(f"/v1/internal/users/{user['id']}").json()["outcome"] == "deleted"
    run = run_backfill(client, [user], snapshot_at=iso(before))
    assert run["counts"]["superseded"] == 1
    assert client.get(f"/v1/internal/users/{user['id']}").status_code == 404


def test_bad_lines_become_failed_items_with_their_line_numbers_and_the_rest_applies(client, db):
    p = prefix()
    node_type = str(uuid.uuid4())
    lines = [
        user_item(f"{p}-u"),  # 1
        "",  # 2: blank lines are not items
        "{not json",  # 3
        {"type": "robot", "id": "x"},  # 4
        agent_item(f"bad@@{p}-u"),  # 5
        agent_item(f"hook@{p}-u", webhook_url="http://169.254.169.254/latest"),  # 6
        {"type": "user", "id": "not-a-uuid", "email": "x@example.com", "slug": f"{p}-x"},  # 7
        {"type": "agent", "key": f"nameless@{p}-u"},  # 8: display_name missing
        agent_item(f"orphan@{p}-nobody"),  # 9: no such user
        agent_item(f"ok@{p}-u", metadata={"big": "x" * 20_000}),  # 10: metadata over 16 KiB
        {
            "type": "node_type",
            "id": node_type,
            "name": "step",
            "params_schema": {"type": "object"},
        },  # 11
        agent_item(f"ok@{p}-u"),  # 12
        # 13 and 14: numbers that validation reads (as infinity, as NaN) but JSON cannot hold
        json.dumps(agent_item(f"huge@{p}-u", metadata={"n": 0})).replace('"n": 0', '"n": 1e999999'),
        json.dumps(agent_item(f"nan@{p}-u", metadata={"n": float("nan")})),
    ]
    run = run_backfill(client, lines)
    assert run["status"] == "completed"
    assert run["counts"] == {
        "received": 13,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 10,
    }
    found = {f["line"]: f for f in failures(client, run["id"])}
    assert {line: f["error"]["code"] for line, f in found.items()} == {
        3: "validation_error",
        4: "validation_error",
        5: "invalid_agent_key",
        6: "invalid_webhook_url",
        7: "invalid_user_id",
        8: "validation_error",
        9: "user_not_found",
        10: "validation_error",
        13: "validation_error",
        14: "validation_error",
    }
    assert found[8]["key"] == f"agent:nameless@{p}-u"
    assert found[8]["error"]["details"]["errors"][0]["loc"] == "display_name"
    assert found[9]["retryable"] is True and found[3]["retryable"] is False
    assert client.get(f"/v1/agents/ok@{p}-u").json()["display_name"] == "ok"
    assert client.get(f"/v1/node-types/{node_type}").json()["name"] == "step"


def test_retry_applies_failed_items_again_once_their_cause_is_fixed(client):
    p = prefix()
    run = run_backfill(client, [agent_item(f"a{i}@{p}-late") for i in range(3)] + ["nope"])
    assert run["counts"]["failed"] == 4
    # While the owner is still missing, a retry fails the same items again.
    assert client.post(f"/v1/internal/backfills/{run['id']}/retry").status_code == 202
    run = wait_done(client, run["id"])
    assert run["counts"]["failed"] == 4 and run["retries"] == 1
    owner = user_item(f"{p}-late")
    client.put(
        f"/v1/internal/users/{owner['id']}", json={"email": owner["email"], "slug": owner["slug"]}
    )

    retried = client.post(f"/v1/internal/backfills/{run['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "running"
    run = wait_done(client, run["id"])
    assert run["status"] == "completed" and run["retries"] == 2
    assert run["counts"] == {
        "received": 4,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "superseded": 0,
        "failed": 1,
    }
    assert [f["line"] for f in failures(client, run["id"])] == [4]
    assert client.get(f"/v1/agents/a2@{p}-late").status_code == 200

    again = client.post(f"/v1/internal/backfills/{run['id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "backfill_not_retryable"


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (
            {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"content": b"", "headers": NDJSON, "params": {"prune": "true"}}, 400, "invalid_backfill"),
        (
            {"content": b"", "headers": NDJSON, "params": {"mode": "everything"}},
            422,
            "validation_error",
        ),
        (
            {"content": b"", "headers": NDJSON, "params": {"snapshot_at": "2024-01-01T00:00:00"}},
            422,
            "validation_error",
        ),
        (
            {"content": b"", "headers": NDJSON, "params": {"snapshot_at": "2999-01-01T00:00:00Z"}},
            422,
            "validation_error",
        ),
        ({"json": {"source": "nowhere"}}, 404, "source_not_found"),
        ({"json": {"sauce": "x"}}, 422, "validation_error"),
        (
            {"content": b"[", "headers": {"Content-Type": "application/json"}},
            422,
            "validation_error",
        ),
    ],
)
def test_bad_backfill_requests_get_a_json_error_envelope(client, request_, status, code):
    response = client.post("/v1/internal/backfills", **request_)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_backfills_and_bad_cursors_are_json_errors(client):
    for path in (
        "/v1/internal/backfills/not-a-uuid",
        f"/v1/internal/backfills/{uuid.uuid4()}",
        f"/v1/internal/backfills/{uuid.uuid4()}/failures",
    ):
        response = client.get(path)
        assert (
            response.status_code == 404 and response.json()["error"]["code"] == "backfill_not_found"
        )
    for action in ("retry", "cancel"):
        response = client.post(f"/v1/internal/backfills/{uuid.uuid4()}/{action}")
        assert response.status_code == 404
    assert (
        client.get("/v1/internal/backfills?cursor=bogus").json()["error"]["code"]
        == "invalid_cursor"
    )
    assert httpx.get(client.base_url.join("/v1/internal/backfills")).status_code == 401


def test_empty_upload_completes_with_zero_counts_and_metrics_count_items(client):
    run = run_backfill(client, [])
    assert run["status"] == "completed" and set(run["counts"].values()) == {0}
    run_backfill(client, [user_item(prefix() + "-m")])
    metrics = httpx.get(client.base_url.join("/metrics")).text
    assert 'idmirror_backfill_items_total{kind="user",outcome="created"}' in metrics


def test_cli_uploads_a_file_and_prints_the_final_counts(stack, client, tmp_home):
    p = prefix()
    path = tmp_home / "input.ndjson"
    path.write_bytes(
        ndjson([user_item(f"{p}-u")] + [agent_item(f"a{i}@{p}-u") for i in range(300)] + ["bad"])
    )
    env = {**os.environ, "IDMIRROR_URL": stack.base_url, "IDMIRROR_TOKEN": TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "backfill", str(path), "--poll", "0.2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and "created 301" in done.stdout and "failed 1" in done.stdout
    assert "/failures" in done.stdout
    assert len(client.get(f"/v1/agents?user_slug={p}-u&limit=500").json()["items"]) == 300


def test_users_swapping_slugs_within_a_chunk_fail_as_single_writes_would(client):
    """Both users in one chunk: the set-based write meets the slug's unique index, and the
    chunk is applied again item by item, as single writes in line order: each finds its new
    slug still held by the other."""
    p = prefix()
    first, second = same_bucket_ids(2)
    before = [user_item(f"{p}-x", id=first), user_item(f"{p}-y", id=second)]
    assert run_backfill(client, before)["counts"]["created"] == 2
    swapped = [{**before[0], "slug": f"{p}-y"}, {**before[1], "slug": f"{p}-x"}]
    run = run_backfill(client, swapped)
    assert run["counts"]["failed"] == 2, run["counts"]
    assert [f["error"]["code"] for f in failures(client, run["id"])] == ["slug_taken"] * 2
    assert client.get(f"/v1/internal/users/{first}").json()["slug"] == f"{p}-x"
    assert client.get(f"/v1/internal/users/{second}").json()["slug"] == f"{p}-y"


def same_bucket_ids(count: int, buckets: int = 8) -> list[str]:
    """User ids whose keys fall in one bucket (the default number of buckets)."""
    found: list[str] = []
    while len(found) < count:
        candidate = str(uuid.uuid4())
        key = f"user:{candidate}".encode()
        if (
            not found
            or zlib.crc32(key) % buckets == zlib.crc32(f"user:{found[0]}".encode()) % buckets
        ):
            found.append(candidate)
    return found
