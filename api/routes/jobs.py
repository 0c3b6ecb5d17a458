"""GET /v1/jobs, POST /v1/jobs/{id}/retry."""

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, PrincipalDep
from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import Paging, read_session
from api.params import JobId, text_filter
from api.routes.graphs import APPLY_ERRORS
from api.writes import LedgerDep, WriteOptions, submit, submit_retries, write_options
from identity import agents, users
from identity.access import KIND_SCOPES
from identity.answers import DeleteOut, SupersededOut
from identity.db import transaction
from identity.errors import (
    AlreadyRetried,
    InsufficientScope,
    InvalidCursor,
    JobNotFailed,
    JobNotFound,
    SlugTaken,
    UserNotFound,
    ValidationFailed,
)
from identity.graph.service import GraphUpdateResult
from identity.ledger import jobs as ledger
from identity.ledger import retries
from identity.node_types import NodeTypeWriteOut
from identity.pagination import Page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=JsonRoute)

# A retried job answers as the write it repeats, without a graph update's graph.
RetriedResult = (
    users.UserWriteOut
    | agents.AgentWriteOut
    | NodeTypeWriteOut
    | GraphUpdateResult
    | SupersededOut
    | DeleteOut
)


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound("no job has this id", job_id=raw) from None


@router.get(
    "/{job_id}",
    operation_id="getJob",
    dependencies=[scope("jobs:read")],
    responses=answers(JobNotFound),
)
def get_job(
    job_id: JobId, principal: PrincipalDep, session: Session = Depends(read_session)
) -> ledger.JobOut:
    """The job: its status, and the result or error its answer had."""
    return ledger.get_job(session, _job_id(job_id), sees=principal.actor.sees)


@router.get(
    "",
    operation_id="listJobs",
    dependencies=[scope("jobs:read")],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_jobs(
    principal: PrincipalDep,
    status: Literal["pending", "applied", "failed"] | None = None,
    key: str | None = text_filter(300, "A ledger key, as `agent:scout@govind`"),
    kind: str | None = text_filter(64, "A job kind, as `agent.upsert`"),
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[ledger.JobOut]:
    """A page of jobs, newest first, filtered by status, key and kind."""
    return ledger.list_jobs(
        session,
        limit=paging.limit,
        cursor=paging.cursor,
        status=status,
        key=key,
        kind=kind,
        sees=principal.actor.sees,
    )


def _may_write(principal: Principal, sub: ledger.Submission) -> None:
    """A retry is a write of its job's kind: it needs that kind's write scope too."""
    needed = KIND_SCOPES.get(sub.kind)
    if needed is not None and not principal.allows(needed):
        raise InsufficientScope("retrying this job needs the scope of its write", required=[needed])


def _resubmission(job_id: uuid.UUID, sees: str | None) -> ledger.Submission:
    with transaction() as session:
        return retries.resubmission(session, job_id, sees=sees)


def _resubmissions(
    kind: str | None, key: str | None, code: str | None, limit: int
) -> list[ledger.Submission]:
    with transaction() as session:
        return retries.resubmissions(session, kind=kind, key=key, code=code, limit=limit)


@router.post(
    "/retry",
    operation_id="retryJobs",
    dependencies=[scope("admin")],
    responses=answers(ValidationFailed),
)
async def retry_failed_jobs(
    into: LedgerDep,
    kind: str | None = text_filter(64, "A job kind, as `agent.upsert`"),
    key: str | None = text_filter(300, "A ledger key, as `agent:scout@govind`"),
    code: str | None = text_filter(64, "The failed job's error code, as `user_not_found`"),
    limit: int = Query(100, ge=1, le=retries.BULK_LIMIT),
    options: WriteOptions = Depends(write_options),
) -> retries.RetriesOut:
    """Retry, once each, the oldest failed jobs not retried yet that match every filter."""
    subs = await run_in_threadpool(_resubmissions, kind, key, code, limit)
    return await submit_retries(into, subs, options)


@router.post(
    "/{job_id}/retry",
    operation_id="retryJob",
    dependencies=[scope("jobs:read")],
    responses=write_answers(
        RetriedResult,
        JobNotFound,
        JobNotFailed,
        AlreadyRetried,
        UserNotFound,
        SlugTaken,
        *APPLY_ERRORS,
        body=False,
        keyed=False,
    ),
)
async def retry_job(
    job_id: JobId,
    into: LedgerDep,
    principal: PrincipalDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Submit a failed job's payload again as a new job on the same key, once (with the write
    scope of the job's kind as well)."""
    sub = await run_in_threadpool(_resubmission, _job_id(job_id), principal.actor.sees)
    _may_write(principal, sub)
    return await submit(into, sub, options)
