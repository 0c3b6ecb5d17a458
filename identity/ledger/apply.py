"""Applying jobs under their keys' locks, and recording what was decided: the part of a drain
that a write to an idle key shares when it is applied in the transaction that accepts it.

Jobs are applied in rounds: round n holds the n-th job of every key, so its keys are distinct and
each key's jobs run in sequence order. Several jobs of one kind with a batch applier go together,
every other job on its own, each in a savepoint so that a job failing for good fails alone. The
decisions are then recorded in one statement with their audit outcomes and counters.
"""

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
    checked: Any = None  # the submission's, when it is applied where it was accepted

    @property
    def actor(self) -> Actor:
        return Actor(self.integrator, None, self.admin)


Applier = Callable[[Session, PendingJob], Applied]
# Applies jobs of distinct keys together: an outcome per job, in order, the error of a job that
# fails for good in its place.
BatchApplier = Callable[[Session, list[PendingJob]], list[Applied | IdmirrorError]]


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
    session: Session, jobs: list[PendingJob], applier: BatchApplier, *, isolated: bool
) -> list[Finished] | None:
    """Apply jobs of distinct keys together: in a savepoint, None when they must go one by one;
    or, not `isolated`, in the transaction itself, which an error then fails as a whole."""
    if not isolated:
        outcomes = applier(session, jobs)
    else:
        try:
            with session.begin_nested():
                outcomes = applier(session, jobs)
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # one bad job must fail alone: each is applied on its own instead
            log.warning(
                "%d %s jobs applied one by one instead", len(jobs), jobs[0].kind, exc_info=True
            )
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


def apply_jobs(
    session: Session,
    jobs: list[PendingJob],
    apply: Applier,
    batch_appliers: dict[str, BatchApplier],
    *,
    isolated: bool = True,
) -> list[Finished]:
    """Apply jobs given in sequence order per key: the jobs of a kind with a batch applier
    together (even one alone: the batch statements in one savepoint at most, where its single
    applier would nest a savepoint of its own), every other job on its own. Not `isolated`: batches
    are applied without their savepoint, and one that fails fails the transaction."""
    finished: list[Finished] = []
    for round_ in _rounds(jobs):
        by_kind: dict[str, list[PendingJob]] = {}
        for job in round_:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            together = None
            if kind in batch_appliers:
                together = _apply_together(session, group, batch_appliers[kind], isolated=isolated)
            finished += together or [_apply_one(session, job, apply) for job in group]
    return finished


# The drain's decisions travel as one JSON document: arrays of JSON texts would be escaped
# element by element on the way, which costs more than applying the jobs. The statements below
# mark the jobs still pending, give their audit entries the outcome and count them. The jobs are
# found by their ids (:ids, the decisions' ids again), through the primary key: joined with the
# decisions alone, which Postgres takes for a hundred rows, they were read by a scan of the
# whole pending index, whose entries include every job marked since the table's last vacuum,
# and a mark cost more the more jobs were pending or had been marked.
_JOB_COLUMNS = ", ".join(f"j.{name}" for name in JOB_COLUMNS.split(", "))
# The outcome a finished job's audit entry is given, from its row as marked (`m`: the job's
# columns and its error's code); identity/ledger/record.py's _DECIDED gives it too.
AUDIT_OUTCOME = "coalesce(m.outcome, 'failed:' || m.code, m.status)"
_MARK = (
    f"""
    WITH d AS (
        SELECT * FROM json_to_recordset(CAST(:decisions AS json))
            AS d(id uuid, status text, outcome text, result json, error json)
    ),
    marked AS (
        UPDATE jobs j
        SET status = d.status, outcome = d.outcome, result = d.result, error = d.error,
            attempts = j.attempts + 1, finished_at = clock_timestamp()
        FROM d
        WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = d.id AND j.status = 'pending'
        RETURNING {_JOB_COLUMNS}, j.finished_at - j.accepted_at AS latency,
                  d.error ->> 'code' AS code
    ),
    audited AS (
        UPDATE audit a SET outcome = {AUDIT_OUTCOME}
        FROM marked m WHERE a.job_id = m.id AND a.outcome IS NULL
    ),
"""
    + counters.COUNT_FINISHED
)
# A drain also notifies the waiters of the jobs it marked (Postgres refuses a NOTIFY payload of
# 8000 bytes or more; the waiter reads larger results from the ledger), and beats its heart.
_RECORD = text(
    _MARK
    + """,
    notes AS (
        SELECT id, json_build_object('id', id, 'status', status,
                                     'body', coalesce(result, error))::text AS note
        FROM marked
    ),
    notified AS (
        SELECT count(pg_notify(:channel, CASE WHEN octet_length(note) < 7900 THEN note
                                              ELSE json_build_object('id', id)::text END))
        FROM notes
    ),
    -- The drain's heartbeat (identity/ledger/progress.py): pending work moved just now. Every
    -- drain that finishes jobs updates the counters' rows too, so this row costs no new wait.
    heartbeat AS (
        INSERT INTO heartbeats (name, at)
        SELECT 'drain', clock_timestamp() WHERE EXISTS (SELECT FROM marked)
        ON CONFLICT (name) DO UPDATE SET at = excluded.at
    )
    -- Read so that it runs: Postgres skips a CTE without writes that nothing reads.
    SELECT count FROM notified
    """
)


def _decisions(finished: list[Finished]) -> dict[str, Any]:
    """The parameters of a statement that marks `finished`."""
    decisions = json.dumps(
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
    return {"decisions": decisions, "ids": [f.job.id for f in finished]}


def record_decisions(session: Session, finished: list[Finished]) -> None:
    """Mark every job of the drain with its decision, count them, and wake their waiters."""
    session.execute(_RECORD, {**_decisions(finished), "channel": NOTIFY_CHANNEL})


# Of the keys of writes being accepted, those that are idle: their lock was free, and no job
# of them is pending. (The writes' own jobs are not recorded yet; identity/ledger/record.py
# numbers them first and records them once decided.) One statement: a drain that commits
# between the statement's snapshot and its try-lock leaves its jobs looking pending, so the key
# looks busy and stays the drain's; a key never looks idle while it is not (a write to it
# accepted after these waits on key_heads).
_IDLE = text(
    """
    WITH locked AS MATERIALIZED (
        SELECT k FROM unnest(CAST(:keys AS text[])) AS k
        WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))
    )
    SELECT k FROM locked
    WHERE NOT EXISTS (SELECT FROM jobs o WHERE o.key = locked.k AND o.status = 'pending')
    """
)


def apply_accepted(
    session: Session,
    accepted: list[tuple[Submission, Any]],
    apply: Applier,
    batch_appliers: dict[str, BatchApplier],
) -> dict[uuid.UUID, Finished]:
    """Apply writes in the transaction that accepts them, where their keys are idle, as a
    drain would; the rest are left pending for the workers. `accepted` pairs each submission
    with the numbers its job takes (seq, version, accepted_at), in arrival order; what was
    decided for each write applied is returned by job id, to be recorded with it.

    A job applied here is never committed pending: nobody waits for it but its request, no
    drain can die on it (its accept dies with it), and its start is not counted."""
    keys = sorted({sub.key for sub, _ in accepted})
    idle = set(session.scalars(_IDLE, {"keys": keys}))
    if not idle:
        return {}
    jobs = [
        PendingJob(
            sub.job_id,
            sub.key,
            numbers.seq,
            sub.kind,
            sub.payload,
            numbers.version,
            numbers.accepted_at,
            integrator=sub.actor.integrator,
            admin=sub.actor.admin,
            checked=sub.checked,
        )
        for sub, numbers in accepted  # in arrival order: each key's in seq order, and a user
        if sub.key in idle  # accepted before its agent is applied before it
    ]
    # No savepoint around a batch (two round trips of every accept): should one fail, the
    # accept fails with it, and its writes are recorded pending for the workers, whose drains
    # apply a failing batch one job at a time.
    finished = apply_jobs(session, jobs, apply, batch_appliers, isolated=False)
    return {f.job.id: f for f in finished}
