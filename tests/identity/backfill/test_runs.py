"""Backfills end to end on the shared stack: NDJSON in, exact counts out, an unchanged rerun
rewrites nothing, through the API and the CLI."""

import os
import subprocess
import sys
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.identity.backfill.uploads import (
    agent_item,
    failures,
    ndjson,
    post_ndjson,
    prefix,
    run_backfill,
    user_item,
    wait_done,
)
from tests.stack import ROOT, TOKEN, Stack, scalar, wait_until


def users_with_five_agents_each(p: str, users: int) -> list[dict[str, Any]]:
    """Users `{p}-u{i}` on plan pro, then agents a0..a4 of each, with webhooks and metadata."""
    items = [user_item(f"{p}-u{i}", plan="pro", metadata={"n": i}) for i in range(users)]
    return items + [
        agent_item(
            f"a{j}@{p}-u{i}",
            webhook_url=f"https://hooks.example.com/{i}/{j}",
            metadata={"team": "t", "j": j},
        )
        for i in range(users)
        for j in range(5)
    ]


def stored_versions(db: psycopg.Connection[Any], p: str) -> dict[str, tuple[str, datetime]]:
    """xmin and updated_at of every user under the prefix and of each live agent of theirs."""
    found = db.execute(
        "SELECT u.id::text, u.xmin::text, u.updated_at FROM users u WHERE u.slug LIKE %s "
        "UNION ALL SELECT a.id, a.xmin::text, a.updated_at FROM agents a "
        "JOIN users u ON u.id = a.user_id WHERE u.slug LIKE %s AND a.deleted_at IS NULL",
        (f"{p}-%", f"{p}-%"),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in found}


def test_ten_thousand_users_and_fifty_thousand_agents_exact_counts_and_a_rerun_rewrites_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    body = ndjson(users_with_five_agents_each(p, 10_000))
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

    before = stored_versions(db, p)
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
    assert stored_versions(db, p) == before, "an unchanged item rewrote its row"
    print(f"first run {first_seconds:.1f}s, unchanged rerun {second_seconds:.1f}s")


def test_empty_upload_completes_with_zero_counts_and_metrics_count_items(
    client: httpx.Client,
) -> None:
    run = run_backfill(client, [])
    assert run["status"] == "completed" and set(run["counts"].values()) == {0}
    run_backfill(client, [user_item(prefix() + "-m")])
    metrics = client.get("/metrics").text
    assert 'idmirror_backfill_items_total{kind="user",outcome="created"}' in metrics


def test_cli_uploads_a_file_and_prints_the_final_counts(
    stack: Stack, client: httpx.Client, tmp_home: Path
) -> None:
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


def test_users_swapping_slugs_within_a_chunk_fail_as_single_writes_would(
    client: httpx.Client,
) -> None:
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


def test_an_agent_added_behind_a_chunks_back_sends_it_one_by_one(
    client: httpx.Client, db: psycopg.Connection[Any], database_url: str
) -> None:
    """A writer that adds an agent without its key's lock while a chunk inserts it: the chunk's
    plain insert meets the unique index, and the chunk is applied again item by item."""
    p = prefix()
    user = user_item(f"{p}-u")
    assert run_backfill(client, [user])["counts"]["created"] == 1
    with psycopg.connect(database_url) as writer:
        writer.execute(
            "INSERT INTO agents (id, user_id, slug, display_name, version, created_at, updated_at) "
            "VALUES (gen_random_uuid()::text, %s, 'bot', 'Before', 0, now(), now())",
            (user["id"],),
        )
        started = post_ndjson(
            client, ndjson([agent_item(f"bot@{p}-u"), agent_item(f"other@{p}-u")])
        )
        # The chunk's insert waits for the writer's row, then meets it once it commits.
        wait_until(
            lambda: scalar(
                db,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted",
            )
        )
        writer.commit()
    run = wait_done(client, started["id"])
    assert run["status"] == "completed", run["error"]
    assert run["counts"]["created"] == 1 and run["counts"]["updated"] == 1, run["counts"]
    assert (
        scalar(
            db, "SELECT display_name FROM agents WHERE user_id = %s AND slug = 'bot'", (user["id"],)
        )
        == "bot"
    )
