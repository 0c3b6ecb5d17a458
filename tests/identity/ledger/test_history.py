"""A key's whole history: its live writes, their retries, and the backfill items that named it,
applied or failed."""

import httpx

from tests.conftest import new_slug, put_user
from tests.identity.backfill.uploads import agent_item, run_backfill


def test_a_keys_history_holds_its_jobs_and_its_backfill_items(client: httpx.Client) -> None:
    user_slug = new_slug("hist")
    failed = client.put(f"/v1/internal/agents/scout@{user_slug}", json={"display_name": "A"})
    assert failed.status_code == 404  # no user yet: a failed job
    user = put_user(client, slug=user_slug)
    key = f"scout@{user_slug}"
    run = run_backfill(client, [agent_item(key), agent_item(key, display_name="B")])
    assert run["counts"]["created"] == 1 and run["counts"]["superseded"] == 1
    # The same line again is known from the first run: counted unchanged, never applied, so it
    # leaves no item (the row still holds the first run's line).
    again = run_backfill(client, [agent_item(key, display_name="B")])
    assert again["counts"]["unchanged"] == 1

    answer = client.get("/v1/history", params={"key": key})
    assert answer.status_code == 200, answer.text
    history = answer.json()
    assert history["keys"] == [f"agent:{key}"]
    items = history["items"]
    assert [(i["source"], i["status"], i["outcome"] or i["code"], i["line"]) for i in items] == [
        ("backfill", "applied", "created", 2),  # the newest line of the key in its chunk
        ("backfill", "applied", "superseded", 1),
        ("job", "failed", "user_not_found", None),
    ]
    assert {i["backfill_id"] for i in items[:2]} == {run["id"]}
    assert items[2]["job_id"] == failed.headers["Idmirror-Job-Id"]

    by_user = client.get("/v1/history", params={"key": user["id"]}).json()
    assert by_user["keys"] == [f"user:{user['id']}", f"node_type:{user['id']}"]
    assert [i["kind"] for i in by_user["items"]] == ["user.upsert"]
    refused = client.get("/v1/history", params={"key": "x"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_key"


def test_a_failed_backfill_item_is_in_its_keys_history(client: httpx.Client) -> None:
    key = f"scout@{new_slug('nobody')}"
    run = run_backfill(client, [agent_item(key)])
    items = client.get("/v1/history", params={"key": key}).json()["items"]
    assert [(i["status"], i["code"], i["backfill_id"], i["line"]) for i in items] == [
        ("failed", "user_not_found", run["id"], 1)
    ]


def test_an_item_that_writes_is_in_the_history_and_an_unchanged_one_is_not(
    client: httpx.Client,
) -> None:
    user = put_user(client)
    key = f"scout@{user['slug']}"
    run_backfill(client, [agent_item(key)])
    # Mirror runs read every line, so this one reaches a chunk, which finds it unchanged.
    same = run_backfill(client, [agent_item(key)], mode="mirror")
    assert same["counts"]["unchanged"] == 1
    changed = run_backfill(client, [agent_item(key, display_name="New")], mode="mirror")
    items = client.get("/v1/history", params={"key": key}).json()["items"]
    assert [(i["outcome"], i["backfill_id"]) for i in items] == [
        ("updated", changed["id"]),
        ("created", items[1]["backfill_id"]),
    ]
