"""Postgres's time by statement over one timed window, from pg_stat_statements.

The process-level CPU of a benchmark says how much Postgres did; this says what for. A stack
started with `statement_stats` loads the extension (the embedded server is restarted once with
it preloaded); an external server must preload it itself, or the benchmark reports none.
Times are the statements' execution time in their backends (wall clock, so they include waits
for locks and for a core), top-level statements only: the foreign-key checks and key-history
rows a chunk's statement writes are counted in that statement.
"""

import re
from dataclasses import dataclass, field

import psycopg

# What a statement does, found in its text (pg_stat_statements' normalised form). First match.
LABELS: tuple[tuple[str, str], ...] = (
    (r"INSERT INTO floor\.users", "floor: merge users"),
    (r"INSERT INTO floor\.agents", "floor: merge agents"),
    (r"COPY stage_", "floor: COPY into staging"),
    (r"h text, d jsonb\)", "apply an agents chunk (classify, write, key history, FK checks)"),
    (r"h text, id uuid", "apply a users chunk (classify, write, key history)"),
    (r"advisory_xact_lock\([^(),]+,", "take an apply slot"),  # the two-key form
    (r"pg_advisory_xact_lock", "lock a chunk's keys"),
    (r"INSERT INTO backfill_chunks", "store a chunk (its lines as JSON)"),
    (r"DELETE FROM backfill_chunks", "delete a finished run's chunks"),
    (r"WITH owners AS MATERIALIZED", "look up known lines: agents"),
    (r"u\.line_digest = k\.digest", "look up known lines: users"),
    (r"UPDATE backfills SET created", "count a chunk's outcomes"),
    (r"UPDATE backfills SET chunks", "count a store's lines"),
    (r"FROM backfill_chunks", "find, mark and order chunks"),
)
OTHER = "other statements"


def label(query: str) -> str:
    """The name of what `query` does, or OTHER."""
    for pattern, name in LABELS:
        if re.search(pattern, query):
            return name
    return OTHER


@dataclass
class Usage:
    """Milliseconds of execution and bytes of WAL by label over one window."""

    ms: dict[str, float] = field(default_factory=dict)
    wal: dict[str, int] = field(default_factory=dict)

    def add(self, query: str, ms: float, wal: int) -> None:
        name = label(query)
        self.ms[name] = self.ms.get(name, 0.0) + ms
        self.wal[name] = self.wal.get(name, 0) + wal


def enable(conn: psycopg.Connection) -> bool:
    """Create the extension in this database if its library is loaded; whether it is."""
    loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
    if loaded is None or "pg_stat_statements" not in str(loaded[0]):
        return False
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


def reset(conn: psycopg.Connection) -> None:
    """Start a window: forget what was counted so far."""
    conn.execute("SELECT pg_stat_statements_reset()")


def take(conn: psycopg.Connection) -> Usage:
    """What this database's top-level statements used since the last reset."""
    usage = Usage()
    rows = conn.execute(
        "SELECT query, total_exec_time, wal_bytes FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        # Not the benchmark's own housekeeping: the reset, and the checkpoint after the floor.
        "AND toplevel AND query !~* '^\\s*(SELECT pg_stat_statements_reset|CHECKPOINT)'"
    ).fetchall()
    for query, ms, wal in rows:
        usage.add(query, float(ms), int(wal))
    return usage
