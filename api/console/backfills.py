"""The console's backfill pages: runs with their phase and progress, and one run with its rate,
counts, drift, failed items by line and key, and (for operators) retry and cancel."""

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from api.console.auth import Login, signed_in
from api.console.render import ConsoleRoute, page
from api.deps import read_session
from identity.backfill import runs as backfill

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def done_fraction(run: backfill.BackfillOut) -> float:
    """Items with an outcome over items received (0 before any arrived)."""
    counts = run.counts
    done = counts.created + counts.updated + counts.unchanged + counts.superseded + counts.failed
    return min(1.0, done / counts.received) if counts.received else 0.0


@router.get("/backfills")
def backfills(
    request: Request,
    cursor: str | None = Query(None, max_length=512),
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    found = backfill.list_backfills(session, limit=50, cursor=cursor, sees=login.sees)
    return page(
        request,
        "backfills.html",
        login,
        runs=found.items,
        next_cursor=found.next_cursor,
        done=done_fraction,
    )


@router.get("/backfills/{backfill_id}")
def backfill_run(
    request: Request,
    backfill_id: str,
    login: Login = Depends(signed_in),
    session: Session = Depends(read_session),
) -> HTMLResponse:
    run = backfill.get_backfill(session, backfill_id, sees=login.sees)
    return page(
        request,
        "backfill.html",
        login,
        run=run,
        done=done_fraction(run),
        failures=backfill.list_failures(
            session, backfill_id, limit=100, cursor=None, sees=login.sees
        ).items,
        drifted=backfill.list_drift(
            session, backfill_id, limit=100, cursor=None, sees=login.sees
        ).items,
        active=run.status in ("receiving", "running"),
    )
