"""Draining the ledger: a key's pending jobs applied in order under its lock, with others.

A drain takes the lock of the key it was sent for, then tries the locks of other keys with
pending jobs, applies what it holds (identity/ledger/apply.py: upserts of distinct keys together,
every other job in its own savepoint), and records every decision, counter and notification in its
transaction.
See docs/architecture.md ("Draining under per-key locks").

A drain that dies while applying jobs (a worker killed, a time limit) must not be able to die on
the same job for ever: before applying jobs that have waited a while, a drain counts a start on
each of them in a transaction of its own, and a job started IDMIRROR_MAX_JOB_STARTS times is
failed instead of applied again. A job applied within IDMIRROR_COUNT_STARTS_AFTER_SECONDS of its
accept is not counted: it cannot have been through a dead drain's hands for long, and the count
would cost every fresh write a commit.
"""

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.errors import InternalError
from identity.ledger.apply import (
    Applier,
    BatchApplier,
    Finished,
    PendingJob,
    apply_jobs,
    record_decisions,
)

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    applied: int = 0
    failed: int = 0
    keys: int = 0
    more: bool = False
    by_key: dict[str, int] = field(default_factory=dict)  # jobs finished, per key
    failed_jobs: list[tuple[str, str, str]] = field(default_factory=list)  # id, key, code


def _lock_key(session: Session, key: str) -> None:
    """Wait for the key's lock: the same one live writes and backfill chunks take."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


def _pending(session: Session, keys: list[str], limit: int, waited: float) -> list[PendingJob]:
    """Up to `limit` pending jobs of `keys`, each key's in seq order; `waited` is how many
    seconds after its accept a job counts as having waited."""
    rows = session.execute(
        text(
            "SELECT id, key, seq, kind, payload, version, accepted_at, starts, "
            "accepted_at < clock_timestamp() - make_interval(secs => :waited), integrator, admin "
            "FROM jobs "
            "WHERE key = ANY(:keys) AND status = 'pending' ORDER BY key, seq LIMIT :limit"
        ),
        {"keys": keys, "limit": limit, "waited": waited},
    ).all()
    return [PendingJob(*row) for row in rows]


def _others_pending(
    session: Session, key: str | None, budget: int, waited: float
) -> list[PendingJob]:
    """Pending jobs of other keys whose lock is free, up to `budget`."""
    # Try-lock up to 100 other keys in one statement; the LIMIT in the subquery bounds which
    # keys are tried. Their jobs are read by a second statement, whose snapshot is taken after
    # the locks, so it sees everything the previous holders committed.
    locked = (
        session.execute(
            text(
                "SELECT k FROM (SELECT DISTINCT key AS k FROM jobs WHERE status = 'pending' "
                "AND key IS DISTINCT FROM :key LIMIT :n) AS candidates "
                "WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))"
            ),
            {"key": key, "n": min(budget, 100)},
        )
        .scalars()
        .all()
    )
    # A prefix of each key's jobs in seq order: the rest waits for the next pass.
    return _pending(session, list(locked), budget, waited) if locked else []


def drain(
    session: Session,
    key: str | None,
    apply: Applier,
    *,
    batch_size: int,
    batch_appliers: dict[str, BatchApplier] | None = None,
    max_starts: int = 3,
    count_starts_after: float = 0.0,
) -> DrainReport:
    """Apply pending jobs of `key` (if given), then of other keys whose lock is free.

    Waits for `key`'s lock (a job of that key may have committed after the holder looked);
    other keys are only taken when their lock is free, so two drains never wait on each other.
    At most `batch_size` jobs, recorded and committed together.

    Before applying jobs of which one was accepted over `count_starts_after` seconds ago, a
    start is counted on each of them in a transaction of its own: if the process dies while
    applying them, that count survives, and the next drain applies those jobs one at a time
    until the one that kills its drains has been started `max_starts` times, and fails it
    without applying it again.
    """
    report = DrainReport()
    jobs: list[PendingJob] = []
    if key is not None:
        _lock_key(session, key)
        jobs = _pending(session, [key], batch_size, count_starts_after)
        report.more = len(jobs) == batch_size

    if (budget := batch_size - len(jobs)) > 0:
        jobs += _others_pending(session, key, budget, count_starts_after)

    jobs = _suspect_first(jobs)
    if len(jobs) == 1 and jobs[0].starts >= max_starts:
        finished = [Finished(jobs[0], None, error=_poison(jobs[0]).envelope())]
    else:
        if any(job.waited for job in jobs):
            _count_starts(session, [job.id for job in jobs])
        finished = apply_jobs(session, jobs, apply, batch_appliers or {})
    for f in finished:
        report.by_key[f.job.key] = report.by_key.get(f.job.key, 0) + 1
        if f.error is not None:
            report.failed_jobs.append((str(f.job.id), f.job.key, str(f.error.get("code"))))
    report.keys = len(report.by_key)
    report.failed = len(report.failed_jobs)
    report.applied = len(finished) - report.failed
    if finished:
        record_decisions(session, finished)
    return report


# One statement, on a connection in autocommit mode: it commits at once, in one round trip, and
# its commit does not wait for the disk (losing the count in a crash of the database costs
# nothing but a count).
_COUNT_STARTS = text(
    "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "UPDATE jobs SET starts = starts + 1 FROM quick WHERE id = ANY(:ids)"
)


def _count_starts(session: Session, job_ids: list[uuid.UUID]) -> None:
    """Record that a drain begins applying these jobs: committed at once, apart from the
    drain's own transaction, which a dying drain takes down with it."""
    with session.get_bind().engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            _COUNT_STARTS, {"ids": job_ids}
        )


def _suspect_first(jobs: list[PendingJob]) -> list[PendingJob]:
    """The jobs to apply: all of them, unless a drain died applying some of them. Then only the
    first such job, alone, so that a job that kills its drains takes no other job down with it.

    A key's first pending job is the one a dead drain began with (a drain takes a prefix of each
    key's jobs), so it keeps the key's order."""
    firsts: dict[str, PendingJob] = {}
    for job in jobs:
        firsts.setdefault(job.key, job)
    suspects = [job for job in firsts.values() if job.starts > 0]
    return suspects[:1] if suspects else jobs


def _poison(job: PendingJob) -> InternalError:
    return InternalError(
        f"the job was begun {job.starts} times and its drain died each time; it is not "
        "applied again (see its payload, and the worker's logs and limits)",
        reason="poison",
        starts=job.starts,
    )
