"""Mirror mode: the drift report, prune and its threshold, and dry runs."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.identity.backfill.uploads import (
    agent_item,
    iso,
    ndjson,
    prefix,
    run_backfill,
    user_item,
)


def owner_with_agents(client: httpx.Client, count: int) -> tuple[dict[str, Any], list[str]]:
    """A user with `count` live agents, written through the ledger like live traffic."""
    p = prefix()
    user = user_item(f"{p}-u")
    run = run_backfill(client, [user] + [agent_item(f"a{i}@{p}-u") for i in range(count)])
    assert run["counts"]["created"] == count + 1
    return user, [f"a{i}@{p}-u" for i in range(count)]


def live_slugs(db: psycopg.Connection[Any], user: dict[str, Any]) -> set[str]:
    rows = db.execute(
        "SELECT a.slug FROM agents a WHERE a.user_id = %s AND a.deleted_at IS NULL", (user["id"],)
    ).fetchall()
    return {r[0] for r in rows}


def drift_list(client: httpx.Client, run: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get(f"/v1/internal/backfills/{run['id']}/drift")
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_mirror_reports_agents_the_input_no_longer_has_and_changes_none_of_them(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user, keys = owner_with_agents(client, 10)
    run = run_backfill(client, [user] + [agent_item(k) for k in keys[:8]], mode="mirror")
    assert run["status"] == "completed"
    assert run["counts"]["unchanged"] == 9
    assert run["drift"] == {
        "agents": 2,
        "live_agents": 10,
        "fraction": 0.2,
        "max_fraction": 0.1,
        "prune": "not_requested",
        "pruned": 0,
    }
    assert sorted(d["key"] for d in drift_list(client, run)) == sorted(keys[8:])
    assert {d["state"] for d in drift_list(client, run)} == {"found"}
    assert len(live_slugs(db, user)) == 10


def test_users_without_a_user_line_are_not_mirrored(client: httpx.Client) -> None:
    user, keys = owner_with_agents(client, 4)
    run = run_backfill(client, [agent_item(keys[0])], mode="mirror")
    assert run["drift"]["agents"] == 0 and run["drift"]["live_agents"] == 0


def test_prune_within_the_threshold_soft_deletes_the_drift_and_keeps_it_deleted(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user, keys = owner_with_agents(client, 20)
    before = datetime.now(UTC) - timedelta(seconds=1)
    run = run_backfill(
        client, [user] + [agent_item(k) for k in keys[:18]], mode="mirror", prune=True
    )
    assert run["status"] == "completed", run
    assert run["drift"]["agents"] == 2 and run["drift"]["pruned"] == 2
    assert run["drift"]["prune"] == "done" and run["drift"]["fraction"] == 0.1
    assert {d["state"] for d in drift_list(client, run)} == {"pruned"}
    assert live_slugs(db, user) == {k.split("@")[0] for k in keys[:18]}
    pruned = client.get(f"/v1/agents/{keys[19]}?include_deleted=true").json()
    assert pruned["deleted_at"] is not None

    # A pruned agent has a tombstone: an item older than the prune does not bring it back.
    stale = run_backfill(client, [agent_item(keys[19])], snapshot_at=iso(before))
    assert stale["counts"]["superseded"] == 1
    assert client.get(f"/v1/agents/{keys[19]}").status_code == 404


def test_prune_over_the_threshold_is_refused_and_changes_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user, keys = owner_with_agents(client, 10)
    rows_before = db.execute(
        "SELECT id, xmin::text FROM agents WHERE user_id = %s ORDER BY id", (user["id"],)
    ).fetchall()
    changed = agent_item(keys[0], display_name="Renamed")
    new = agent_item(keys[0].replace("a0@", "brand-new@"))
    response = client.post(
        "/v1/internal/backfills",
        content=ndjson([user, changed, new]),
        params={"mode": "mirror", "prune": "true"},
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "prune_threshold_exceeded"
    assert error["details"]["drift"] == 9 and error["details"]["live_agents"] == 10
    run = client.get(f"/v1/internal/backfills/{error['details']['backfill_id']}").json()
    assert run["status"] == "failed" and run["error"]["code"] == "prune_threshold_exceeded"
    assert run["drift"]["prune"] == "refused"
    rows_after = db.execute(
        "SELECT id, xmin::text FROM agents WHERE user_id = %s ORDER BY id", (user["id"],)
    ).fetchall()
    assert rows_after == rows_before, "a refused prune must change nothing at all"
    assert client.get(f"/v1/agents/{keys[0]}").json()["display_name"] == "a0"


def test_dry_run_counts_and_reports_drift_but_changes_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    user, keys = owner_with_agents(client, 10)
    p = prefix()
    newcomer = user_item(f"{p}-new")
    items = (
        [user]
        + [agent_item(k) for k in keys[:7]]
        + [agent_item(keys[7], display_name="Changed")]
        + [newcomer, agent_item(f"x@{p}-new"), agent_item(f"y@{p}-nobody")]
    )
    snapshot = db.execute("SELECT count(*), max(xmin::text::bigint) FROM agents").fetchone()
    run = run_backfill(client, items, mode="mirror", prune=True, dry_run=True)
    assert run["status"] == "completed"
    assert run["counts"] == {
        "received": 12,
        "created": 2,
        "updated": 1,
        "unchanged": 8,
        "superseded": 0,
        "failed": 1,
    }
    assert run["drift"]["agents"] == 2 and run["drift"]["prune"] == "would_be_refused"
    assert db.execute("SELECT count(*), max(xmin::text::bigint) FROM agents").fetchone() == snapshot
    assert client.get(f"/v1/internal/users/{newcomer['id']}").status_code == 404
    assert client.get(f"/v1/agents/{keys[7]}").json()["display_name"] == "a7"
    assert len(live_slugs(db, user)) == 10


def test_agents_written_after_the_snapshot_are_not_drift(client: httpx.Client) -> None:
    user, keys = owner_with_agents(client, 10)
    snapshot = datetime.now(UTC)
    late = client.put(f"/v1/internal/agents/late@{user['slug']}", json={"display_name": "Late"})
    assert late.status_code == 200
    run = run_backfill(
        client,
        [user] + [agent_item(k) for k in keys],
        mode="mirror",
        prune=True,
        snapshot_at=iso(snapshot),
    )
    assert run["status"] == "completed" and run["drift"]["agents"] == 0
    assert client.get(f"/v1/agents/late@{user['slug']}").status_code == 200
