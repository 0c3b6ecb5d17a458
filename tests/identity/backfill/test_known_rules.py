"""The rules of known lines that need no database: which lines are looked up, what their digest
covers, and in which order known lines are taken (identity/backfill/known.py)."""

import importlib.metadata
import json
from collections import Counter
from typing import Any

import pytest

from identity.access import Actor
from identity.backfill import digests
from identity.backfill.digests import line_digest, name_of
from identity.backfill.items import ItemParser, Parsed
from identity.backfill.known import Candidate, KnownLines, Lookup
from tests.identity.backfill.uploads import agent_item, user_item


def answered(*lines: tuple[str, bool] | None, stored: dict[str, str] | None = None) -> Lookup:
    """A part's lookup as its answer left it: each line not looked up (None), or looked up as
    (ledger key, known); `stored` gives users' slugs as their rows have them."""
    found: list[Candidate | None] = []
    agents: list[Candidate] = []
    users: list[Candidate] = []
    flags = {"agent": "", "user": ""}
    for line in lines:
        candidate = None
        if line is not None:
            key, known = line
            kind, name = key.split(":")[0], name_of(key)
            asked = agents if kind == "agent" else users
            user_slug = name.partition(b"@")[2] if kind == "agent" else None
            candidate = (name, user_slug, b"", len(asked))
            asked.append(candidate)
            flags[kind] += "1" if known else "0"
        found.append(candidate)
    slugs = [(stored or {}).get(f"user:{c[0].decode()}", "") for c in users]
    return Lookup(found, agents, users, flags["agent"], flags["user"], slugs)


def take(lines: KnownLines, key: str) -> bool:
    """Whether `lines` takes a known line of `key` as unchanged, a part of one line."""
    return lines.take_run(answered((key, True)), 0, Counter()) == 1


def test_a_key_is_known_only_the_first_time_it_comes() -> None:
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    assert take(lines, "agent:bot@a")
    assert not take(lines, "agent:bot@a")
    lines.read("agent", "agent:other@a", None, answered(None), 0)
    assert not take(lines, "agent:other@a")


def test_a_run_of_known_lines_stops_at_the_first_line_refused_and_counts_what_it_took() -> None:
    lines, counts = KnownLines(1, writer=Actor(), allow_private_webhooks=False), Counter[str]()
    uid = "3b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"
    part = answered(
        (f"user:{uid}", True),
        ("agent:bot@a", True),
        None,  # not looked up
        ("agent:bot@a", True),  # its key again
        ("agent:bot2@a", True),
        ("agent:bot3@a", False),  # looked up, not known
    )
    assert lines.take_run(part, 0, counts) == 2 and counts == {"user": 1, "agent": 1}
    assert lines.take_run(part, 3, counts) == 3
    untouched = Counter[str]()
    assert lines.take_run(part, 2, untouched) == 2 and not untouched  # nothing to store
    assert lines.take_run(part, 4, counts) == 5 and counts == {"user": 1, "agent": 2}
    assert lines.take_run(part, 6, counts) == 6


def test_user_lines_that_are_read_move_their_old_and_new_slugs() -> None:
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    key = "user:0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"
    lines.read("user", key, "new", answered((key, True), stored={key: "old"}), 0)
    assert not take(lines, "agent:bot@new")
    assert not take(lines, "agent:bot@old")
    assert take(lines, "agent:bot@other")
    # A user read without a lookup (its stored slug unknown) turns agents off for the run.
    lines.read("user", "user:1b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a", "x", answered(None), 0)
    assert not take(lines, "agent:bot2@other")
    assert take(lines, "user:2b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a")


def test_a_user_read_as_another_key_than_it_was_asked_as_turns_agents_off() -> None:
    """Its stored slug, asked for another key, says nothing of the row it wrote."""
    lines = KnownLines(1, writer=Actor(), allow_private_webhooks=False)
    asked = "user:0b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a"
    part = answered((asked, False), stored={asked: "old"})
    lines.read("user", "user:1b7c2a0e-3f0c-4a8e-9a55-0d1c8c1f2b3a", "new", part, 0)
    assert not take(lines, "agent:bot@other")


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
    if candidate is None:
        assert expected is None
        return
    name, user_slug, digest, _ = candidate
    kind = "user" if user_slug is None else "agent"
    assert (kind, f"{kind}:{name.decode()}") == expected
    if user_slug is not None:
        assert user_slug == name.partition(b"@")[2]
    assert digest.hex() == line_digest(raw, f"{kind}:{name.decode()}", allow_private_webhooks=False)


def test_a_candidate_is_digested_as_the_parser_digests_the_line_it_stores() -> None:
    """The lookup matches the candidate's digest against the one the chunk apply stored, which
    the parser computed from the key it validated."""
    parser = ItemParser(1, allow_private_webhooks=False)
    for item in (user_item("govind"), agent_item("bot@govind", display_name="B")):
        raw = json.dumps(item).encode()
        candidate = KnownLines(1, writer=Actor(), allow_private_webhooks=False).candidate(raw)
        parsed = parser.parse(1, raw)
        assert candidate is not None and isinstance(parsed, Parsed)
        assert candidate[0] == name_of(parsed.key)
        assert candidate[2].hex() == json.loads(parsed.stored)["h"]


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
    before = digests._seeds()[False]
    for name in digests.VALIDATORS:
        monkeypatch.setattr(
            importlib.metadata, "version", lambda d, n=name: "0.0.1" if d == n else installed(d)
        )
        assert digests._seeds()[False] != before, name
    monkeypatch.undo()
    assert digests._seeds()[False] == before


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
