"""The durable job ledger: accepting writes, draining them per key in order, finding strays.

Every write becomes a `jobs` row before anything else happens. A key's jobs take a sequence
number from `key_heads` in the accepting transaction, so sequence order is commit order, and
are applied by `drain` under a transaction-scoped advisory lock on the key, in that order.
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from identity import metrics
from identity.errors import IdempotencyKeyReused, IdmirrorError, JobNotFailed, JobNotFound
from identity.pagination import decode_cursor, page

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "idmirror_jobs"
JOB_COLUMNS = (
    "id, key, seq, kind, status, outcome, attempts, accepted_at, finished_at, result, error"
)


@dataclass(frozen=True)
class Submission:
    """A validated write, ready to be recorded."""

    key: str
    kind: str
    payload: dict[str, Any]
    explicit_version: int | None = None
    idempotency_key: str | None = None
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def request_hash(self) -> str:
        canonical = json.dumps([self.kind, self.key, self.payload], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    job: dict[str, Any]
    reused: bool


@dataclass(frozen=True)
class Applied:
    """What an applier did: the outcome and the body the client is answered with."""

    outcome: str
    result: dict[str, Any]


def upserted(
    written: Any, stored: Any, version: int, out: Callable[..., dict[str, Any]]
) -> Applied:
    """The outcome of a conditional upsert: `written` is the row it returned (None when it wrote
    nothing), `stored` the row as it was, `version` the job's."""
    if written is not None:
        outcome = "created" if written.inserted else "updated"
        return Applied(outcome, out(written, created=written.inserted, outcome=outcome))
    outcome = "superseded" if stored.version > version else "unchanged"
    return Applied(outcome, out(stored, created=False, outcome=outcome))


@dataclass
class PendingJob:
    id: uuid.UUID
    key: str
    seq: int
    kind: str
    payload: dict[str, Any]
    version: int
    accepted_at: datetime


Applier = Callable[[Session, PendingJob], Applied]
# Applies jobs of distinct keys together: an outcome per job, in order, the error of a job that
# fails for good in its place.
BatchApplier = Callable[[Session, list[PendingJob]], list[Applied | IdmirrorError]]


def job_out(row: Any) -> dict[str, Any]:
    """The public form of a job row."""
    return {
        "id": str(row.id),
        "key": row.key,
        "seq": row.seq,
        "kind": row.kind,
        "status": row.status,
        "outcome": row.outcome,
        "attempts": row.attempts,
        "accepted_at": row.accepted_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "result": row.result,
        "error": row.error,
    }


# psycopg placeholders: the accept runs on the API's event loop through an async connection.
_ACCEPT = f"""
    WITH head AS (
        INSERT INTO key_heads (key, last_seq, last_version)
        VALUES (%(key)s, 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
        ON CONFLICT (key) DO UPDATE
            SET last_seq = key_heads.last_seq + 1,
                last_version = greatest(key_heads.last_version + 1, excluded.last_version)
        RETURNING last_seq, last_version
    )
    INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version)
    SELECT %(id)s, %(key)s, head.last_seq, %(kind)s, %(payload)s, %(hash)s,
           coalesce(CAST(%(version)s AS bigint), head.last_version)
    FROM head
    RETURNING {JOB_COLUMNS}
    """
_JOB_BY_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s"
_IDEMPOTENCY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))"
_IDEMPOTENCY_LOOKUP = (
    "SELECT request_hash, job_id FROM idempotency_keys WHERE key = %s "
    "AND created_at > now() - make_interval(secs => %s)"
)
_IDEMPOTENCY_RECORD = (
    "INSERT INTO idempotency_keys (key, request_hash, job_id) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, "
    "job_id = excluded.job_id, created_at = now()"
)


async def accept(
    conn: psycopg.AsyncConnection[Any], sub: Submission, *, idempotency_ttl_hours: float
) -> Accepted:
    """Record a write as a pending job, or return the job an Idempotency-Key already names.

    `conn` is in autocommit mode and yields rows with named columns. Without an Idempotency-Key
    the accept is a single statement, atomic on its own, so it needs no BEGIN and COMMIT.
    """
    request_hash = sub.request_hash()
    params = {
        "id": sub.job_id,
        "key": sub.key,
        "kind": sub.kind,
        "payload": json.dumps(sub.payload),
        "hash": request_hash,
        "version": sub.explicit_version,
    }
    if sub.idempotency_key is None:
        row = await (await conn.execute(_ACCEPT, params)).fetchone()
        return Accepted(job=job_out(row), reused=False)

    async with conn.transaction():
        await conn.execute(_IDEMPOTENCY_LOCK, ["idem:" + sub.idempotency_key])
        lookup = [sub.idempotency_key, idempotency_ttl_hours * 3600]
        previous = await (await conn.execute(_IDEMPOTENCY_LOOKUP, lookup)).fetchone()
        if previous is not None:
            if previous.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request",
                    idempotency_key=sub.idempotency_key,
                    job_id=str(previous.job_id),
                )
            first = await conn.execute(_JOB_BY_ID, {"id": previous.job_id})
            return Accepted(job=job_out(await first.fetchone()), reused=True)
        row = await (await conn.execute(_ACCEPT, params)).fetchone()
        record = [sub.idempotency_key, request_hash, sub.job_id]
        await conn.execute(_IDEMPOTENCY_RECORD, record)
    return Accepted(job=job_out(row), reused=False)


def get_job(session: Session, job_id: uuid.UUID | str) -> dict[str, Any]:
    row = session.execute(
        text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id"), {"id": job_id}
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    return job_out(row)


def list_jobs(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    key: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Newest first, filtered by any of status, key and kind."""
    after = decode_cursor(cursor, datetime.fromisoformat, uuid.UUID)
    rows = session.execute(
        text(
            f"""
            SELECT {JOB_COLUMNS} FROM jobs
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:key AS text) IS NULL OR key = :key)
              AND (CAST(:kind AS text) IS NULL OR kind = :kind)
              AND (CAST(:after_at AS timestamptz) IS NULL
                   OR (accepted_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
            ORDER BY accepted_at DESC, id DESC
            LIMIT :limit
            """
        ),
        {
            "status": status,
            "key": key,
            "kind": kind,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        },
    ).all()
    return page([job_out(r) for r in rows], limit, ["accepted_at", "id"])


def resubmission(
    session: Session, job_id: uuid.UUID | str, *, idempotency_key: str | None = None
) -> Submission:
    """A new submission carrying a failed job's payload, for POST /v1/jobs/{id}/retry."""
    row = session.execute(
        text("SELECT key, kind, status, payload FROM jobs WHERE id = :id"), {"id": job_id}
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    if row.status != "failed":
        raise JobNotFailed(f"only failed jobs can be retried; this one is {row.status}")
    source = row.payload.get("source_updated_at")
    version = None
    if source is not None:
        version = int(datetime.fromisoformat(source).timestamp() * 1_000_000)
    return Submission(
        key=row.key,
        kind=row.kind,
        payload=row.payload,
        explicit_version=version,
        idempotency_key=idempotency_key,
    )


# --- draining -------------------------------------------------------------------------------

TRANSIENT_ERRORS = (OperationalError, InterfaceError)


@dataclass
class DrainReport:
    applied: int = 0
    failed: int = 0
    keys: int = 0
    more: bool = False


def _lock_key(session: Session, key: str) -> None:
    """Wait for the key's lock: the same one live writes and backfill chunks take."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


def _pending(session: Session, key: str, limit: int) -> list[PendingJob]:
    rows = session.execute(
        text(
            "SELECT id, key, seq, kind, payload, version, accepted_at FROM jobs "
            "WHERE key = :key AND status = 'pending' ORDER BY seq LIMIT :limit"
        ),
        {"key": key, "limit": limit},
    ).all()
    return [PendingJob(*row) for row in rows]


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


def _apply_one(session: Session, job: PendingJob, appliers: dict[str, Applier]) -> Finished:
    """Apply a job in a savepoint; a job that fails for good is marked failed, not retried."""
    try:
        with session.begin_nested():
            applied = appliers[job.kind](session, job)
    except TRANSIENT_ERRORS:
        raise
    except IdmirrorError as exc:
        return Finished(job, None, error=exc.envelope())
    except Exception as exc:  # a bug or a poison payload: fail this job, keep draining the rest
        log.exception("job %s (%s on %s) failed unexpectedly", job.id, job.kind, job.key)
        error = {
            "code": "internal_error",
            "message": f"the job could not be applied: {type(exc).__name__}",
            "status": 500,
            "details": {},
        }
        return Finished(job, None, error=error)
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
    appliers: dict[str, Applier],
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
            finished += together or [_apply_one(session, job, appliers) for job in group]
    return finished


# The drain's decisions travel as one JSON document: arrays of JSON texts would be escaped
# element by element on the way, which costs more than applying the jobs.
_DECISIONS = (
    "json_to_recordset(CAST(:decisions AS json)) "
    "AS d(id uuid, status text, outcome text, result json, error json)"
)
_RECORD = text(
    f"""
    UPDATE jobs j
    SET status = d.status, outcome = d.outcome, result = d.result, error = d.error,
        attempts = j.attempts + 1, finished_at = clock_timestamp()
    FROM {_DECISIONS}
    WHERE j.id = d.id AND j.status = 'pending'
    RETURNING j.kind, j.finished_at - j.accepted_at AS latency, d.outcome, d.status
    """
)
# Postgres refuses a NOTIFY payload of 8000 bytes or more; larger results are read by the waiter.
_NOTIFY = text(
    f"""
    SELECT pg_notify(:channel, CASE WHEN octet_length(n.body) < 7900 THEN n.body
                                    ELSE json_build_object('id', n.id)::text END)
    FROM (SELECT d.id, json_build_object('id', d.id, 'status', d.status,
                                         'body', coalesce(d.result, d.error))::text AS body
          FROM {_DECISIONS}) AS n
    """
)


def _record(session: Session, finished: list[Finished]) -> None:
    """Mark every job of the drain with its decision, count them, and wake their waiters."""
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
    rows = session.execute(_RECORD, {"decisions": decisions}).all()
    metrics.record_finished(
        session,
        [(r.kind, r.outcome or r.status, r.latency.total_seconds()) for r in rows],
    )
    session.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "decisions": decisions})


def drain(
    session: Session,
    key: str | None,
    appliers: dict[str, Applier],
    *,
    batch_size: int,
    batch_appliers: dict[str, BatchApplier] | None = None,
) -> DrainReport:
    """Apply pending jobs of `key` (if given), then of other keys whose lock is free.

    Waits for `key`'s lock (a job of that key may have committed after the holder looked);
    other keys are only taken when their lock is free, so two drains never wait on each other.
    At most `batch_size` jobs, recorded and committed together.
    """
    report = DrainReport()
    jobs: list[PendingJob] = []
    if key is not None:
        _lock_key(session, key)
        jobs = _pending(session, key, batch_size)
        report.more = len(jobs) == batch_size

    budget = batch_size - len(jobs)
    if budget > 0:
        # Try-lock up to 100 other keys in one statement; the LIMIT in the subquery bounds
        # which keys are tried. Their jobs are read by a second statement, whose snapshot
        # is taken after the locks, so it sees everything the previous holders committed.
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
        if locked:
            rows = session.execute(
                text(
                    "SELECT id, key, seq, kind, payload, version, accepted_at FROM jobs "
                    "WHERE key = ANY(:keys) AND status = 'pending' ORDER BY key, seq LIMIT :n"
                ),
                {"keys": locked, "n": budget},
            ).all()
            # A prefix of each key's jobs in seq order: the rest waits for the next pass.
            jobs += [PendingJob(*row) for row in rows]

    finished = _apply(session, jobs, appliers, batch_appliers or {})
    report.keys = len({job.key for job in jobs})
    report.failed = sum(1 for f in finished if f.status == "failed")
    report.applied = len(finished) - report.failed
    if finished:
        _record(session, finished)
    return report


def stale_keys(session: Session, *, older_than_seconds: float, limit: int = 1000) -> list[str]:
    """Keys with a job pending for longer than a drain message should take to arrive."""
    return list(
        session.execute(
            text(
                "SELECT key FROM jobs WHERE status = 'pending' "
                "AND accepted_at < clock_timestamp() - make_interval(secs => :age) "
                "GROUP BY key ORDER BY min(accepted_at) LIMIT :limit"
            ),
            {"age": older_than_seconds, "limit": limit},
        ).scalars()
    )


def forget_idempotency_keys(session: Session, *, ttl_hours: float) -> int:
    result = session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => :ttl)"),
        {"ttl": ttl_hours * 3600},
    )
    return int(getattr(result, "rowcount", 0) or 0)
