"""Lines an earlier backfill applied are counted unchanged without being read again, and only
when reading them would have said so (identity/backfill/known.py)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.identity.backfill.uploads import (
    agent_item,
    iso,
    ndjson,
    post_ndjson,
    prefix,
    run_backfill,
    user_item,
    wait_done,
)
from tests.stack import scalar


def chunks_stored(db: psycopg.Connection[Any], backfill_id: str) -> int:
    """How many chunks the run stored: zero when every line was known."""
    chunks: int = scalar(db, "SELECT chunks FROM backfills WHERE id = %s", (backfill_id,))
    return chunks


def agent_row(db: psycopg.Connection[Any], key: str) -> tuple[Any, ...]:
    """Display name, xmin and line digest of the live agent `key`, which must exist."""
    slug, user_slug = key.split("@")
    row: tuple[Any, ...] | None = db.execute(
        "SELECT a.display_name, a.xmin::text, a.line_digest FROM agents a "
        "JOIN users u ON u.id = a.user_id WHERE u.slug = %s AND a.slug = %s "
        "AND a.deleted_at IS NULL",
        (user_slug, slug),
    ).fetchone()
    assert row is not None, key
    return row


def test_a_second_run_of_the_same_lines_reads_none_of_them_and_rewrites_nothing(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    items = [user_item(f"{p}-u{i}") for i in range(3)] + [
        agent_item(f"bot{j}@{p}-u{i}", metadata={"j": j}) for i in range(3) for j in range(4)
    ]
    first = run_backfill(client, items)
    assert first["counts"]["created"] == 15 and chunks_stored(db, first["id"]) > 0
    before = agent_row(db, f"bot2@{p}-u1")
    assert before[2] is not None, "the chunk apply stores the line's digest"
    counted = unchanged_items_metric(client)

    again = run_backfill(client, items)
    assert again["status"] == "completed"
    assert again["counts"] == {
        "received": 15,
        "created": 0,
        "updated": 0,
        "unchanged": 15,
        "superseded": 0,
        "failed": 0,
    }
    assert chunks_stored(db, again["id"]) == 0
    assert agent_row(db, f"bot2@{p}-u1") == before
    after = unchanged_items_metric(client)
    assert (after["user"] - counted["user"], after["agent"] - counted["agent"]) == (3, 12)


def unchanged_items_metric(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    found = {"user": 0.0, "agent": 0.0}
    for kind in found:
        prefix_ = f'idmirror_backfill_items_total{{kind="{kind}",outcome="unchanged"}} '
        found[kind] = sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix_)
        )
    return found


def test_a_live_write_clears_the_digest_so_the_line_is_read_and_applied_again(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    user, agent = user_item(f"{p}-u"), agent_item(f"bot@{p}-u", display_name="From file")
    run_backfill(client, [user, agent])
    live = client.put(f"/v1/internal/agents/bot@{p}-u", json={"display_name": "Live"})
    assert live.status_code == 200 and live.json()["outcome"] == "updated"
    assert agent_row(db, f"bot@{p}-u")[2] is None

    # A newer snapshot: the file's line is read again and wins over the live write.
    again = run_backfill(client, [user, agent])
    assert again["counts"]["updated"] == 1 and again["counts"]["unchanged"] == 1
    assert chunks_stored(db, again["id"]) == 1  # the agent's chunk; the user was known
    assert agent_row(db, f"bot@{p}-u")[0] == "From file"

    third = run_backfill(client, [user, agent])
    assert third["counts"]["unchanged"] == 2 and chunks_stored(db, third["id"]) == 0


def test_only_the_lines_that_changed_among_known_ones_are_read_and_applied(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    users = [user_item(f"{p}-u{i}", plan="free") for i in range(4)]
    agents = [
        agent_item(f"bot{j}@{p}-u{i}", display_name="Old") for i in range(4) for j in range(5)
    ]
    run_backfill(client, [*users, *agents])
    # Changed lines between unchanged ones, of several owners: each answer of a lookup must
    # land on its own line.
    users[2] = {**users[2], "plan": "pro"}
    for n in (0, 7, 13, 19):
        agents[n] = {**agents[n], "display_name": "New"}
    run = run_backfill(client, [*users, *agents])
    assert run["counts"] == {
        "received": 24,
        "created": 0,
        "updated": 5,
        "unchanged": 19,
        "superseded": 0,
        "failed": 0,
    }
    names = {a["key"]: agent_row(db, a["key"])[0] for a in agents}
    assert names == {a["key"]: a["display_name"] for a in agents}
    plan = scalar(db, "SELECT plan FROM users WHERE slug = %s", (f"{p}-u2",))
    assert plan == "pro"

    again = run_backfill(client, [*users, *agents])
    assert again["counts"]["unchanged"] == 24 and chunks_stored(db, again["id"]) == 0


def test_an_identical_live_write_keeps_the_digest(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    user, agent = user_item(f"{p}-u"), agent_item(f"bot@{p}-u", display_name="Same")
    run_backfill(client, [user, agent])
    body = {"display_name": "Same"}
    assert client.put(f"/v1/internal/agents/bot@{p}-u", json=body).json()["outcome"] == "unchanged"
    again = run_backfill(client, [user, agent])
    assert again["counts"]["unchanged"] == 2 and chunks_stored(db, again["id"]) == 0


def test_a_key_that_came_earlier_in_the_input_is_read_in_order(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    user, old = user_item(f"{p}-u"), agent_item(f"bot@{p}-u", display_name="Old")
    run_backfill(client, [user, old])
    # The row holds the old line's digest; a newer line of the key comes first, then the old
    # line again. Read in order, the old line is the last word.
    new = agent_item(f"bot@{p}-u", display_name="New")
    run = run_backfill(client, [user, new, old])
    assert run["counts"]["failed"] == 0
    assert agent_row(db, f"bot@{p}-u")[0] == "Old"


def test_an_agent_whose_owner_slug_an_earlier_user_line_moves_is_read(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    owner = user_item(f"{p}-a")
    bot = agent_item(f"bot@{p}-a", display_name="Owner's bot")
    run_backfill(client, [owner, bot])

    # The owner moves to slug b: the same agent line now names a user that no longer exists.
    # Found through the slug as it was, it would pass for unchanged.
    moved = {**owner, "slug": f"{p}-b"}
    run = run_backfill(client, [moved, bot])
    assert run["counts"] == {
        "received": 2,
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "superseded": 0,
        "failed": 1,
    }
    assert agent_row(db, f"bot@{p}-b")[0] == "Owner's bot"


def test_a_line_whose_key_misleads_the_pattern_does_not_find_the_row_its_real_key_wrote(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """The pattern takes the only plain "key" of this line, the one in metadata; validation
    reads the escaped one. Once the owner has moved to the metadata's slug, that slug leads to
    the very row the line wrote: the line must be read, and fail as its real key now does."""
    p = prefix()
    owner = user_item(f"{p}-s")
    line = (
        f'{{"type": "agent", "\\u006bey": "bot@{p}-s", "display_name": "Bot", '
        f'"metadata": {{"key": "bot@{p}-t"}}}}'
    )
    assert run_backfill(client, [owner, line])["counts"]["created"] == 2
    body = {"email": owner["email"], "slug": f"{p}-t"}
    moved = client.put(f"/v1/internal/users/{owner['id']}", json=body)
    assert moved.status_code == 200, moved.text
    assert agent_row(db, f"bot@{p}-t")[0] == "Bot"

    again = run_backfill(client, [line])
    assert again["counts"]["unchanged"] == 0 and again["counts"]["failed"] == 1, again["counts"]


def test_a_deleted_agent_is_not_known(client: httpx.Client, db: psycopg.Connection[Any]) -> None:
    p = prefix()
    items = [user_item(f"{p}-u"), agent_item(f"bot@{p}-u")]
    run_backfill(client, items)
    first_id = client.get(f"/v1/agents/bot@{p}-u").json()["id"]
    assert client.delete(f"/v1/internal/agents/bot@{p}-u").json()["outcome"] == "deleted"

    again = run_backfill(client, items)
    assert again["counts"]["created"] == 1 and again["counts"]["unchanged"] == 1
    assert client.get(f"/v1/agents/bot@{p}-u").json()["id"] != first_id


def test_a_snapshot_older_than_the_rows_reads_the_lines_and_finds_them_superseded(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    items = [user_item(f"{p}-u"), agent_item(f"bot@{p}-u")]
    run_backfill(client, items)
    old = iso(datetime.now(UTC) - timedelta(hours=1))
    run = run_backfill(client, items, snapshot_at=old)
    assert run["counts"]["superseded"] == 2 and run["counts"]["unchanged"] == 0
    # The agent alone too (with its user line, it would be read because its user's was).
    run = run_backfill(client, items[1:], snapshot_at=old)
    assert run["counts"]["superseded"] == 1 and run["counts"]["unchanged"] == 0


def test_mirror_runs_and_dry_runs_read_every_line(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    items = [user_item(f"{p}-u"), agent_item(f"bot@{p}-u")]
    run_backfill(client, items)
    for params in ({"mode": "mirror"}, {"dry_run": True}):
        run = wait_done(client, post_ndjson(client, ndjson(items), **params)["id"])
        assert run["counts"]["unchanged"] == 2, params
        assert run["status"] == "completed"
        if run["mode"] == "mirror":
            assert run["drift"]["agents"] == 0
        assert chunks_stored(db, run["id"]) == 2, params


def test_unchanged_lines_are_counted_while_the_upload_goes_on(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    users = [user_item(f"{p}-u{i}", metadata={"pad": "x" * 100}) for i in range(6_000)]
    run_backfill(client, users)
    seen_while_receiving: list[int] = []

    def body() -> Iterator[bytes]:
        yield ndjson(users)
        # The upload pauses before its end: meanwhile the known lines are counted.
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while not seen_while_receiving and datetime.now(UTC) < deadline:
            row = db.execute(
                "SELECT unchanged FROM backfills WHERE status = 'receiving' AND unchanged > 0 "
                "ORDER BY started_at DESC LIMIT 1"
            ).fetchone()
            seen_while_receiving.extend(row or ())
        yield b""

    run = wait_done(client, post_ndjson(client, body())["id"])
    assert run["counts"]["unchanged"] == 6_000 and chunks_stored(db, run["id"]) == 0
    assert seen_while_receiving and 0 < seen_while_receiving[0] < 6_000


def test_known_lines_around_a_store_are_each_counted_once(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    agents = [agent_item(f"bot{j}@{p}-u") for j in range(600)]
    run_backfill(client, [user_item(f"{p}-u"), *agents])
    # A thousand bad lines among known ones: their failures are stored in the middle of the
    # lines one piece of input counts as known, and a new agent is stored after them.
    bad = ['{"type": "agent"}'] * 1_000
    new = agent_item(f"new@{p}-u")
    run = run_backfill(client, [*agents[:300], *bad, *agents[300:], new])
    assert run["status"] == "completed", run["error"]
    assert run["counts"]["unchanged"] == 600 and run["counts"]["failed"] == 1_000
    assert run["counts"]["created"] == 1 and run["counts"]["received"] == 1_601
