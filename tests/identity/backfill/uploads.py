"""Backfills through the API for the tests: items, NDJSON bodies, an upload and the wait for its
end, and the failures a run recorded."""

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import httpx

from tests.stack import wait_until

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(items: Iterable[dict[str, Any] | str]) -> bytes:
    return "".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items).encode()


def post_ndjson(
    client: httpx.Client, body: bytes | Iterator[bytes], **params: Any
) -> dict[str, Any]:
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    response = client.post("/v1/internal/backfills", content=body, params=query, headers=NDJSON)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/internal/backfills/{response.json()['id']}"
    run: dict[str, Any] = response.json()
    return run


def wait_done(client: httpx.Client, backfill_id: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/v1/internal/backfills/{backfill_id}").json()
        return run if run["status"] not in ("receiving", "running") else None

    return wait_until(finished, timeout=timeout, interval=0.2)


def run_backfill(
    client: httpx.Client, items: Iterable[dict[str, Any] | str], **params: Any
) -> dict[str, Any]:
    return wait_done(client, post_ndjson(client, ndjson(items), **params)["id"])


def failures(client: httpx.Client, backfill_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/internal/backfills/{backfill_id}/failures?limit=500")
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


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
