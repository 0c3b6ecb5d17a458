"""The backfill benchmark's table of Postgres's time by statement: each statement the service
and the floor run is named for what it does, and the rows add up."""

from typing import Any

import psycopg
import pytest
from sqlalchemy import TextClause

from bench.backfill.floor import _MERGE_AGENTS, _MERGE_USERS
from bench.backfill.render import _statements
from bench.statements import OTHER, Usage, enable, label
from identity.backfill import slots, sql
from identity.backfill.known import _AGENTS_SQL, _USERS_SQL
from identity.backfill.store import _CHUNK


def _text(statement: TextClause | str) -> str:
    return statement if isinstance(statement, str) else statement.text


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        (sql.STATEMENTS[("agent", False)], "apply an agents chunk"),
        (sql.STATEMENTS[("agent", True)], "apply an agents chunk"),
        (sql.STATEMENTS[("user", False)], "apply a users chunk"),
        (sql.LOCK_KEYS.format(key=sql.KEYS["agent"]), "lock a chunk's keys"),
        (slots._ANY_FREE, "take an apply slot"),
        (slots._WAIT, "take an apply slot"),
        (_CHUNK, "store a chunk"),
        (_AGENTS_SQL, "look up known lines: agents"),
        (_USERS_SQL, "look up known lines: users"),
        (_MERGE_USERS, "floor: merge users"),
        (_MERGE_AGENTS, "floor: merge agents"),
        ("COPY stage_agents FROM STDIN", "floor: COPY into staging"),
    ],
)
def test_each_statement_is_named_for_what_it_does(statement: Any, name: str) -> None:
    assert label(_text(statement)).startswith(name)


def test_a_statement_it_does_not_know_is_other() -> None:
    assert label("SELECT 1") == OTHER


def test_the_table_lists_statements_by_their_time_in_the_first_run_and_adds_them_up() -> None:
    floor, first, rerun = Usage(), Usage(), Usage()
    floor.add(_MERGE_AGENTS, ms=600.0, wal=5_000_000)
    first.add(_text(_CHUNK), ms=100.0, wal=3_000_000)
    first.add(_text(sql.STATEMENTS[("agent", False)]), ms=2_000.0, wal=70_000_000)
    first.add("SELECT 1", ms=1.0, wal=0)
    rerun.add(_AGENTS_SQL, ms=300.0, wal=0)
    rendered = _statements(100_000, {"floor": floor, "first": first, "rerun": rerun})
    rows = [line for line in rendered.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| apply an agents chunk (classify, write, key history, FK checks)",
        "| store a chunk (its lines as JSON)",
        "| floor: merge agents",
        "| look up known lines: agents",
        f"| {OTHER}",
        "| total",
    ]
    # 2,000 ms over 100,000 lines is 20 us a line, and its 70 MB of WAL 700 bytes.
    assert rows[0].split(" | ")[1:] == ["0.00", "20.00", "0.00", "700 |"]
    assert rows[-1].split(" | ")[1:] == ["6.00", "21.01", "3.00", "730 |"]


def test_a_run_without_counts_has_no_table() -> None:
    assert _statements(1_000, {"first": Usage()}) == ""


def test_a_server_without_the_library_preloaded_counts_nothing(
    db: psycopg.Connection[Any],
) -> None:
    loaded = db.execute("SHOW shared_preload_libraries").fetchone()
    if loaded is not None and "pg_stat_statements" in str(loaded[0]):
        pytest.skip("this server preloads pg_stat_statements")
    assert enable(db) is False
    assert db.execute(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
    ).fetchone() == (0,)
