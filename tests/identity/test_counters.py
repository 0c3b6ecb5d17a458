"""Counters in shards: transactions on two connections add to one counter without waiting for
each other, and the sum is what was added."""

import uuid
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import counters
from identity.db import get_engine


def _shard(conn: Any) -> int:
    pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    conn.rollback()
    return pid % counters.SHARDS


def test_two_transactions_add_to_one_counter_without_waiting_for_each_other(
    domain: None, db: psycopg.Connection[Any]
) -> None:
    name = f"test_total_{uuid.uuid4().hex[:8]}"
    engine = get_engine()
    with engine.connect() as first:
        held = []  # connections of the first's shard, kept open so the pool lends others
        second = engine.connect()
        while _shard(second) == _shard(first):
            held.append(second)
            second = engine.connect()
        try:
            with first.begin():
                counters.add(Session(bind=first), [(name, "{}", 2.0)])
                # The first has not committed: without shards the second would wait for it.
                with second.begin():
                    second.execute(text("SET LOCAL lock_timeout = '2s'"))
                    counters.add(Session(bind=second), [(name, "{}", 3.0)])
        finally:
            second.close()
            for conn in held:
                conn.close()

    rows = db.execute(
        "SELECT count(*), sum(value) FROM metric_counters WHERE name = %s", (name,)
    ).fetchone()
    assert rows == (2, 5.0)
    summed = db.execute(f"SELECT value FROM ({counters.SUMMED}) s WHERE name = %s", (name,))
    assert summed.fetchall() == [(5.0,)]
