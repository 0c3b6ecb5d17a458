"""/healthz, /readyz and /metrics: for probes and scrapers. /metrics needs a token with the
metrics scope unless IDMIRROR_METRICS_PUBLIC=true (api/guard.py checks it)."""

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.contract import answers
from api.errors import error_response
from identity.db import session_factory
from identity.errors import InsufficientScope, InvalidToken, NotReady
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
