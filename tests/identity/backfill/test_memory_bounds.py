"""A backfill's memory is bounded by bytes, not by item counts: buffers become chunks by size,
and node types' schemas have a size limit on every path."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.identity.backfill.uploads import failures, ndjson, post_ndjson, prefix, wait_done
from tests.stack import Stack

CHUNK_BYTES = 64 * 1024


@pytest.fixture
def small_chunks(stack: Stack, tmp_home: Path) -> Iterator[Stack]:
    """A second API on the shared database whose chunks hold at most 64 KiB; the shared
    stack's worker applies them."""
    api = Stack(
        stack.database_url, stack.redis_url, tmp_home, backfill_chunk_bytes=str(CHUNK_BYTES)
    )
    try:
        api.start("api")
        yield api
    finally:
        api.stop()


def test_buffers_become_chunks_by_size_as_well_as_by_count(
    small_chunks: Stack, db: psycopg.Connection[Any]
) -> None:
    slug = prefix()
    padding = "x" * 30_000  # a 30 KB item: two fit a chunk, a third closes it
    lines = [
        {
            "type": "user",
            "id": str(uuid.uuid4()),
            "email": f"{slug}-{n}@example.com",
            "slug": f"{slug}-{n}",
            "metadata": {"pad": padding},
        }
        for n in range(60)
    ]
    with small_chunks.client() as client:
        run = wait_done(client, post_ndjson(client, ndjson(lines))["id"])
    assert run["status"] == "completed" and run["counts"]["created"] == 60
    # Chunks are deleted once applied; the run counts how many it stored.
    chunks = db.execute("SELECT chunks FROM backfills WHERE id = %s", (run["id"],)).fetchone()
    assert chunks is not None
    assert chunks[0] >= 20  # 1.8 MB in chunks of 64 KiB; by count (1,000 a chunk) at most 8


def big_schema(size: int) -> dict[str, Any]:
    return {"type": "object", "description": "d" * size}


def test_a_params_schema_over_its_limit_is_refused_live_and_in_a_backfill(
    client: httpx.Client,
) -> None:
    response = client.put(
        f"/v1/internal/node-types/{uuid.uuid4()}",
        json={"name": "huge", "params_schema": big_schema(70_000)},
    )
    assert response.status_code == 422, response.text
    assert "params_schema" in json.dumps(response.json()["error"]["details"])
    item = {"type": "node_type", "id": str(uuid.uuid4()), "name": "huge"}
    run = wait_done(
        client,
        post_ndjson(
            client,
            ndjson(
                [
                    {**item, "params_schema": big_schema(70_000)},
                    {**item, "id": str(uuid.uuid4()), "params_schema": big_schema(10)},
                ]
            ),
        )["id"],
    )
    assert run["counts"]["failed"] == 1 and run["counts"]["created"] == 1
    assert [f["line"] for f in failures(client, run["id"])] == [1]
