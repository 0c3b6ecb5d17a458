"""Plans kept for the known-lines lookups (identity/backfill/known.py). psycopg prepares a
statement it sees often, and PostgreSQL may then run one plan, made from the tables as they
were, for the rest of an upload. A first load fills `users` and `agents` meanwhile: a plan made
while they were empty must not read them whole for every line."""

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.access import Actor
from identity.backfill import known as known_module
from identity.backfill.known import KnownLines, asking
from identity.db import transaction
from identity.schemas import to_version
from tests.identity.backfill.uploads import agent_item, ndjson, user_item

# What this transaction's statements read of the copies (the first schema on the search path):
# whole scans, and the rows those and index scans read.
_READS = text(
    "SELECT relname, seq_scan, seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables "
    "WHERE schemaname = current_schema()"
)
# 2,000 users with 10 agents each, as a first load leaves them (no ANALYZE since).
_FILL = (
    """INSERT INTO users (id, email, slug, plan, version, created_at, updated_at)
    SELECT gen_random_uuid(), 'u' || i || '@example.com', 'u' || i, 'free', 1, now(), now()
    FROM generate_series(0, 1999) AS i""",
    """INSERT INTO agents (id, user_id, slug, display_name, version, created_at, updated_at)
    SELECT u.slug || '-' || j, u.id, 'bot' || j, 'Bot', 1, now(), now()
    FROM users u, generate_series(0, 9) AS j""",
)

Reads = dict[str, tuple[int, int]]  # table: (whole scans, rows read)


def _now(session: Session) -> Reads:
    return {table: (scans, rows) for table, scans, rows in session.execute(_READS)}


def _copies(
    reads: Reads, *, generic_plans: bool = False
) -> Callable[[], AbstractContextManager[Session]]:
    """A transaction factory whose transaction sees empty copies of `users` and `agents`
    (indexes included, analyzed empty) in a schema of its own, notes in `reads` what was read
    of them, and rolls back. With `generic_plans`, its connection prepares every statement at
    once and keeps the plan made then, as PostgreSQL may choose to after a few runs."""
    schema = f"lookups_{uuid.uuid4().hex[:8]}"

    @contextmanager
    def on_copies() -> Iterator[Session]:
        with transaction() as session:
            session.execute(text(f"CREATE SCHEMA {schema}"))
            for table in ("users", "agents"):
                session.execute(text(f"CREATE TABLE {schema}.{table} (LIKE {table} INCLUDING ALL)"))
                session.execute(text(f"ANALYZE {schema}.{table}"))
            session.execute(text(f"SET LOCAL search_path TO {schema}, public"))
            before = _now(session)
            driver = session.connection().connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            if generic_plans:
                session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
                driver.prepare_threshold = 0
            try:
                yield session
                for table, (scans, rows) in _now(session).items():
                    reads[table] = (scans - before[table][0], rows - before[table][1])
            finally:
                if generic_plans:  # its prepared statements name tables that will be gone
                    session.connection().invalidate()
                session.rollback()

    return on_copies


def _known() -> KnownLines:
    return KnownLines(to_version(datetime.now(UTC)), writer=Actor(), allow_private_webhooks=False)


def test_lookups_probe_indexes_even_on_tables_analyzed_empty(domain: None) -> None:
    """Made on tables analyzed empty, a kept plan scanned `users` whole for every line while a
    first load filled it (seconds a part). The lookups never scan the tables."""
    users = [user_item(f"u{i}") for i in range(8)]
    lines = ndjson([*users, *(agent_item(f"bot@u{i}") for i in range(8))])
    known = _known()
    reads: Reads = {}
    with asking(_copies(reads), known) as asker:
        lookup = known.ask(lines.splitlines())
        asker.send(lookup)
        asker.receive(lookup)
    assert reads == {"agents": (0, 0), "users": (0, 0)}


def test_a_plan_made_on_empty_tables_probes_a_key_per_line_once_they_are_full(
    domain: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan made while `agents` was empty read a whole index of live agents for every line
    once a first load had filled the table (20 to 50 seconds a part, the upload stalled): any
    partial index whose condition the lookup implies could be read in place of the key's
    entry. Made on empty tables and run on full ones, a lookup fetches a row or so a line."""
    lines = ndjson([agent_item(f"bot{i}@u{i}") for i in range(8)]).splitlines()
    known = _known()
    reads: Reads = {}
    monkeypatch.setattr(known_module, "LANES", 1)  # both lookups on the connection of the plan
    with asking(_copies(reads, generic_plans=True), known) as asker:
        empty = known.ask(lines)
        asker.send(empty)
        asker.receive(empty)  # the plan is made now, on empty tables
        (connection,) = asker._lanes
        for statement in _FILL:
            connection.execute(statement)
        full = known.ask(lines)
        asker.send(full)
        asker.receive(full)
    scans, rows = reads["agents"]
    assert scans == 0 and rows <= 2 * len(lines), reads
