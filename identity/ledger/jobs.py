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
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import TextualSelect, column, text
from sqlalchemy.orm import Session

from identity.access import OPERATOR, Actor
from identity.answers import Timestamp
from identity.errors import JobNotFound
from identity.pagination import Page, decode_cursor, page

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "idmirror_jobs"
JOB_COLUMNS = (
    "id, key, seq, kind, status, outcome, attempts, accepted_at, finished_at, result, error, "
    "retried_by, discarded_at"
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
    actor: Actor = OPERATOR  # who sends it: the job's integrator, and its audit entry's
    request_id: str | None = None
    client: str | None = None  # the client's address, for the audit trail
    # What the request's checks made of the payload (a parsed PatchOp, say), for an applier
    # in this process to use instead of parsing the payload again; never stored.
    checked: Any = field(default=None, compare=False, repr=False)

    @cached_property
    def request_hash(self) -> str:
        canonical = json.dumps([self.kind, self.key, self.payload], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    job: dict[str, Any]
    reused: bool


class JobOut(BaseModel):
    """A job as the API shows it: `result` is the body its answer had (or would have had),
    `error` the error envelope; a failed job names the job that retried it (`retried_by`), or
    when an operator discarded it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    key: str
    seq: int
    kind: str
    status: Literal["pending", "applied", "failed"]
    outcome: str | None
    attempts: int
    accepted_at: Timestamp
    finished_at: Timestamp | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    retried_by: uuid.UUID | None = None
    discarded_at: Timestamp | None = None


class JobDetail(JobOut):
    """A job with what only an operator looks at: its payload, the drains that began it, its
    version, and the failed job it retried."""

    payload: dict[str, Any]
    starts: int
    version: int
    retry_of: uuid.UUID | None


def get_job_detail(session: Session, job_id: uuid.UUID, *, sees: str | None = None) -> JobDetail:
    """The job with this id, in detail, if `sees` (an integrator; None: anyone's) may see it;
    JobNotFound when there is none."""
    row = session.execute(
        text(
            f"SELECT {JOB_COLUMNS}, payload, starts, version, "
            "(SELECT o.id FROM jobs o WHERE o.retried_by = j.id LIMIT 1) AS retry_of "
            "FROM jobs j WHERE id = :id AND (CAST(:sees AS text) IS NULL OR integrator = :sees)"
        ),
        {"id": job_id, "sees": sees},
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    return JobDetail.model_validate(row)


def job_out(row: Any) -> dict[str, Any]:
    """A job row in the JSON form the write path answers with (a 202's body): JobOut's form,
    built by hand because every accepted write pays for it, and a model costs several times
    as much (tests/identity/ledger/test_jobs.py checks the two agree)."""
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
        "retried_by": str(row.retried_by) if row.retried_by else None,
        "discarded_at": row.discarded_at.isoformat() if row.discarded_at else None,
    }


_VISIBLE_JOB = job_rows(
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id "
    "AND (CAST(:sees AS text) IS NULL OR integrator = :sees)"
)


def get_job(session: Session, job_id: uuid.UUID | str, *, sees: str | None = None) -> JobOut:
    """The job with this id, if `sees` (an integrator; None: anyone's) may see it;
    JobNotFound when there is none."""
    row = session.execute(_VISIBLE_JOB, {"id": job_id, "sees": sees}).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    return JobOut.model_validate(row)


def list_jobs(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    keys: list[str] | None = None,
    kind: str | None = None,
    outcome: str | None = None,
    order: Literal["newest", "oldest"] = "newest",
    sees: str | None = None,
) -> Page[JobOut]:
    """Newest (or oldest) first, filtered by any of status, keys, kind and outcome; only the
    jobs of the integrator `sees` names, if any."""
    after = decode_cursor(cursor, datetime.fromisoformat, uuid.UUID)
    # The direction comes from a closed set: the statement is one of two texts.
    direction, beyond = ("DESC", "<") if order == "newest" else ("ASC", ">")
    rows = session.execute(
        text(
            f"""
            SELECT {JOB_COLUMNS} FROM jobs
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:keys AS text[]) IS NULL OR key = ANY(CAST(:keys AS text[])))
              AND (CAST(:kind AS text) IS NULL OR kind = :kind)
              AND (CAST(:outcome AS text) IS NULL OR outcome = :outcome)
              AND (CAST(:sees AS text) IS NULL OR integrator = :sees)
              AND (CAST(:after_at AS timestamptz) IS NULL
                   OR (accepted_at, id) {beyond}
                      (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
            ORDER BY accepted_at {direction}, id {direction}
            LIMIT :limit
            """
        ),
        {
            "status": status,
            "keys": keys,
            "kind": kind,
            "outcome": outcome,
            "sees": sees,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        },
    ).all()
    jobs = [JobOut.model_validate(row) for row in rows]
    return page(jobs, limit, lambda job: [job.accepted_at.isoformat(), str(job.id)])
