"""The writes every resource type answers alike: `POST` to create, `PUT`, `PATCH` and `DELETE`
of one resource, each made into its job by identity/scim/requests.py, recorded, waited for,
and answered from the job."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.scim.answers import base_url, job_answer
from api.scim.bodies import json_body, scim_write_options
from api.writes import LedgerDep, WriteOptions, record
from identity.db import session_factory
from identity.ledger.jobs import Submission
from identity.scim.errors import ScimNotFound
from identity.scim.requests import WriteRequest

# A row (or a write's result) as its resource's SCIM JSON, at a base URL.
Render = Callable[[Any, str], dict[str, Any]]


def write_answer(
    job: dict[str, Any], request: WriteRequest, answered: Render, base: str
) -> Response:
    """A write's answer from its job: the resource (201 for a create), 204 for a delete, 404
    for a delete that found nothing, the job's error, or 202 while it is pending."""
    if request.method == "DELETE" and job["status"] == "applied":
        if job["result"].get("outcome") == "unchanged":
            raise ScimNotFound("nothing has this id", id=request.resource_id)
        return Response(status_code=204, headers={"Idmirror-Job-Id": job["id"]})
    render = (lambda result: answered(result, base)) if request.method != "DELETE" else dict
    return job_answer(job, render, created=request.method == "POST")


Submitter = Callable[[Session, WriteRequest], Submission]


def _submitted(submission: Submitter, write: WriteRequest) -> Submission:
    with session_factory()() as session:  # connects only if the checks read
        return submission(session, write)


def add_writes(
    router: APIRouter, submission: Submitter, answered: Render, reading: frozenset[str]
) -> None:
    """Add to `router` the writes of the resource type it serves. The checks of the methods
    in `reading` read the database, on the thread pool; the others are checked at once (a
    thread hop costs a write under load more than checking its body does)."""

    async def write(
        request: Request,
        into: LedgerDep,
        if_match: str | None = Header(None),
        options: WriteOptions = Depends(scim_write_options),
    ) -> Response:
        """Create, replace, patch or delete: a job on the resource's key, waited for."""
        method = request.method
        body = await json_body(request) if method != "DELETE" else {}
        write = WriteRequest(
            method,  # type: ignore[arg-type]  # the methods the routes below take
            request.path_params.get("resource_id"),
            body,
            if_match,
            options.idempotency_key,
            request.headers.get("user-agent", ""),
            options.actor.sees,
        )
        if method in reading:
            sub = await run_in_threadpool(_submitted, submission, write)
        else:
            sub = _submitted(submission, write)
        job = await record(into, sub, options)
        return write_answer(job, write, answered, base_url(request))

    router.add_api_route("", write, methods=["POST"])
    router.add_api_route("/{resource_id}", write, methods=["PUT", "PATCH", "DELETE"])
