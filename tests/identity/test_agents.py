"""Agents: idempotent upserts by {slug}@{user_slug}, soft delete, concurrency."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.conftest import new_slug, put_user
from tests.stack import scalar


def test_same_body_twice_gives_same_id_and_unchanged(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/scout@{user['slug']}"
    body = {
        "display_name": "Scout",
        "webhook_url": "https://hooks.example.com/a",
        "metadata": {"k": 1},
    }
    first = client.put(path, json=body).json()
    second = client.put(path, json=body).json()
    assert first["created"] is True and first["outcome"] == "created"
    assert first["id"].startswith("agt_") and first["user_id"] == user["id"]
    assert second["id"] == first["id"]
    assert second["created"] is False and second["outcome"] == "unchanged"
    assert second["updated_at"] == first["updated_at"]
    assert scalar(db, "SELECT count(*) FROM agents WHERE user_id = %s", (user["id"],)) == 1


def test_different_body_updates(client: httpx.Client) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/scout@{user['slug']}"
    first = client.put(path, json={"display_name": "Scout"}).json()
    second = client.put(path, json={"display_name": "Scout II", "metadata": {"v": 2}}).json()
    assert second["outcome"] == "updated" and second["id"] == first["id"]
    assert second["display_name"] == "Scout II" and second["metadata"] == {"v": 2}
    assert client.get(f"/v1/agents/{first['id']}").json()["display_name"] == "Scout II"


def test_percent_encoded_at_is_the_same_key(client: httpx.Client) -> None:
    user = put_user(client)
    first = client.put(f"/v1/internal/agents/bot@{user['slug']}", json={"display_name": "B"}).json()
    second = client.put(f"/v1/internal/agents/bot%40{user['slug']}", json={"display_name": "B"})
    assert second.json()["id"] == first["id"] and second.json()["outcome"] == "unchanged"


def test_agent_for_missing_user_is_404(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    slug = new_slug("a")
    response = client.put(f"/v1/internal/agents/{slug}@nobody-here", json={"display_name": "S"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "user_not_found"
    assert scalar(db, "SELECT count(*) FROM agents WHERE slug = %s", (slug,)) == 0


def test_fifty_concurrent_identical_first_puts_create_once(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/racer@{user['slug']}"
    with ThreadPoolExecutor(50) as pool:
        responses = list(
            pool.map(lambda _: client.put(path, json={"display_name": "Racer"}), range(50))
        )
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    bodies = [r.json() for r in responses]
    assert sum(b["created"] for b in bodies) == 1
    assert len({b["id"] for b in bodies}) == 1
    assert sorted(b["outcome"] for b in bodies) == ["created"] + ["unchanged"] * 49
    racers = scalar(
        db, "SELECT count(*) FROM agents WHERE user_id = %s AND slug = 'racer'", (user["id"],)
    )
    assert racers == 1


def test_fifty_concurrent_different_puts_end_with_the_last_accepted(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/busy@{user['slug']}"
    with ThreadPoolExecutor(50) as pool:
        responses = list(
            pool.map(lambda i: client.put(path, json={"display_name": f"v{i}"}), range(50))
        )
    assert all(r.status_code == 200 for r in responses)
    last = scalar(
        db,
        "SELECT payload->>'display_name' FROM jobs WHERE key = %s ORDER BY seq DESC LIMIT 1",
        (f"agent:busy@{user['slug']}",),
    )
    stored = client.get(f"/v1/agents/busy@{user['slug']}").json()
    assert stored["display_name"] == last
    outcomes = db.execute(
        "SELECT outcome FROM jobs WHERE key = %s ORDER BY seq", (f"agent:busy@{user['slug']}",)
    ).fetchall()
    assert [o[0] for o in outcomes] == ["created"] + ["updated"] * 49


def test_soft_delete_keeps_a_tombstone_and_a_newer_put_starts_over(client: httpx.Client) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/ghost@{user['slug']}"
    first = client.put(path, json={"display_name": "Ghost"}).json()
    deleted = client.delete(path)
    assert deleted.status_code == 200 and deleted.json()["outcome"] == "deleted"
    assert client.delete(path).json()["outcome"] == "unchanged"
    assert client.get(f"/v1/agents/ghost@{user['slug']}").status_code == 404
    tomb = client.get(f"/v1/agents/ghost@{user['slug']}", params={"include_deleted": "true"}).json()
    assert tomb["id"] == first["id"] and tomb["deleted_at"] is not None
    again = client.put(path, json={"display_name": "Ghost"}).json()
    assert again["created"] is True and again["outcome"] == "created"
    assert again["id"] != first["id"]


def test_put_older_than_the_tombstone_is_superseded(client: httpx.Client) -> None:
    user = put_user(client)
    path = f"/v1/internal/agents/old@{user['slug']}"
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    client.put(
        path,
        json={
            "display_name": "Old",
            "source_updated_at": (earlier - timedelta(minutes=1)).isoformat(),
        },
    )
    client.delete(path)
    stale = client.put(path, json={"display_name": "Old", "source_updated_at": earlier.isoformat()})
    assert stale.status_code == 200 and stale.json()["outcome"] == "superseded"
    assert client.get(f"/v1/agents/old@{user['slug']}").status_code == 404


def test_list_filters_by_user_and_hides_deleted(client: httpx.Client) -> None:
    user = put_user(client)
    for slug in ("a1", "a2", "a3"):
        client.put(f"/v1/internal/agents/{slug}@{user['slug']}", json={"display_name": slug})
    client.delete(f"/v1/internal/agents/a2@{user['slug']}")
    live = client.get("/v1/agents", params={"user_slug": user["slug"]}).json()
    assert sorted(a["slug"] for a in live["items"]) == ["a1", "a3"]
    everything = client.get(
        "/v1/agents", params={"user_slug": user["slug"], "include_deleted": "true"}
    ).json()
    assert sorted(a["slug"] for a in everything["items"]) == ["a1", "a2", "a3"]


def test_stale_put_does_not_resurrect_an_agent_after_its_owner_changed_slug(
    client: httpx.Client,
) -> None:
    user = put_user(client)
    moment = datetime.now(UTC) - timedelta(minutes=10)
    old_path = f"/v1/internal/agents/keep@{user['slug']}"
    client.put(old_path, json={"display_name": "K", "source_updated_at": moment.isoformat()})
    assert client.delete(old_path).json()["outcome"] == "deleted"
    renamed = client.put(
        f"/v1/internal/users/{user['id']}",
        json={"email": user["email"], "slug": user["slug"] + "-2"},
    ).json()
    stale = client.put(
        f"/v1/internal/agents/keep@{renamed['slug']}",
        json={
            "display_name": "K",
            "source_updated_at": (moment + timedelta(minutes=1)).isoformat(),
        },
    )
    assert stale.json()["outcome"] == "superseded"
    assert client.get(f"/v1/agents/keep@{renamed['slug']}").status_code == 404
