"""How many backfill transactions hold their keys' locks at once, across every worker and run.

A chunk takes one advisory lock per key it writes (identity/backfill/sql.py), and so does a
prune step (drift.py). PostgreSQL keeps every lock of the cluster in one shared table, about
`max_locks_per_transaction x max_connections` entries (6,400 on a default server, a little
more in spare memory). Workers scale out and each applies one chunk at a time, so enough of
them would fill that table, and then every transaction of the cluster that needs a lock fails
with "out of shared memory", live writes included. So before its keys, such a transaction takes
one of `IDMIRROR_BACKFILL_LOCK_BUDGET // chunk size` apply slots: a two-key advisory lock, which
never conflicts with the keys' one-key locks. A transaction holds at most one slot, taken before
any key lock, so slots cannot deadlock with keys.
"""

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.settings import get_settings

SLOT_CLASS = 0x1D5107  # the first of a slot lock's two keys; the second is the slot
_ANY_FREE = text(
    "SELECT s FROM generate_series(0, :slots - 1) AS s "
    "WHERE pg_try_advisory_xact_lock(:class, s) LIMIT 1"
)
_WAIT = text("SELECT pg_advisory_xact_lock(:class, :slot)")


def slots() -> int:
    """Apply slots: as many full chunks as the lock budget holds, at least one."""
    settings = get_settings()
    return max(1, settings.backfill_lock_budget // settings.backfill_chunk_size)


def take_slot(session: Session, turn: int) -> int:
    """Take a free slot, or wait for slot `turn` (mod slots) if none is free; held until the
    transaction ends. Returns the slot."""
    count = slots()
    params = {"class": SLOT_CLASS, "slots": count}
    free = session.execute(_ANY_FREE, params).scalar()
    if free is not None:
        return int(free)
    slot = turn % count
    session.execute(_WAIT, {"class": SLOT_CLASS, "slot": slot})
    return slot
