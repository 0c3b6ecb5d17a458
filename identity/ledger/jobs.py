"""The durable job ledger's types, and reading jobs back.

Every write becomes a `jobs` row before anything else happens (identity/ledger/accept.py). A
key's jobs take a sequence number from `key_heads` in the accepting transaction, so sequence
order is commit order, and identity/ledger/drain.py applies them under a transaction-scoped
advisory lock on the key, in that order.
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import TextualSelect, column, text
from sqlalchemy.orm import Session

from identity.errors import AlreadyRetried, IdmirrorError, JobNotFailed, JobNotFound
from identity.pagination import decode_cursor, page
from identity.schemas import check_not_ahead, to_version

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "idmirror_jobs"
JOB_COLUMNS = (
    "id, key, seq, kind, status, outcome, attempts, accepted_at, finished_at, result, error"
)


def job_rows(sql: str) -> TextualSelect:
    """A statement whose rows are JOB_COLUMNS, in that order.

    Declared, not read from the cursor: SQLAlchemy then keeps how to read the rows with the
    statement's compiled form instead of working it out again on every execution."""
    return text(sql).columns(*(column(name) for name in JOB_COLUMNS.split(", ")))


# A job by its id: get_job below, and the accept path on the API's event loop.
JOB_BY_ID = job_rows(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id")


@dataclass(frozen=True)
class Submission:
    """A validated write, ready to be recorded."""

    key: str
    kind: str
    payload: dict[str, Any]
    explicit_version: int | None = None
    idempotency_key: str | None = None
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)
    retry_of: uuid.UUID | None = None  # the failed job this one retries

    @cached_property
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


def get_job(session: Session, job_id: uuid.UUID | str) -> dict[str, Any]:
    row = session.execute(JOB_BY_ID, {"id": job_id}).one_or_none()
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


def resubmission(session: Session, job_id: uuid.UUID) -> Submission:
    """A new submission carrying a failed job's payload, for POST /v1/jobs/{id}/retry.

    A job is retried once. The retry carries an idempotency key of its own, made from the
    failed job's id (with a line break no header can carry), so two retries sent at once record
    one job; `mark_retried` then records the link for good."""
    row = session.execute(
        text("SELECT key, kind, status, payload, retried_by FROM jobs WHERE id = :id"),
        {"id": job_id},
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    if row.status != "failed":
        raise JobNotFailed(f"only failed jobs can be retried; this one is {row.status}")
    if row.retried_by is not None:
        raise already_retried(job_id, row.retried_by)
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
