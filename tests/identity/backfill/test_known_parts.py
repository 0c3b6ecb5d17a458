"""Known lines are looked up a part at a time, each part's lookup on its way while the part
before is read (identity/backfill/receive.py, known.py): every answer lands on its own line,
and a lookup that fails fails the read and leaves its connection usable."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from identity.access import Actor
from identity.backfill import receive
from identity.backfill.items import Parsed
from identity.backfill.pull import PullReceiver
from identity.backfill.receive import LOOKUP_LINES, Receiver
from identity.backfill.upload import UploadReceiver
from identity.db import get_engine, transaction
from identity.schemas import to_version
from identity.settings import get_settings
from tests.identity.backfill.uploads import agent_item, ndjson, prefix, run_backfill, user_item


class _NotingReads(Receiver):
    """A receiver that notes the lines it reads the long way (its lookups are real)."""

    read_lines: list[int]

    def _take(self, line: int, raw: bytes) -> Parsed | None:
        self.read_lines.append(line)
        return super()._take(line, raw)


class _ReadingOnly(_NotingReads, UploadReceiver):
    """An upload receiver that stores nothing: only its verdicts are compared."""

    def __init__(self, snapshot_version: int, transaction: Any = transaction) -> None:
        super().__init__(
            str(uuid.uuid4()), snapshot_version, get_settings(), transaction, known_lines=Actor()
        )
        self.read_lines = []

    def _write(self, chunks: Any, state: Any = None) -> None:
        pass


def test_lines_looked_up_in_parts_get_the_verdicts_of_one_lookup_per_piece(
    client: httpx.Client, domain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part's lookup is answered while the part before is read: every answer must still
    land on its own line, with changed lines on both sides of a part's edge."""
    p = prefix()
    users = [user_item(f"{p}-u{i}") for i in range(30)]
    agents = [agent_item(f"bot{j}@{p}-u{i}") for j in range(100) for i in range(30)]
    run_backfill(client, [*users, *agents])
    changed = [0, 998, 999, 1000, 1001, 2500, len(agents) - 1]
    for n in changed:
        agents[n] = {**agents[n], "display_name": "New"}
    users[5] = {**users[5], "plan": "pro"}  # read: the agents of its slug are read too
    body = ndjson([*users, *agents, agents[10]])  # a key again at the end: read
    snapshot = to_version(datetime.now(UTC))

    verdicts = []
    for part in (7, LOOKUP_LINES, 10**6):  # many parts; the service's; one per piece
        monkeypatch.setattr(receive, "LOOKUP_LINES", part)
        receiver = _ReadingOnly(snapshot)
        try:
            receiver.feed(body)
        finally:
            receiver.close()
        verdicts.append((receiver.read_lines, dict(receiver._unchanged)))
    line_of_agent = {n: len(users) + 1 + n for n in range(len(agents))}
    read = sorted(
        {6, len(users) + len(agents) + 1}
        | {line_of_agent[n] for n in changed}
        | {line_of_agent[n] for n in range(5, len(agents), 30)}
    )
    unchanged = {"user": 29, "agent": len(agents) + 1 - len(read) + 1}
    assert verdicts == [(read, unchanged)] * 3

    monkeypatch.undo()
    run = run_backfill(client, [*users, *agents, agents[10]])
    assert run["counts"] == {
        "received": len(users) + len(agents) + 1,
        "created": 0,
        "updated": 1 + len(changed),
        "unchanged": len(users) + len(agents) - len(changed),
        "superseded": 0,
        "failed": 0,
    }
    assert client.get(f"/v1/agents/bot33@{p}-u10").json()["display_name"] == "New"  # n = 1000


def test_a_lookup_that_fails_fails_the_read_and_its_connection_is_used_again(
    client: httpx.Client, domain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = prefix()
    items = [user_item(f"{p}-u")] + [agent_item(f"bot{j}@{p}-u") for j in range(40)]
    run_backfill(client, items)
    monkeypatch.setattr(receive, "LOOKUP_LINES", 10)  # several parts in flight, one by one

    @contextmanager
    def tables_not_found() -> Iterator[Session]:
        with transaction() as session:
            session.execute(text("SET LOCAL search_path TO pg_catalog"))
            yield session

    snapshot = to_version(datetime.now(UTC))
    failing = _ReadingOnly(snapshot, tables_not_found)
    with pytest.raises(DBAPIError, match="does not exist"):
        failing.feed(ndjson(items))
    failing.close()
    assert failing.read_lines == [] and not failing._unchanged

    # The pool's connections came back out of pipeline mode, their transactions ended.
    for _ in range(get_engine().pool.size() + 1):  # type: ignore[attr-defined]
        receiver = _ReadingOnly(snapshot)
        receiver.feed(ndjson(items))
        assert receiver._unchanged == {"user": 1, "agent": 40}


def test_a_piece_with_nothing_to_look_up_opens_no_transaction() -> None:
    opened = []

    @contextmanager
    def counted() -> Iterator[Session]:
        opened.append(1)
        with transaction() as session:
            yield session

    receiver = _ReadingOnly(to_version(datetime.now(UTC)), counted)
    try:
        # Lines that do not name a key plainly (the key written with an escape) ask nothing.
        receiver.feed(b'{"type": "agent", "key": "bot\\u0031@someone"}\n' * 50)
    finally:
        receiver.close()
    assert opened == [] and receiver.read_lines == list(range(1, 51))


class _PullReading(_NotingReads, PullReceiver):
    """A pull receiver from `first_line` on."""

    def __init__(self, first_line: int) -> None:
        snapshot = to_version(datetime.now(UTC))
        super().__init__(
            str(uuid.uuid4()),
            snapshot,
            get_settings(),
            transaction,
            first_line=first_line,
            stored=(0, 0),
            known_lines=Actor(),
        )
        self.read_lines = []


def test_a_pull_resumed_from_a_checkpoint_reads_every_line(
    client: httpx.Client, domain: None
) -> None:
    """Counting lines known keeps their order by what came before them in the input (keys seen,
    slugs moved); a pull resumed from its checkpoint has forgotten that, so it reads them all."""
    p = prefix()
    items = [user_item(f"{p}-u"), agent_item(f"bot@{p}-u")]
    run_backfill(client, items)
    verdicts = []
    for first_line in (0, 40):  # a pull's start, and one resumed after 40 lines
        receiver = _PullReading(first_line)
        receiver._read(list(ndjson(items).splitlines()))
        verdicts.append((dict(receiver._unchanged), receiver.read_lines))
    assert verdicts == [({"user": 1, "agent": 1}, []), ({}, [41, 42])]
