"""Lines an earlier backfill applied are counted unchanged without being read again, and only
when reading them would have said so (identity/backfill/known.py)."""

import importlib.metadata
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from identity.access import Actor
from identity.backfill import known as known_lines
from identity.backfill.items import ItemParser, Parsed
from identity.backfill.known import Candidate, KnownLines, line_digest
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


# --- the order rules, without a database ---------------------------------------------------


def known(
    kind: str, key: str, user_slug: str | None = None, stored_slug: str | None = None
) -> Candidate:
    return Candidate(kind, key, user_slug, b"", known=True, stored_slug=stored_slug)


def take(lines: KnownLines, candidate: Candidate) -> bool:
    """Whether `lines` takes the candidate as unchanged, a part of one line."""
    return lines.take_run([candidate], 0, Counter()) == 1


def test_a_key_is_known_only_the_first_time_it_comes() -> None:
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    assert take(lines, known("agent", "agent:bot@a", "a"))
    assert not take(lines, known("agent", "agent:bot@a", "a"))
    lines.read("agent", "agent:other@a", None, None)
    assert not take(lines, known("agent", "agent:other@a", "a"))


def test_a_run_of_known_lines_stops_at_the_first_line_refused_and_counts_what_it_took() -> None:
    lines, counts = KnownLines(1, writer=Actor(), allow_private_webhooks=False), Counter[str]()
    uid = "3b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"
    part = [
        known("user", f"user:{uid}"),
        known("agent", "agent:bot@a", "a"),
        None,  # not looked up
        known("agent", "agent:bot@a", "a"),  # its key again
        known("agent", "agent:bot2@a", "a"),
        Candidate("agent", "agent:bot3@a", "a", b""),  # looked up, not known
    ]
    assert lines.take_run(part, 0, counts) == 2 and counts == {"user": 1, "agent": 1}
    assert lines.take_run(part, 3, counts) == 3
    untouched = Counter[str]()
    assert lines.take_run(part, 2, untouched) == 2 and not untouched  # nothing to store
    assert lines.take_run(part, 4, counts) == 5 and counts == {"user": 1, "agent": 2}
    assert lines.take_run(part, 6, counts) == 6


def test_user_lines_that_are_read_move_their_old_and_new_slugs() -> None:
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    uid = "0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"
    lines.read("user", f"user:{uid}", "new", known("user", f"user:{uid}", stored_slug="old"))
    assert not take(lines, known("agent", "agent:bot@new", "new"))
    assert not take(lines, known("agent", "agent:bot@old", "old"))
    assert take(lines, known("agent", "agent:bot@other", "other"))
    # A user read without a lookup (its stored slug unknown) turns agents off for the run.
    lines.read("user", "user:1b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a", "x", None)
    assert not take(lines, known("agent", "agent:bot2@other", "other"))
    assert take(lines, known("user", "user:2b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            {"type": "agent", "key": "bot@govind", "display_name": "B"},
            ("agent", "agent:bot@govind"),
        ),
        (
            {"key": "bot@govind", "type": "agent", "display_name": "B"},
            ("agent", "agent:bot@govind"),
        ),
        ({"type": "agent", "key": "bot@govind", "metadata": {"key": "x"}}, None),
        ({"type": "agent", "key": "Bot@govind"}, None),
        (
            {"type": "user", "id": "0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a", "slug": "g"},
            ("user", "user:0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"),
        ),
        ({"type": "user", "id": "0B7C2A0E-3F0C-4A8E-9A55-0D1C8C1F2B3A", "slug": "g"}, None),
        (
            {"type": "user", "id": "0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a", "metadata": {"id": 1}},
            None,
        ),
    ],
)
def test_lines_are_looked_up_only_when_they_name_their_key_plainly(
    line: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    raw = json.dumps(line).encode()
    candidate = KnownLines(1, writer=Actor(), allow_private_webhooks=False).candidate(raw)
    assert (candidate and (candidate.kind, candidate.key)) == expected
    if candidate is not None:
        digest = line_digest(raw, candidate.key, allow_private_webhooks=False)
        assert candidate.digest.hex() == digest


def test_a_candidate_is_digested_as_the_parser_digests_the_line_it_stores() -> None:
    """The lookup matches the candidate's digest against the one the chunk apply stored, which
    the parser computed from the key it validated."""
    parser = ItemParser(1, allow_private_webhooks=False)
    for item in (user_item("govind"), agent_item("bot@govind", display_name="B")):
        raw = json.dumps(item).encode()
        candidate = KnownLines(1, writer=Actor(), allow_private_webhooks=False).candidate(raw)
        parsed = parser.parse(1, raw)
        assert candidate is not None and isinstance(parsed, Parsed)
        assert candidate.key == parsed.key
        assert candidate.digest.hex() == json.loads(parsed.stored)["h"]


def test_the_digest_depends_on_the_private_webhook_setting() -> None:
    raw = json.dumps(agent_item("bot@govind", webhook_url="http://10.0.0.5/hook")).encode()
    key = "agent:bot@govind"
    assert line_digest(raw, key, allow_private_webhooks=True) != line_digest(
        raw, key, allow_private_webhooks=False
    )


def test_the_digest_depends_on_the_versions_of_the_libraries_that_validate_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upgrade of email-validator may normalise an email otherwise: the rows a line wrote
    before must not pass for what the line means now."""
    installed = importlib.metadata.version
    before = known_lines._seed(False)
    for name in known_lines.VALIDATORS:
        monkeypatch.setattr(
            importlib.metadata, "version", lambda d, n=name: "0.0.1" if d == n else installed(d)
        )
        assert known_lines._seed(False) != before, name
    monkeypatch.undo()
    assert known_lines._seed(False) == before


def test_only_pieces_of_agent_lines_that_find_none_back_off() -> None:
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    users = [json.dumps(user_item(f"u{i}")).encode() for i in range(3)]
    agents = [json.dumps(agent_item(f"bot{i}@u0")).encode() for i in range(3)]

    def asked(piece: list[bytes]) -> list[str]:
        """What the piece's lookup asks about; each answer finds nothing."""
        lookup = lines.ask(piece)
        lines.settle(lookup)
        return ["agents"] * bool(lookup.agents) + ["users"] * bool(lookup.users)

    # A first load's users: nothing known, and no reason to skip agents.
    assert [asked(users) for _ in range(5)] == [["users"]] * 5
    assert asked(agents) == ["agents"]
    # The agent piece found none: the next one skips its lookups, the one after asks again.
    assert asked(agents) == []
    assert asked(agents) == ["agents"]
