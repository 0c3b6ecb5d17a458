"""Backfill chunks hold their keys' advisory locks a few at a time, however many workers apply
them: no more chunks at once than the lock budget has room for (identity/backfill/slots.py), so
a scaled-out worker fleet cannot fill Postgres's shared lock table."""

import time
from typing import Any

import httpx
import psycopg

from identity.backfill.slots import SLOT_CLASS
from identity.db import libpq_url
from tests.conftest import OwnStack
from tests.identity.backfill.uploads import (
    agent_item,
    ndjson,
    post_ndjson,
    prefix,
    run_backfill,
    user_item,
    wait_done,
)
from tests.stack import scalar, wait_until

# Backends other than the caller's that hold or wait for a key's lock (one-key advisory locks),
# and those waiting for an apply slot (two-key advisory locks of SLOT_CLASS).
_KEY_LOCKERS = """
    SELECT count(DISTINCT pid) FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND pid <> pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_SLOT_WAITERS = """
    SELECT count(DISTINCT pid) FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 2 AND classid = %s AND NOT granted
"""


def test_chunks_past_the_lock_budget_wait_for_a_slot_before_taking_any_key(
    own_stack: OwnStack,
) -> None:
    # Chunks of 10 and a budget of 20 locks: 2 slots for 4 worker processes.
    stack = own_stack(
        "api",
        "worker",
        worker_args=["--concurrency", "4"],
        backfill_chunk_size="10",
        backfill_lock_budget="20",
    )
    p = prefix()
    users = [user_item(f"{p}-u{i}") for i in range(4)]
    agents = [agent_item(f"a{i}@{p}-u{i % 4}") for i in range(200)]
    with (
        psycopg.connect(libpq_url(stack.database_url), autocommit=True) as holder,
        psycopg.connect(libpq_url(stack.database_url), autocommit=True) as watcher,
        stack.client() as client,
    ):
        # Every agent's key is busy, as if live writes held them: each agent chunk that gets a
        # slot waits on its first key while it holds the slot.
        holder.execute(
            "SELECT count(pg_advisory_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) k",
            ([f"agent:{a['key']}" for a in agents],),
        )
        run = post_ndjson(client, ndjson(users + agents))

        def lockers() -> tuple[int, int]:
            keys = scalar(watcher, _KEY_LOCKERS) - 1  # the holder's own locks
            return keys, scalar(watcher, _SLOT_WAITERS, (SLOT_CLASS,))

        def stalled() -> tuple[int, int] | None:
            now = lockers()
            return now if now[1] >= 2 else None

        # Two chunks wait on their keys; the other two processes wait for a slot.
        assert wait_until(stalled) == (2, 2)
        time.sleep(1)
        assert lockers() == (2, 2)
        assert scalar(watcher, "SELECT count(*) FROM agents") == 0
        holder.execute("SELECT pg_advisory_unlock_all()")
        done: dict[str, Any] = wait_done(client, run["id"])
    assert done["status"] == "completed"
    assert done["counts"]["created"] == 204 and done["counts"]["failed"] == 0


# Backends that wait for a key's lock while holding an apply slot.
_KEY_WAITERS_WITH_A_SLOT = """
    SELECT count(DISTINCT k.pid) FROM pg_locks k JOIN pg_locks s ON s.pid = k.pid
    WHERE k.locktype = 'advisory' AND k.objsubid = 1 AND NOT k.granted
      AND s.locktype = 'advisory' AND s.objsubid = 2 AND s.classid = %s AND s.granted
"""


def test_a_prune_step_takes_an_apply_slot_before_its_keys(
    client: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    p = prefix()
    user = user_item(f"{p}-u")
    keys = [f"a{i}@{p}-u" for i in range(20)]
    assert run_backfill(client, [user] + [agent_item(k) for k in keys])["status"] == "completed"
    with psycopg.connect(db.info.dsn, autocommit=True) as holder:
        # The key of the one agent the mirror run will prune is busy, as if a live write held it.
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"agent:{keys[-1]}",))
        run = post_ndjson(
            client, ndjson([user] + [agent_item(k) for k in keys[:-1]]), mode="mirror", prune=True
        )
        # The prune step waits for that key holding a slot, which it took first.
        assert wait_until(lambda: scalar(db, _KEY_WAITERS_WITH_A_SLOT, (SLOT_CLASS,)) or None) == 1
        assert client.get(f"/v1/internal/backfills/{run['id']}").json()["status"] == "running"
        holder.execute("SELECT pg_advisory_unlock_all()")
    done = wait_done(client, run["id"])
    assert done["status"] == "completed", done
    assert done["drift"]["pruned"] == 1
