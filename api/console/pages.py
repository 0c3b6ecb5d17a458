"""The console's pages over the ledger: the overview (pending work, heartbeats, charts), jobs by
state, kind and key, a job, a key's whole history, and the dead-letter view."""

import uuid
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from api.console.auth import Login, signed_in
from api.console.charts import Series, line_chart
from api.console.render import ConsoleRoute, page
from api.deps import read_session
from identity.backfill.runs import list_backfills
from identity.errors import JobNotFound
from identity.keys import searched_keys
from identity.ledger import activity, deadletter, history
from identity.ledger import jobs as ledger
from identity.ledger.progress import read_progress
from identity.ledger.retries import FailedFilter
from identity.settings import get_settings
from worker.heartbeat import workers_alive

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
STATES = ("pending", "applied", "failed")
OUTCOMES = ("created", "updated", "unchanged", "superseded", "deleted")


@router.get("")
def overview(
    request: Request,
    hours: Literal[1, 6, 24] = 6,
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    progress = read_progress(session, stall_after=get_settings().stall_after_seconds)
    buckets = activity.activity(session, hours=hours, buckets=60, sees=login.sees)
    starts = [b.start for b in buckets]
    per_minute = 60 / (hours * 3600 / len(buckets))
    charts = [
        line_chart(
            "Throughput",
            "jobs/min",
            starts,
            [
                Series("accepted", "s-accepted", [b.accepted * per_minute for b in buckets]),
                Series("finished", "s-finished", [b.finished * per_minute for b in buckets]),
                Series("failed", "s-failed", [b.failed * per_minute for b in buckets]),
            ],
        ),
        line_chart(
            "Latency, accept to final status",
            "s",
            starts,
            [
                Series("median", "s-finished", [b.p50 for b in buckets]),
                Series("95th percentile", "s-failed", [b.p95 for b in buckets]),
            ],
        ),
        line_chart(
            "Backlog",
            "jobs",
            starts,
            [Series("pending", "s-accepted", [b.backlog for b in buckets])],
        ),
    ]
    return page(
        request,
        "overview.html",
        login,
        progress=progress,
        workers=workers_alive(),
        groups=deadletter.failure_groups(session, FailedFilter(sees=login.sees))[:5],
        backfills=list_backfills(session, limit=5, cursor=None, sees=login.sees).items,
        charts=charts,
        hours=hours,
    )


def _keys(key: str | None) -> list[str] | None:
    return searched_keys(key) if key else None


@router.get("/jobs")
def jobs(
    request: Request,
    status: Literal["", "pending", "applied", "failed"] = "",
    kind: str = Query("", max_length=64),
    key: str = Query("", max_length=300),
    outcome: str = Query("", max_length=32),
    order: Literal["newest", "oldest"] = "newest",
    cursor: str | None = Query(None, max_length=512),
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    found = ledger.list_jobs(
        session,
        limit=50,
        cursor=cursor,
        status=status or None,
        keys=_keys(key),
        kind=kind or None,
        outcome=outcome or None,
        order=order,
        sees=login.sees,
    )
    filters = {"status": status, "kind": kind, "key": key, "outcome": outcome, "order": order}
    return page(
        request,
        "jobs.html",
        login,
        jobs=found.items,
        next_cursor=found.next_cursor,
        filters=filters,
        states=STATES,
        outcomes=OUTCOMES,
    )


@router.get("/jobs/{job_id}")
def job(
    request: Request,
    job_id: str,
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    try:
        found = ledger.get_job_detail(session, uuid.UUID(job_id), sees=login.sees)
    except ValueError:
        raise JobNotFound("no job has this id", job_id=job_id) from None
    latency = None
    if found.finished_at is not None:
        latency = (found.finished_at - found.accepted_at).total_seconds()
    return page(request, "job.html", login, job=found, latency=latency)


@router.get("/history")
def key_history(
    request: Request,
    key: str = Query("", max_length=300),
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    keys = _keys(key) or []
    entries = history.key_history(session, keys, sees=login.sees) if keys else []
    return page(request, "history.html", login, key=key, keys=keys, entries=entries)


@router.get("/failed")
def failed(
    request: Request,
    kind: str = Query("", max_length=64),
    code: str = Query("", max_length=64),
    key: str = Query("", max_length=300),
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    where = FailedFilter(kind or None, _keys(key), code or None, login.sees)
    groups = deadletter.failure_groups(session, where)
    return page(
        request,
        "failed.html",
        login,
        groups=groups,
        matching=sum(g.count for g in groups),
        jobs=deadletter.open_failures(session, where, limit=100),
        filters={"kind": kind, "code": code, "key": key},
    )


@router.get("/login")
def login_form(request: Request, next: str = Query("/console", max_length=2000)) -> HTMLResponse:
    return page(request, "login.html", None, next=next, failed=False)


@router.get("/search")
def search(
    q: str = Query("", max_length=300),
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> RedirectResponse:
    """A job's id goes to the job, anything else to the history of the key it names."""
    term = q.strip()
    try:
        job_id = ledger.get_job(session, uuid.UUID(term), sees=login.sees).id
        return RedirectResponse(f"/console/jobs/{job_id}", 303)
    except (ValueError, JobNotFound):
        return RedirectResponse(f"/console/history?{urlencode({'key': term})}", 303)
