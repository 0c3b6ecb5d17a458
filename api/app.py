"""create_app(): the FastAPI application, run by `idmirror api` under uvicorn."""

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import REGISTRY, disable_created_metrics
from sqlalchemy.ext.asyncio import AsyncEngine

from api import console, contract, errors
from api.auth import Principals
from api.guard import Guard
from api.limits import Edge, Limits
from api.metrics import LedgerCollector
from api.ratelimit import RateLimiter
from api.routes import admin, agents, backfills, graphs, health, history, jobs, node_types, users
from api.scim.routes import SCIM_ROUTERS
from api.writes import Ledger
from identity.appliers import apply_on_accept
from identity.db import accept_engine, libpq_url, session_factory
from identity.integrators import TOKENS_CHANNEL, RateLimit
from identity.ledger.accept import Accepts, DrainRequests
from identity.ledger.jobs import NOTIFY_CHANNEL
from identity.ledger.notify import JobWaiter
from identity.settings import Settings, get_settings
from worker.producer import async_dispatcher

_collector: LedgerCollector | None = None
DESCRIPTION = (
    "Mirrors an integrator's users, agents and agent graphs. Every write is a job in a "
    "durable ledger: it answers with its result, or `202` with the job to follow. Errors are "
    'always `{"error": {"code", "message", "status", "details"}}`. '
    "The guide is docs/api.md."
)


def _register_collector() -> None:
    global _collector
    if _collector is None:
        _collector = LedgerCollector(session_factory())
        REGISTRY.register(_collector)


def _guard(settings: Settings) -> Guard:
    """The edge's checks of who asks; its rate limiter is made on the app's event loop."""
    default_rate = RateLimit(
        per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst
    )
    return Guard(
        Principals(settings.internal_token, settings.token_cache_seconds, default_rate),
        None,
        metrics_public=settings.metrics_public,
        backfill_bytes=settings.rate_limit_backfill_bytes,
    )


def _accepts(engine: AsyncEngine, dispatcher: DrainRequests, settings: Settings) -> Accepts:
    """The way writes into the ledger, applying those to idle keys as they are accepted unless
    IDMIRROR_APPLY_ON_ACCEPT is false."""
    return Accepts(
        engine,
        dispatcher,
        idempotency_ttl_hours=settings.idempotency_ttl_hours,
        max_queued=settings.max_queued_writes,
        writers=settings.writers_per_process(),
        apply=apply_on_accept if settings.apply_on_accept else None,
    )


def _include_routers(app: FastAPI) -> None:
    # A request is matched against the routes in this order, each router's in turn (about 2 us
    # a route): the writes both doors take most come first.
    scim_users, *scim_rest = SCIM_ROUTERS
    routers = [users.router, agents.internal, agents.public, scim_users, graphs.router]
    routers += [node_types.internal, node_types.public, jobs.router, history.router]
    routers += [backfills.router, health.router, admin.router, admin.audit, *scim_rest]
    for router in routers:
        app.include_router(router)


def create_app() -> FastAPI:
    settings = get_settings()
    disable_created_metrics()  # a `_created` series beside each counter would only be noise
    guard = _guard(settings)
    principals = guard.principals
    waiter = JobWaiter(
        libpq_url(settings.require_database_url()),
        NOTIFY_CHANNEL,
        {TOKENS_CHANNEL: principals.forget_all},  # a token revoked, an integrator changed
    )
    # A write is recorded or refused within IDMIRROR_ACCEPT_TIMEOUT_SECONDS of its arrival: its
    # wait for a connection and its statement share that bound.
    statement = settings.accept_statement_timeout_seconds
    engine = accept_engine(
        timeout=settings.accept_timeout_seconds - statement, statement_seconds=statement
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = async_dispatcher()  # its connections belong to this loop
        accepts = _accepts(engine, dispatcher, settings)
        app.state.ledger = Ledger(accepts, waiter)
        principals.use(engine)
        limiter = guard.limiter = RateLimiter(settings.require_redis_url())  # this loop's
        await waiter.start()
        # What the start made (modules, routes, models, pools) lives as long as the process:
        # kept out of the collector's full passes, which otherwise walk it all again as often
        # as requests make objects (a backfill makes a few per line).
        gc.freeze()
        yield
        await waiter.stop()
        await limiter.close()
        await accepts.close()
        await dispatcher.close()
        await engine.dispose()

    # /docs and /redoc serve their scripts from the installed package: they work offline.
    app = FastAPIOffline(
        title="idmirror",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/docs-assets",
        # FastAPI's OpenTelemetry hooks, unused (the metrics are Prometheus'): left on, they
        # look the global providers up again at every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    limits = Limits(
        settings.max_body_bytes, settings.max_graph_body_bytes, settings.body_timeout_seconds
    )
    app.add_middleware(Edge, limits=limits, guard=guard)  # logs every answer, refusals and 500s
    errors.install(app)
    _include_routers(app)
    contract.install(app)
    console.install(app, principals)
    _register_collector()
    return app
