"""Draining the ledger: a key's pending jobs applied in order under its lock, with others.

A drain takes the lock of the key it was sent for, then tries the locks of other keys with
pending jobs, applies what it holds (agent upserts of distinct keys together, every other job in
its own savepoint), and records every decision, counter and notification in its transaction.
See docs/architecture.md ("Draining under per-key locks").

A drain that dies while applying jobs (a worker killed, a time limit) must not be able to die on
the same job for ever: before applying jobs that have waited a while, a drain counts a start on
each of them in a transaction of its own, and a job started IDMIRROR_MAX_JOB_STARTS times is
failed instead of applied again. A job applied within IDMIRROR_COUNT_STARTS_AFTER_SECONDS of its
accept is not counted: it cannot have been through a dead drain's hands for long, and the count
would cost every fresh write a commit.
"""

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import counters
from identity.access import Actor
from identity.answers import Applied
from identity.db import TRANSIENT_ERRORS
from identity.errors import IdmirrorError, InternalError
from identity.ledger.jobs import JOB_COLUMNS, NOTIFY_CHANNEL, Submission

log = logging.getLogger(__name__)


@dataclass
class PendingJob:
    id: uuid.UUID
    key: str
    seq: int
    kind: str
    payload: dict[str, Any]
    version: int
    accepted_at: datetime
    starts: int = 0  # drains that began applying it; more than one means one of them died
    waited: bool = False  # accepted longer ago than the drain's count_starts_after
    integrator: str | None = None  # who sent it: what it may write, and who owns what it creates
    admin: bool = True

    @property
    def actor(self) -> Actor:
        return Actor(self.integrator, None, self.admin)


Applier = Callable[[Session, PendingJob], Applied]
# Applies jobs of distinct keys together: an outcome per job, in order, the error of a job that
# fails for good in its place.
BatchApplier = Callable[[Session, list[PendingJob]], list[Applied | IdmirrorError]]


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


@dataclass
class Finished:
    """A job's decision, recorded with the others of its drain in one statement."""

    job: PendingJob
    outcome: str | None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return "failed" if self.error is not None else "applied"


def _apply_one(session: Session, job: PendingJob, apply: Applier) -> Finished:
    """Apply a job in a savepoint; a job that fails for good is marked failed, not retried."""
    try:
        with session.begin_nested():
            applied = apply(session, job)
    except TRANSIENT_ERRORS:
        raise
    except IdmirrorError as exc:
        return Finished(job, None, error=exc.envelope())
    except Exception as exc:  # a bug or a poison payload: fail this job, keep draining the rest
        log.exception("job %s (%s on %s) failed unexpectedly", job.id, job.kind, job.key)
        error = InternalError(f"the job could not be applied: {type(exc).__name__}")
        return Finished(job, None, error=error.envelope())
    return Finished(job, applied.outcome, result=applied.result)


def _apply_together(
    session: Session, jobs: list[PendingJob], applier: BatchApplier
) -> list[Finished] | None:
    """Apply jobs of distinct keys in one savepoint; None when they must go one by one."""
    try:
        with session.begin_nested():
            outcomes = applier(session, jobs)
    except TRANSIENT_ERRORS:
        raise
    except Exception:  # one bad job must fail alone: each is applied on its own instead
        log.warning("%d %s jobs applied one by one instead", len(jobs), jobs[0].kind, exc_info=True)
        return None
    return [
        Finished(job, None, error=outcome.envelope())
        if isinstance(outcome, IdmirrorError)
        else Finished(job, outcome.outcome, result=outcome.result)
        for job, outcome in zip(jobs, outcomes, strict=True)
    ]


def _rounds(jobs: list[PendingJob]) -> list[list[PendingJob]]:
    """Round n holds the n-th job of every key: its keys are distinct, and each key's jobs
    stay in sequence order from one round to the next."""
    rounds: list[list[PendingJob]] = []
    taken: dict[str, int] = {}
    for job in jobs:
        n = taken[job.key] = taken.get(job.key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(job)
    return rounds


def _apply(
    session: Session,
    jobs: list[PendingJob],
    apply: Applier,
    batch_appliers: dict[str, BatchApplier],
) -> list[Finished]:
    """Apply jobs given in sequence order per key: several jobs of one kind with a batch applier
    together, every other job on its own."""
    finished: list[Finished] = []
    for round_ in _rounds(jobs):
        by_kind: dict[str, list[PendingJob]] = {}
        for job in round_:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            together = None
            if kind in batch_appliers and len(group) > 1:
                together = _apply_together(session, group, batch_appliers[kind])
            finished += together or [_apply_one(session, job, apply) for job in group]
    return finished


# The drain's decisions travel as one JSON document: arrays of JSON texts would be escaped
# element by element on the way, which costs more than applying the jobs. The statements below
# mark the jobs still pending and give their audit entries the outcome.
_JOB_COLUMNS = ", ".join(f"j.{name}" for name in JOB_COLUMNS.split(", "))
_MARK = f"""
    WITH d AS (
        SELECT * FROM json_to_recordset(CAST(:decisions AS json))
            AS d(id uuid, status text, outcome text, result json, error json)
    ),
    marked AS (
        UPDATE jobs j
        SET status = d.status, outcome = d.outcome, result = d.result, error = d.error,
            attempts = j.attempts + 1, finished_at = clock_timestamp()
        FROM d
        WHERE j.id = d.id AND j.status = 'pending'
        RETURNING {_JOB_COLUMNS}, j.finished_at - j.accepted_at AS latency,
                  d.error ->> 'code' AS code,
                  json_build_object('id', j.id, 'status', d.status,
                                    'body', coalesce(d.result, d.error))::text AS note
    ),
    audited AS (
        UPDATE audit a SET outcome = coalesce(m.outcome, 'failed:' || m.code, m.status)
        FROM marked m WHERE a.job_id = m.id AND a.outcome IS NULL
    )
"""
# A drain also notifies the waiters of the jobs it marked (Postgres refuses a NOTIFY payload of
# 8000 bytes or more; the waiter reads larger results from the ledger), and beats its heart.
_RECORD = text(
    _MARK
    + """,
    notified AS (
        SELECT count(pg_notify(:channel, CASE WHEN octet_length(note) < 7900 THEN note
                                              ELSE json_build_object('id', id)::text END))
        FROM marked
    ),
    -- The drain's heartbeat (identity/ledger/progress.py): pending work moved just now. Every
    -- drain that finishes jobs updates the counters' rows too, so this row costs no new wait.
    heartbeat AS (
        INSERT INTO heartbeats (name, at)
        SELECT 'drain', clock_timestamp() WHERE EXISTS (SELECT FROM marked)
        ON CONFLICT (name) DO UPDATE SET at = excluded.at
    )
    SELECT m.kind, m.latency, m.outcome, m.status, m.code FROM marked m, notified
    """
)
# Jobs applied where they were accepted: nobody else can be waiting for them (they were never
# committed pending), and they moved no backlog; their rows go back to the accepting request.
_RECORD_ACCEPTED = text(_MARK + f"SELECT {JOB_COLUMNS}, latency, code FROM marked")


def _decisions(finished: list[Finished]) -> str:
    return json.dumps(
        [
            {
                "id": str(f.job.id),
                "status": f.status,
                "outcome": f.outcome,
                "result": f.result,
                "error": f.error,
            }
            for f in finished
        ]
    )


def _count(session: Session, rows: Sequence[Any]) -> None:
    counters.record_finished(
        session,
        [(r.kind, r.outcome or r.status, r.latency.total_seconds()) for r in rows],
        failed=[(r.kind, r.code) for r in rows if r.status == "failed"],
    )


def _record(session: Session, finished: list[Finished]) -> None:
    """Mark every job of the drain with its decision, count them, and wake their waiters."""
    params = {"decisions": _decisions(finished), "channel": NOTIFY_CHANNEL}
    _count(session, session.execute(_RECORD, params).all())


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
        finished = _apply(session, jobs, apply, batch_appliers or {})
    for f in finished:
        report.by_key[f.job.key] = report.by_key.get(f.job.key, 0) + 1
        if f.error is not None:
            report.failed_jobs.append((str(f.job.id), f.job.key, str(f.error.get("code"))))
    report.keys = len(report.by_key)
    report.failed = len(report.failed_jobs)
    report.applied = len(finished) - report.failed
    if finished:
        _record(session, finished)
    return report


# Of the jobs just accepted, those whose key is idle: its lock was free, and no other job of
# it is pending. One statement: a drain that commits between the statement's snapshot and its
# try-lock leaves its jobs looking pending, so the key looks busy and stays the drain's; a key
# never looks idle while it is not (a job of it accepted after these waits on key_heads).
_IDLE = text(
    """
    WITH locked AS MATERIALIZED (
        SELECT k FROM unnest(CAST(:keys AS text[])) AS k
        WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))
    )
    SELECT j.id, j.version FROM jobs j JOIN locked ON j.key = locked.k
    WHERE j.id = ANY(:ids) AND NOT EXISTS (
        SELECT FROM jobs o WHERE o.key = j.key AND o.status = 'pending' AND o.id <> ALL(:ids)
    )
    """
)


def apply_accepted(
    session: Session,
    accepted: list[tuple[Submission, Any]],
    apply: Applier,
    batch_appliers: dict[str, BatchApplier],
) -> dict[uuid.UUID, Any]:
    """Apply jobs in the transaction that accepted them, where their keys are idle, as a
    drain would; the rest stay pending for the workers. `accepted` pairs each submission with
    its new job row; the rows of the jobs applied are returned by id.

    A job applied here has not been committed pending: nobody waits for it but its request,
    no drain can die on it (its accept dies with it), and its start is not counted."""
    ids = [sub.job_id for sub, _ in accepted]
    keys = sorted({sub.key for sub, _ in accepted})
    idle: dict[uuid.UUID, int] = dict(
        session.execute(_IDLE, {"keys": keys, "ids": ids}).tuples().all()
    )
    if not idle:
        return {}
    jobs = [
        PendingJob(
            row.id,
            sub.key,
            row.seq,
            sub.kind,
            sub.payload,
            idle[row.id],
            row.accepted_at,
            integrator=sub.actor.integrator,
            admin=sub.actor.admin,
        )
        for sub, row in accepted  # in arrival order: each key's in seq order, and a user
        if row.id in idle  # accepted before its agent is applied before it
    ]
    finished = _apply(session, jobs, apply, batch_appliers)
    rows = session.execute(_RECORD_ACCEPTED, {"decisions": _decisions(finished)}).all()
    _count(session, rows)
    return {row.id: row for row in rows}


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
