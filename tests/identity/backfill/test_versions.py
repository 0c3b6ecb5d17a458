"""Item versions against live writes: a snapshot or source time older than the row's last write
or delete never overwrites it or brings it back."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.identity.backfill.uploads import agent_item, iso, prefix, run_backfill, user_item


def test_live_write_after_the_snapshot_is_not_overwritten(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
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


def test_deleted_agent_is_not_resurrected_by_an_older_item(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
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


def test_deleted_user_is_not_resurrected_by_an_older_item(client: httpx.Client) -> None:
    p = prefix()
    user = user_item(f"{p}-u")
    before = datetime.now(UTC) - timedelta(seconds=30)
    run_backfill(client, [user])
    assert client.delete(f"/v1/internal/users/{user['id']}").json()["outcome"] == "deleted"
    run = run_backfill(client, [user], snapshot_at=iso(before))
    assert run["counts"]["superseded"] == 1
    assert client.get(f"/v1/internal/users/{user['id']}").status_code == 404
