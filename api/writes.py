"""The one path every write takes: accept a job, queue its drain, wait for it, answer."""

import asyncio
import dataclasses
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from api.access import SCOPE_REQUEST_ID
from api.auth import PRINCIPAL, Principal
from identity.access import Actor
from identity.audit import Origin
from identity.db import transaction
from identity.errors import IdmirrorError, ValidationFailed
from identity.ledger import jobs as ledger
from identity.ledger import retries
from identity.ledger.accept import Accepts
from identity.ledger.notify import JobWaiter
from identity.settings import get_settings

log = logging.getLogger(__name__)
JOBS_ACCEPTED = Counter("idmirror_jobs_accepted", "Jobs accepted into the ledger", ["kind"])
_WAIT_RE = re.compile(r"^\s*wait\s*=\s*(\d+(?:\.\d+)?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Ledger:
    """What a write needs in the API process: the accept batcher and the job waiter, both made
    for the app's event loop by its lifespan."""

    accepts: Accepts
    waiter: JobWaiter


async def get_ledger(request: Request) -> Ledger:
    """The app's Ledger, which create_app's lifespan sets. (Async: FastAPI runs a plain
    function dependency on its thread pool, a thread hop per request for a field read.)"""
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


@dataclass(frozen=True)
class WriteOptions:
    respond_async: bool
    wait_seconds: float
    idempotency_key: str | None
    actor: Actor  # who writes: the job's integrator
    origin: Origin  # the request, for the audit trail

    def sent(self, sub: ledger.Submission) -> ledger.Submission:
        """`sub` as this request sends it: by its actor, from its origin."""
        return dataclasses.replace(
            sub, actor=self.actor, request_id=self.origin.request_id, client=self.origin.client
        )


def origin_of(request: Request) -> Origin:
    """The request's id (the X-Request-Id its answer carries) and its client's address."""
    request_id: str | None = request.scope.get(SCOPE_REQUEST_ID)
    return Origin(request_id, request.client.host if request.client else None)


async def write_options(request: Request) -> WriteOptions:
    """Read `Prefer: respond-async`, `Prefer: wait=N` and `Idempotency-Key`, and who writes.

    The headers are read here, not declared as FastAPI header parameters, whose handling took
    about a fifth of a write's CPU in the API; api/contract.py documents them on every operation
    that depends on this function."""
    prefer = request.headers.get("prefer")
    idempotency_key = request.headers.get("idempotency-key")
    settings = get_settings()
    respond_async, wait = False, settings.sync_wait_seconds
    for preference in (prefer or "").split(","):
        if preference.strip().lower() == "respond-async":
            respond_async = True
        elif match := _WAIT_RE.match(preference):
            wait = min(float(match.group(1)), settings.max_wait_seconds)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 characters",
            errors=[{"loc": "header.Idempotency-Key", "message": "1 to 255 characters"}],
        )
    principal: Principal = request.scope[PRINCIPAL]
    wait = 0.0 if respond_async else wait
    return WriteOptions(respond_async, wait, idempotency_key, principal.actor, origin_of(request))


def _mark_retried(job_id: uuid.UUID, retry_job_id: uuid.UUID) -> None:
    with transaction() as session:
        retries.mark_retried(session, job_id, retry_job_id)


async def _settle_retry(retry_of: uuid.UUID, job_id: str, reused: bool) -> None:
    """A retry recorded before (sent twice at once) is refused; a new one is linked."""
    if reused:
        raise retries.already_retried(retry_of, job_id)
    await run_in_threadpool(_mark_retried, retry_of, uuid.UUID(job_id))


async def submit_retries(
    into: Ledger, subs: list[ledger.Submission], options: WriteOptions
) -> retries.RetriesOut:
    """Record each retry without waiting for it: the retries made, and the jobs whose retry
    another request made first."""
    done = retries.RetriesOut(retried=[], already_retried=[])
    for sub in map(options.sent, subs):
        assert sub.retry_of is not None, "only retries are submitted here"
        accepted, _ = await into.accepts.accept(sub)
        pair = retries.RetryOut(job_id=str(sub.retry_of), retry_job_id=accepted.job["id"])
        if accepted.reused:
            done.already_retried.append(pair)
            continue
        JOBS_ACCEPTED.labels(sub.kind).inc()
        await run_in_threadpool(_mark_retried, sub.retry_of, sub.job_id)
        done.retried.append(pair)
    return done


def job_response(job: dict[str, Any]) -> Response:
    """200 with the result, the error envelope of a failed job, or 202 for a pending one."""
    headers = {"Idmirror-Job-Id": job["id"]}
    if job["status"] == "applied":
        return JSONResponse(job["result"], status_code=200, headers=headers)
    if job["status"] == "failed":
        error = job["error"]
        return JSONResponse({"error": error}, status_code=error["status"], headers=headers)
    return accepted_response(job)


def accepted_response(job: dict[str, Any]) -> Response:
    """202 with the job as last known, its Location and its id: follow it for the result."""
    headers = {"Idmirror-Job-Id": job["id"], "Location": f"/v1/jobs/{job['id']}"}
    return JSONResponse(job, status_code=202, headers=headers)


async def submit(
    into: Ledger,
    sub: ledger.Submission,
    options: WriteOptions,
    *,
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """Record the write; unless asked not to, wait for its job to finish.

    `complete` adds to an applied job's result what the ledger does not keep (a graph update's
    graph, read when answering).
    """
    job = await record(into, sub, options, complete=complete)
    # Asked to answer at once: 202 with the job, even when it was applied as it was accepted.
    return accepted_response(job) if options.respond_async else job_response(job)


async def record(
    into: Ledger,
    sub: ledger.Submission,
    options: WriteOptions,
    *,
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Record the write and wait for its job as `options` say: the job as the answer tells it
    (for another protocol's answer, such as SCIM's)."""
    waiter = into.waiter
    sub = options.sent(sub)
    job_id = str(sub.job_id)
    # The wait is the request's, end to end: the time its accept took comes out of it.
    wait_until = asyncio.get_running_loop().time() + options.wait_seconds
    if options.wait_seconds > 0:
        waiter.register(job_id)  # before the job exists, so its notification cannot be missed
    try:
        accepted, queued = await into.accepts.accept(sub)
    except BaseException:
        waiter.forget(job_id)
        raise
    if not accepted.reused:
        JOBS_ACCEPTED.labels(sub.kind).inc()
    job = accepted.job
    if job["id"] != job_id:  # an Idempotency-Key named an earlier job
        waiter.forget(job_id)
    try:
        return await _finish(into, sub, accepted, queued, wait_until, complete)
    except IdmirrorError:
        raise  # the write's own answer (a second retry of a job)
    except Exception:
        # The write is recorded: whatever failed while waiting for it (the database went
        # away, say), its answer must name its job, never invite a second, duplicate write.
        log.warning("answering job %s as accepted: waiting for it failed", job["id"], exc_info=True)
        waiter.forget(job["id"])
        return job


async def _finish(
    into: Ledger,
    sub: ledger.Submission,
    accepted: ledger.Accepted,
    queued: bool,
    wait_until: float,
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> dict[str, Any]:
    """The job as the answer tells it: waited for until `wait_until` (loop time) at the most,
    and completed."""
    job = accepted.job
    if sub.retry_of is not None:
        await _settle_retry(sub.retry_of, job["id"], accepted.reused)
    wait = wait_until - asyncio.get_running_loop().time()
    if job["status"] == "pending" and queued and wait > 0:

        async def load() -> dict[str, Any]:
            return await into.accepts.job(job["id"])

        job = await into.waiter.wait(job["id"], wait, load) or job
    else:
        into.waiter.forget(job["id"])
    if complete is not None and job["status"] == "applied":
        job = {**job, "result": await run_in_threadpool(complete, job["result"])}
    return job
