"""/healthz, /readyz, /healthz/stall and /metrics: for probes and scrapers. /metrics needs a token
with the metrics scope unless IDMIRROR_METRICS_PUBLIC=true (api/guard.py checks it).

/readyz says whether this API process can serve (its database and broker answer); a stall of
the workers does not make it unready, since it still accepts writes durably. /healthz/stall is
for alerting: 503 `stalled` while pending work does not move (identity/ledger/progress.py)."""

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.contract import answers
from api.errors import error_response
from identity.db import session_factory
from identity.errors import InsufficientScope, InvalidToken, NotReady, Stalled
from identity.ledger.progress import read_progress
from identity.settings import get_settings
from worker.heartbeat import workers_alive
from worker.producer import get_producer

router = APIRouter(tags=["operations"])


class HealthOut(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class Checks(BaseModel):
    database: Literal["ok", "down"]
    broker: Literal["ok", "down"]


class ReadyOut(BaseModel):
    """Every dependency answered."""

    status: Literal["ready"]
    checks: Checks


@router.get("/healthz", operation_id="getHealth")
async def healthz() -> HealthOut:
    """`ok` while the API process runs."""
    return HealthOut(status="ok")


def _database_ok() -> bool:
    try:
        with session_factory()() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not ready"; the reason is in the database log
        return False


@router.get(
    "/readyz",
    operation_id="getReadiness",
    response_model=ReadyOut,
    responses=answers(NotReady, authenticated=False),
)
async def readyz() -> JSONResponse:
    """Whether PostgreSQL answers a query and Redis a ping (`details.checks` says which not)."""
    database = await run_in_threadpool(_database_ok)
    broker = await run_in_threadpool(get_producer().ping)
    ready = database and broker
    checks = {"database": "ok" if database else "down", "broker": "ok" if broker else "down"}
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return error_response(NotReady("a dependency is unreachable", checks=checks))


class ProgressOut(BaseModel):
    """Pending work, and whether it moves."""

    status: Literal["moving", "idle"]
    pending: int
    oldest_pending_age_seconds: float
    drain_heartbeat_age_seconds: float | None
    sweeper_heartbeat_age_seconds: float | None
    stall_after_seconds: float
    workers_alive: int | None


def _progress() -> dict[str, Any]:
    with session_factory()() as session:
        progress = read_progress(session, stall_after=get_settings().stall_after_seconds)
    return {
        "stalled": progress.stalled,
        "pending": progress.pending,
        "oldest_pending_age_seconds": round(progress.oldest_pending_age, 3),
        "drain_heartbeat_age_seconds": progress.since_drain,
        "sweeper_heartbeat_age_seconds": progress.since_sweep,
        "stall_after_seconds": progress.stall_after,
        "workers_alive": workers_alive(),
    }


@router.get(
    "/healthz/stall",
    operation_id="getStall",
    response_model=ProgressOut,
    responses=answers(Stalled, authenticated=False),
)
async def stall() -> JSONResponse:
    """200 while pending work moves (or none waits), 503 `stalled` when it has not moved for
    IDMIRROR_STALL_AFTER_SECONDS."""
    found = await run_in_threadpool(_progress)
    if found.pop("stalled"):
        message = f"pending work has not moved for {found['stall_after_seconds']:g} seconds"
        return error_response(Stalled(message, **found))
    return JSONResponse({"status": "moving" if found["pending"] else "idle", **found})


@router.get(
    "/metrics",
    operation_id="getMetrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        },
        # Unless IDMIRROR_METRICS_PUBLIC=true: a token with the metrics (or admin) scope.
        **answers(InvalidToken, InsufficientScope, authenticated=False),
    },
)
async def metrics() -> Response:
    """Prometheus text: the ledger's counters and gauges, and the process's own series."""
    body = await run_in_threadpool(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
