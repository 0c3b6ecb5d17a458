"""The dead-letter view: failed jobs nobody has dealt with yet (neither retried nor discarded),
grouped by error code, and discarding them.

Discarding a failed job says an operator saw it and let it go: it stays `failed`, keeps its
error, and gets `discarded_at`. Bulk retries pass it over; retrying it by its id still works.
Each discard is an entry of the audit trail (`job.discard`), in its transaction.
"""

import uuid

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity import audit
from identity.access import Actor
from identity.answers import Timestamp
from identity.ledger.jobs import JOB_BY_ID, JOB_COLUMNS, JobOut, job_rows
from identity.ledger.retries import BULK_LIMIT, OPEN, FailedFilter, failed_job


class FailureGroup(BaseModel):
    """Open failed jobs with one error code."""

    code: str
    count: int
    kinds: list[str]
    oldest: Timestamp
    newest: Timestamp
    message: str  # the newest one's


class DiscardedOut(BaseModel):
    """What a bulk discard did."""

    discarded: list[uuid.UUID]


def failure_groups(session: Session, where: FailedFilter) -> list[FailureGroup]:
    """Open failed jobs by error code, the largest group first."""
    rows = session.execute(
        text(
            f"""
            SELECT coalesce(error ->> 'code', 'unknown') AS code, count(*) AS count,
                   array_agg(DISTINCT kind ORDER BY kind) AS kinds,
                   min(accepted_at) AS oldest, max(accepted_at) AS newest,
                   (array_agg(error ->> 'message' ORDER BY accepted_at DESC))[1] AS message
            FROM jobs WHERE {FailedFilter.WHERE}
            GROUP BY 1 ORDER BY count(*) DESC, 1
            """
        ),
        where.params(),
    ).all()
    return [FailureGroup.model_validate(row, from_attributes=True) for row in rows]


def open_failures(session: Session, where: FailedFilter, *, limit: int) -> list[JobOut]:
    """The oldest open failed jobs that match, oldest first."""
    rows = session.execute(
        job_rows(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {FailedFilter.WHERE} "
            "ORDER BY accepted_at, id LIMIT :limit"
        ),
        {**where.params(), "limit": limit},
    ).all()
    return [JobOut.model_validate(row) for row in rows]


def discard(session: Session, job_id: uuid.UUID, *, actor: Actor, origin: audit.Origin) -> JobOut:
    """Discard one failed job (that `actor` may see); discarding it again changes nothing."""
    row = failed_job(
        session, job_id, actor.sees, "discarded", columns="key, discarded_at", lock=True
    )
    if row.discarded_at is None:
        session.execute(
            text("UPDATE jobs SET discarded_at = clock_timestamp() WHERE id = :id"),
            {"id": job_id},
        )
        _audit(session, actor, origin, [(job_id, row.key)])
    return JobOut.model_validate(session.execute(JOB_BY_ID, {"id": job_id}).one())


def discard_matching(
    session: Session, where: FailedFilter, *, limit: int, actor: Actor, origin: audit.Origin
) -> DiscardedOut:
    """Discard up to `limit` of the oldest open failed jobs that match (and `actor` may see)."""
    where = FailedFilter(where.kind, where.keys, where.code, actor.sees or where.sees)
    rows = session.execute(
        text(
            f"""
            UPDATE jobs SET discarded_at = clock_timestamp()
            WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE {FailedFilter.WHERE}
                                 ORDER BY accepted_at, id LIMIT :limit FOR UPDATE))
              AND {OPEN}
            RETURNING id, key
            """
        ),
        {**where.params(), "limit": min(limit, BULK_LIMIT)},
    ).all()
    _audit(session, actor, origin, [(row.id, row.key) for row in rows])
    return DiscardedOut(discarded=sorted((row.id for row in rows), key=str))


def _audit(
    session: Session, actor: Actor, origin: audit.Origin, jobs: list[tuple[uuid.UUID, str]]
) -> None:
    for job_id, key in jobs:
        audit.record(
            session, actor, origin, "job.discard", key=key, details={"job_id": str(job_id)}
        )
