"""What the console does, not only shows: signing in and out, and the operator's actions on
failed jobs (retry, discard, one or every job a filter matches) and on backfills (retry their
failed items, cancel). Every action is a POST from the console's own form (auth.operator), acts
as the signed-in token (retries and discards are entries of the audit trail under it), is
logged, and ends on a page that shows the result."""

import logging
import uuid
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from api.console.auth import (
    COOKIE,
    COOKIE_SECONDS,
    Action,
    Login,
    console_role,
    form,
    operator,
    resolve,
    safe_next,
    signed_in,
)
from api.console.render import ConsoleRoute, page
from api.routes.backfills import cancel_run, retry_run
from api.writes import LedgerDep, WriteOptions, origin_of, submit_retries
from identity.audit import Origin
from identity.db import transaction
from identity.errors import JobNotFound
from identity.keys import searched_keys
from identity.ledger import deadletter, retries
from identity.ledger.jobs import Submission
from identity.ledger.retries import BULK_LIMIT, FailedFilter

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    token = fields.get("token", "").strip()
    target = safe_next(fields.get("next"))
    if console_role(await resolve(request, token) if token else None) is None:
        return page(request, "login.html", None, 401, next=target, failed=True)
    answer = RedirectResponse(target, 303)
    answer.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
async def logout(_: Login = Depends(signed_in)) -> Response:
    answer = RedirectResponse("/console/login", 303)
    answer.delete_cookie(COOKIE, path="/console")
    return answer


def _back(path: str, notice: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({**params, 'notice': notice})}", 303)


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound("no job has this id", job_id=raw) from None


def _sent_by(request: Request, action: Action) -> WriteOptions:
    """Retries recorded at once, by the signed-in token, from this request."""
    actor = action.login.principal.actor
    return WriteOptions(True, 0.0, None, actor, origin_of(request))


def _resubmission(job_id: uuid.UUID, sees: str | None) -> list[Submission]:
    with transaction() as session:
        return [retries.resubmission(session, job_id, sees=sees)]


@router.post("/jobs/{job_id}/retry")
async def retry_job(
    job_id: str, request: Request, into: LedgerDep, action: Action = Depends(operator)
) -> Response:
    subs = await run_in_threadpool(_resubmission, _job_id(job_id), action.login.sees)
    done = await submit_retries(into, subs, _sent_by(request, action))
    pair = (done.retried or done.already_retried)[0]
    log.info("console: job %s retried as %s", job_id, pair.retry_job_id)
    return _back(f"/console/jobs/{pair.retry_job_id}", f"retry of job {job_id}")


def _discard(job_id: uuid.UUID, action: Action, origin: Origin) -> None:
    with transaction() as session:
        deadletter.discard(session, job_id, actor=action.login.principal.actor, origin=origin)


@router.post("/jobs/{job_id}/discard")
async def discard_job(
    job_id: str, request: Request, action: Action = Depends(operator)
) -> Response:
    await run_in_threadpool(_discard, _job_id(job_id), action, origin_of(request))
    log.info("console: job %s discarded", job_id)
    return _back(f"/console/jobs/{job_id}", "discarded")


def _filter(action: Action) -> tuple[FailedFilter, dict[str, str]]:
    kept = {name: action.fields.get(name, "") for name in ("kind", "code", "key")}
    keys = searched_keys(kept["key"]) if kept["key"] else None
    where = FailedFilter(kept["kind"] or None, keys, kept["code"] or None, action.login.sees)
    return where, kept


def _resubmissions(where: FailedFilter) -> list[Submission]:
    with transaction() as session:
        return retries.resubmissions(session, where, limit=BULK_LIMIT)


@router.post("/failed/retry")
async def retry_matching(
    request: Request, into: LedgerDep, action: Action = Depends(operator)
) -> Response:
    where, kept = _filter(action)
    subs = await run_in_threadpool(_resubmissions, where)
    done = await submit_retries(into, subs, _sent_by(request, action))
    log.info("console: %d failed jobs retried (%s)", len(done.retried), kept)
    notice = f"retried {len(done.retried)} jobs" + (
        f" (the first {BULK_LIMIT}; retry again for more)" if len(subs) == BULK_LIMIT else ""
    )
    return _back("/console/failed", notice, **kept)


def _discard_matching(where: FailedFilter, action: Action, origin: Origin) -> int:
    with transaction() as session:
        discarded = deadletter.discard_matching(
            session, where, limit=BULK_LIMIT, actor=action.login.principal.actor, origin=origin
        )
    return len(discarded.discarded)


@router.post("/failed/discard")
async def discard_matching(request: Request, action: Action = Depends(operator)) -> Response:
    where, kept = _filter(action)
    count = await run_in_threadpool(_discard_matching, where, action, origin_of(request))
    log.info("console: %d failed jobs discarded (%s)", count, kept)
    return _back("/console/failed", f"discarded {count} jobs", **kept)


@router.post("/backfills/{backfill_id}/retry")
async def retry_backfill(backfill_id: str, action: Action = Depends(operator)) -> Response:
    await run_in_threadpool(retry_run, backfill_id, action.login.sees)
    log.info("console: backfill %s retried", backfill_id)
    return _back(f"/console/backfills/{backfill_id}", "its failed items are applied again")


@router.post("/backfills/{backfill_id}/cancel")
async def cancel_backfill(backfill_id: str, action: Action = Depends(operator)) -> Response:
    await run_in_threadpool(cancel_run, backfill_id, action.login.sees)
    log.info("console: backfill %s cancelled", backfill_id)
    return _back(f"/console/backfills/{backfill_id}", "cancelled")
