"""GET /v1/jobs, POST /v1/jobs/{id}/retry."""

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Paging, read_session
from api.writes import LedgerDep, WriteOptions, submit, submit_retries, write_options
from identity.db import transaction
from identity.errors import JobNotFound
from identity.ledger import jobs as ledger
from identity.ledger import retries
from identity.pagination import Page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound("no job has this id", job_id=raw) from None


@router.get("/{job_id}")
def get_job(job_id: str, session: Session = Depends(read_session)) -> ledger.JobOut:
    return ledger.get_job(session, _job_id(job_id))


@router.get("")
def list_jobs(
    status: Literal["pending", "applied", "failed"] | None = None,
    key: str | None = Query(None, max_length=300),
    kind: str | None = Query(None, max_length=64),
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[ledger.JobOut]:
    return ledger.list_jobs(
        session, limit=paging.limit, cursor=paging.cursor, status=status, key=key, kind=kind
    )


def _resubmission(job_id: uuid.UUID) -> ledger.Submission:
    with transaction() as session:
        return retries.resubmission(session, job_id)


def _resubmissions(
    kind: str | None, key: str | None, code: str | None, limit: int
) -> list[ledger.Submission]:
    with transaction() as session:
        return retries.resubmissions(session, kind=kind, key=key, code=code, limit=limit)


@router.post("/retry")
async def retry_failed_jobs(
    into: LedgerDep,
    kind: str | None = Query(None, max_length=64),
    key: str | None = Query(None, max_length=300),
    code: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=retries.BULK_LIMIT),
) -> retries.RetriesOut:
    """Retry, once each, the oldest failed jobs not retried yet that match every filter."""
    subs = await run_in_threadpool(_resubmissions, kind, key, code, limit)
    return await submit_retries(into, subs)


@router.post("/{job_id}/retry", responses={202: {"model": ledger.JobOut}})
async def retry_job(
    job_id: str, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Submit a failed job's payload again as a new job on the same key, once."""
    sub = await run_in_threadpool(_resubmission, _job_id(job_id))
    return await submit(into, sub, options)
