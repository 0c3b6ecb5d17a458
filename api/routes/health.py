"""/healthz, /readyz and /metrics: no token, for probes and scrapers."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.errors import error_response
from identity.db import session_factory
from identity.errors import NotReady
from worker.producer import get_producer

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_ok() -> bool:
    try:
        with session_factory()() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not ready"; the reason is in the database log
        return False


@router.get("/readyz")
async def readyz() -> JSONResponse:
    database = await run_in_threadpool(_database_ok)
    broker = await run_in_threadpool(get_producer().ping)
    ready = database and broker
    checks = {"database": "ok" if database else "down", "broker": "ok" if broker else "down"}
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return error_response(NotReady("a dependency is unreachable", checks=checks))


@router.get("/metrics")
async def metrics() -> Response:
    body = await run_in_threadpool(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
