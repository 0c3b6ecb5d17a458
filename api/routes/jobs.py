"""GET /v1/jobs, retry and discard of failed jobs."""

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, PrincipalDep
from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import Paging, read_session
from api.params import JobId, text_filter
from api.routes.graphs import APPLY_ERRORS
from api.writes import LedgerDep, WriteOptions, origin_of, submit, submit_retries, write_options
from identity import agents, users
from identity.access import KIND_SCOPES
from identity.answers import DeleteOut, SupersededOut
from identity.audit import Origin
from identity.db import transaction
from identity.errors import (
    AlreadyRetried,
    InsufficientScope,
    InvalidAgentKey,
    InvalidCursor,
    InvalidKey,
    InvalidNodeTypeId,
    InvalidUserId,
    JobNotFailed,
    JobNotFound,
    SlugTaken,
    UserNotFound,
    ValidationFailed,
)
from identity.graph.service import GraphUpdateResult
from identity.keys import searched_keys
from identity.ledger import deadletter, retries
from identity.ledger import jobs as ledger
from identity.ledger.retries import FailedFilter
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
# What a `key` filter is refused for: it names no ledger key.
KEY_ERRORS = (InvalidKey, InvalidAgentKey, InvalidUserId, InvalidNodeTypeId)
KEY_FILTER = "A key, with or without its prefix: `agent:scout@govind`, `scout@govind`, a UUID"


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound("no job has this id", job_id=raw) from None


def _keys(key: str | None) -> list[str] | None:
    return None if key is None else searched_keys(key)


class FailedJobs:
    """Query parameters naming open failed jobs: a bulk retry's or discard's."""

    def __init__(
        self,
        kind: str | None = text_filter(64, "A job kind, as `agent.upsert`"),
        key: str | None = text_filter(300, KEY_FILTER),
        code: str | None = text_filter(64, "The failed job's error code, as `user_not_found`"),
        limit: int = Query(100, ge=1, le=retries.BULK_LIMIT),
    ) -> None:
        self.where = FailedFilter(kind=kind, keys=_keys(key), code=code)
        self.limit = limit


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
    responses=answers(InvalidCursor, ValidationFailed, *KEY_ERRORS),
)
def list_jobs(
    principal: PrincipalDep,
    status: Literal["pending", "applied", "failed"] | None = None,
    key: str | None = text_filter(300, KEY_FILTER),
    kind: str | None = text_filter(64, "A job kind, as `agent.upsert`"),
    order: Literal["newest", "oldest"] = "newest",
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[ledger.JobOut]:
    """A page of jobs, newest (or oldest) first, filtered by status, key and kind."""
    return ledger.list_jobs(
        session,
        limit=paging.limit,
        cursor=paging.cursor,
        status=status,
        keys=_keys(key),
        kind=kind,
        order=order,
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


def _resubmissions(failed: FailedJobs) -> list[ledger.Submission]:
    with transaction() as session:
        return retries.resubmissions(session, failed.where, limit=failed.limit)


@router.post(
    "/retry",
    operation_id="retryJobs",
    dependencies=[scope("admin")],
    responses=answers(ValidationFailed, *KEY_ERRORS),
)
async def retry_failed_jobs(
    into: LedgerDep,
    failed: FailedJobs = Depends(),
    options: WriteOptions = Depends(write_options),
) -> retries.RetriesOut:
    """Retry, once each, the oldest open failed jobs (neither retried nor discarded) that match
    every filter."""
    subs = await run_in_threadpool(_resubmissions, failed)
    return await submit_retries(into, subs, options)


def _discard_matching(
    failed: FailedJobs, principal: Principal, origin: Origin
) -> deadletter.DiscardedOut:
    with transaction() as session:
        return deadletter.discard_matching(
            session, failed.where, limit=failed.limit, actor=principal.actor, origin=origin
        )


@router.post(
    "/discard",
    operation_id="discardJobs",
    dependencies=[scope("admin")],
    responses=answers(ValidationFailed, *KEY_ERRORS),
)
async def discard_failed_jobs(
    request: Request, principal: PrincipalDep, failed: FailedJobs = Depends()
) -> deadletter.DiscardedOut:
    """Discard the oldest open failed jobs that match every filter."""
    return await run_in_threadpool(_discard_matching, failed, principal, origin_of(request))


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


def _discard(job_id: uuid.UUID, principal: Principal, origin: Origin) -> ledger.JobOut:
    with transaction() as session:
        return deadletter.discard(session, job_id, actor=principal.actor, origin=origin)


@router.post(
    "/{job_id}/discard",
    operation_id="discardJob",
    dependencies=[scope("admin")],
    responses=answers(JobNotFound, JobNotFailed, AlreadyRetried),
)
async def discard_job(job_id: JobId, request: Request, principal: PrincipalDep) -> ledger.JobOut:
    """Mark a failed job as discarded: it leaves the dead-letter view and bulk retries."""
    return await run_in_threadpool(_discard, _job_id(job_id), principal, origin_of(request))
