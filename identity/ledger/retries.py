"""Retrying failed jobs: each failed job is retried at most once, one by one or in bulk.

A retry is a new job on the same key with the failed job's payload. It carries an idempotency
key of its own, made from the failed job's id (with a line break, which no header can carry), so
retries sent at once record one job between them; `mark_retried` then links the failed job to
its retry for good (`jobs.retried_by`), after the idempotency key's 24 hours too.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.errors import AlreadyRetried, JobNotFailed, JobNotFound
from identity.ledger.jobs import Submission
from identity.schemas import check_not_ahead, to_version

BULK_LIMIT = 500
# A failed job nobody has dealt with: the dead-letter view (identity/ledger/deadletter.py).
OPEN = "status = 'failed' AND retried_by IS NULL AND discarded_at IS NULL"


@dataclass(frozen=True)
class FailedFilter:
    """Which open failed jobs a bulk action or a listing takes: every given filter matches."""

    kind: str | None = None
    keys: list[str] | None = None
    code: str | None = None
    sees: str | None = None  # an integrator: only its jobs (None: anyone's)

    WHERE = (
        f"{OPEN} AND (CAST(:kind AS text) IS NULL OR kind = :kind) "
        "AND (CAST(:keys AS text[]) IS NULL OR key = ANY(CAST(:keys AS text[]))) "
        "AND (CAST(:code AS text) IS NULL OR error ->> 'code' = :code) "
        "AND (CAST(:sees AS text) IS NULL OR integrator = :sees)"
    )

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "keys": self.keys, "code": self.code, "sees": self.sees}


class RetryOut(BaseModel):
    """A failed job and the job that retried it."""

    job_id: str
    retry_job_id: str


class RetriesOut(BaseModel):
    """What a bulk retry did: the retries it made, and those another request made first."""

    retried: list[RetryOut]
    already_retried: list[RetryOut]


def resubmission(session: Session, job_id: uuid.UUID, *, sees: str | None = None) -> Submission:
    """A new submission carrying a failed job's payload, for POST /v1/jobs/{id}/retry; only
    of a job of the integrator `sees`, if given."""
    row = failed_job(session, job_id, sees, "retried", columns="key, kind, payload")
    return _retry_of(job_id, row)


def failed_job(
    session: Session,
    job_id: uuid.UUID,
    sees: str | None,
    done: str,
    *,
    columns: str,
    lock: bool = False,
) -> Any:
    """The `columns` of a failed job that has not been retried, of the integrator `sees` (if
    given), for it to be `done` ("retried", "discarded"), locked if `lock`: JobNotFound,
    JobNotFailed or AlreadyRetried otherwise. A discarded job may still be retried by its id."""
    row = session.execute(
        text(
            f"SELECT status, retried_by, {columns} FROM jobs WHERE id = :id "
            "AND (CAST(:sees AS text) IS NULL OR integrator = :sees)"
            + (" FOR UPDATE" if lock else "")
        ),
        {"id": job_id, "sees": sees},
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    if row.status != "failed":
        raise JobNotFailed(f"only failed jobs can be {done}; this one is {row.status}")
    if row.retried_by is not None:
        raise already_retried(job_id, row.retried_by)
    return row


def resubmissions(session: Session, where: FailedFilter, *, limit: int) -> list[Submission]:
    """Retries of up to `limit` open failed jobs (neither retried nor discarded), oldest
    first, by any filter."""
    rows = session.execute(
        text(
            f"SELECT id, key, kind, payload FROM jobs WHERE {FailedFilter.WHERE} "
            "ORDER BY accepted_at, id LIMIT :limit"
        ),
        {**where.params(), "limit": min(limit, BULK_LIMIT)},
    ).all()
    return [_retry_of(row.id, row) for row in rows]


def _retry_of(job_id: uuid.UUID, row: Any) -> Submission:
    source = row.payload.get("source_updated_at")
    version = None
    if source is not None:
        version = to_version(datetime.fromisoformat(source))
        check_not_ahead(version, "payload.source_updated_at")  # a job stored before the rule
    return Submission(
        key=row.key,
        kind=row.kind,
        payload=row.payload,
        explicit_version=version,
        idempotency_key=f"retry\n{job_id}",
        retry_of=job_id,
    )


def already_retried(job_id: uuid.UUID, retry_job_id: uuid.UUID | str) -> AlreadyRetried:
    """The answer to a second retry of `job_id`."""
    return AlreadyRetried(
        "this job was retried already; follow its retry",
        job_id=str(job_id),
        retry_job_id=str(retry_job_id),
    )


def mark_retried(session: Session, job_id: uuid.UUID, retry_job_id: uuid.UUID) -> None:
    """Link a failed job to its retry; the first link stays."""
    session.execute(
        text("UPDATE jobs SET retried_by = :retry WHERE id = :id AND retried_by IS NULL"),
        {"id": job_id, "retry": retry_job_id},
    )
