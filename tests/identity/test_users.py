"""Users through the real API, ledger and worker."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.conftest import new_slug, put_user
from tests.identity.backfill.uploads import agent_item, run_backfill
from tests.stack import scalar


def test_first_put_creates_the_user(client: httpx.Client) -> None:
    user_id = str(uuid.uuid4())
    slug = new_slug("u")
    response = client.put(
        f"/v1/internal/users/{user_id}",
        json={"email": "ada@example.com", "slug": slug, "metadata": {"team": "core"}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == user_id
    assert body["created"] is True and body["outcome"] == "created"
    assert body["plan"] == "free" and body["metadata"] == {"team": "core"}
    assert response.headers["Idmirror-Job-Id"]
    assert client.get(f"/v1/internal/users/{user_id}").json()["slug"] == slug


def test_second_identical_put_is_a_noop(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    user = put_user(client)
    xmin_before = db.execute("SELECT xmin::text FROM users WHERE id = %s", (user["id"],)).fetchone()
    again = client.put(
        f"/v1/internal/users/{user['id']}",
        json={"email": user["email"], "slug": user["slug"]},
    ).json()
    assert again["created"] is False
    assert again["outcome"] == "unchanged"
    assert again["updated_at"] == user["updated_at"]
    assert again["version"] == user["version"]
    xmin_after = db.execute("SELECT xmin::text FROM users WHERE id = %s", (user["id"],)).fetchone()
    assert xmin_after == xmin_before, "an identical body must not rewrite the row"


def test_different_body_updates_and_omitted_fields_take_defaults(client: httpx.Client) -> None:
    user = put_user(client, plan="pro", external_owner="crm")
    updated = client.put(
        f"/v1/internal/users/{user['id']}", json={"email": "new@example.com", "slug": user["slug"]}
    ).json()
    assert updated["outcome"] == "updated" and updated["created"] is False
    assert updated["email"] == "new@example.com"
    assert updated["plan"] == "free" and updated["external_owner"] is None
    assert updated["updated_at"] > user["updated_at"]
    assert updated["version"] > user["version"]


def test_slug_of_another_user_is_409_and_changes_nothing(client: httpx.Client) -> None:
    first = put_user(client)
    second = put_user(client)
    response = client.put(
        f"/v1/internal/users/{second['id']}",
        json={"email": "x@example.com", "slug": first["slug"]},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "slug_taken"
    assert client.get(f"/v1/internal/users/{second['id']}").json()["slug"] == second["slug"]


def test_older_source_updated_at_is_superseded(client: httpx.Client) -> None:
    now = datetime.now(UTC)
    user = put_user(client, source_updated_at=now.isoformat())
    stale = client.put(
        f"/v1/internal/users/{user['id']}",
        json={
            "email": "stale@example.com",
            "slug": user["slug"],
            "source_updated_at": (now - timedelta(minutes=5)).isoformat(),
        },
    ).json()
    assert stale["outcome"] == "superseded"
    assert client.get(f"/v1/internal/users/{user['id']}").json()["email"] == user["email"]


def test_delete_removes_the_user_and_is_retry_safe(client: httpx.Client) -> None:
    user = put_user(client)
    first = client.delete(f"/v1/internal/users/{user['id']}")
    assert first.status_code == 200 and first.json()["outcome"] == "deleted"
    assert client.get(f"/v1/internal/users/{user['id']}").status_code == 404
    again = client.delete(f"/v1/internal/users/{user['id']}")
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"


def test_stale_write_does_not_resurrect_a_deleted_user(client: httpx.Client) -> None:
    before_delete = datetime.now(UTC) - timedelta(seconds=1)
    user = put_user(client, source_updated_at=(before_delete - timedelta(seconds=1)).isoformat())
    client.delete(f"/v1/internal/users/{user['id']}")
    stale = client.put(
        f"/v1/internal/users/{user['id']}",
        json={
            "email": user["email"],
            "slug": user["slug"],
            "source_updated_at": before_delete.isoformat(),
        },
    ).json()
    assert stale["outcome"] == "superseded"
    assert client.get(f"/v1/internal/users/{user['id']}").status_code == 404
    fresh = client.put(
        f"/v1/internal/users/{user['id']}", json={"email": user["email"], "slug": user["slug"]}
    ).json()
    assert fresh["outcome"] == "created" and fresh["created"] is True


def test_deleting_a_user_deletes_its_agents(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)
    client.put(f"/v1/internal/agents/bot@{user['slug']}", json={"display_name": "Bot"})
    client.delete(f"/v1/internal/users/{user['id']}")
    assert scalar(db, "SELECT count(*) FROM agents WHERE user_id = %s", (user["id"],)) == 0
    assert client.get(f"/v1/agents/bot@{user['slug']}?include_deleted=true").status_code == 404


def test_list_pages_through_every_user(client: httpx.Client) -> None:
    ids = {put_user(client)["id"] for _ in range(5)}
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/internal/users", params=params).json()
        assert len(page["items"]) <= 2
        seen.update(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids <= seen


def test_agents_deleted_with_their_user_stay_deleted_for_stale_writes(
    client: httpx.Client,
) -> None:
    # The user is deleted (taking its agents), then mirrored again by a newer write. Writes to
    # its old agents that are older than the delete must lose, live or through a backfill,
    # exactly as they would against a DELETE of the agent itself.
    before_delete = datetime.now(UTC) - timedelta(seconds=2)
    user = put_user(client, source_updated_at=(before_delete - timedelta(seconds=2)).isoformat())
    path = f"/v1/internal/users/{user['id']}"
    for slug in ("live", "batch"):
        agent = client.put(
            f"/v1/internal/agents/{slug}@{user['slug']}",
            json={"display_name": "Bot", "source_updated_at": before_delete.isoformat()},
        )
        assert agent.json()["outcome"] == "created"
    assert client.delete(path).json()["outcome"] == "deleted"
    again = client.put(path, json={"email": user["email"], "slug": user["slug"]})
    assert again.json()["outcome"] == "created"

    stale = {"display_name": "Stale", "source_updated_at": before_delete.isoformat()}
    live = client.put(f"/v1/internal/agents/live@{user['slug']}", json=stale)
    assert live.status_code == 200 and live.json()["outcome"] == "superseded"
    run = run_backfill(client, [agent_item(f"batch@{user['slug']}", **stale)])
    assert run["counts"]["superseded"] == 1 and run["counts"]["created"] == 0
    for slug in ("live", "batch"):
        assert client.get(f"/v1/agents/{slug}@{user['slug']}").status_code == 404

    newer = {"display_name": "Fresh"}  # a write newer than the delete creates the agent anew
    assert client.put(f"/v1/internal/agents/live@{user['slug']}", json=newer).json()["created"]
