"""The faults a chaos scenario injects, one each, while its write stream runs.

Each takes the running services, does its damage, restarts only what it killed, and returns
the monotonic time at which the fault was over (the server or process back, the flush done):
recovery is measured from there. Nothing else is restarted: the API, worker and beat that were
not killed must find their way back by themselves.
"""

import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import psycopg
import redis

from bench.chaos.services import Services
from cli.embedded import EmbeddedRedis


@dataclass(frozen=True)
class Fault:
    name: str  # the test id and the report row
    title: str
    inject: Callable[[Services], float]


def kill_worker(services: Services) -> float:
    """SIGKILL to the worker's whole group (pool children mid-drain), then a new worker."""
    services.stack.kill("worker", signal.SIGKILL)
    services.start_worker()
    return time.monotonic()


def kill_api(services: Services) -> float:
    """SIGKILL to the API mid-batch: requests in flight get no answer; then a new API."""
    services.stack.kill("api", signal.SIGKILL)
    services.start_api()
    return time.monotonic()


def flush_redis(services: Services) -> float:
    """FLUSHALL: every queued drain message and queued flag is gone."""
    client = redis.Redis.from_url(services.redis.url)
    try:
        client.flushall()
    finally:
        client.close()
    return time.monotonic()


def restart_redis(services: Services) -> float:
    """Stop Redis (it keeps nothing on disk) while drains are running, start it again on the
    same port a second later.

    So that drains are running when it goes, a transaction holds `agents` in ACCESS EXCLUSIVE
    mode from a second before until half a second after: the worker's drains of agent jobs
    wait on it, as a drain of a large graph update would run on, and finish after Redis is back.
    """
    with psycopg.connect(services.stack.database_url) as conn:
        conn.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.0)
        port = services.redis.port
        services.redis.stop()
        time.sleep(1.0)
        services.redis = EmbeddedRedis(services.home / "redis", port=port)
        services.redis.start()
        ended = time.monotonic()
        time.sleep(0.5)
        conn.rollback()
    return ended


def _with_sync_waits(services: Services, action: Callable[[], None]) -> float:
    """Run `action` while sync writes are waiting for their jobs: the worker is held (SIGSTOP,
    not restarted) for a second before and until the action is over, so jobs stay pending and
    their requests wait, re-reading their job rows, when the database goes away."""
    services.stack.pause("worker")
    try:
        time.sleep(1.0)
        action()
    finally:
        services.stack.pause("worker", resume=True)
    return time.monotonic()


def _restart_postgres(services: Services, sig: signal.Signals) -> None:
    postmaster = services.postmaster_pid
    os.kill(postmaster, sig)
    deadline = time.monotonic() + 60
    while psutil.pid_exists(postmaster):
        if time.monotonic() > deadline:
            raise RuntimeError(f"postmaster {postmaster} still runs after {sig.name}")
        time.sleep(0.05)
    time.sleep(1.0)
    services.postgres.stop()  # forgets the dead server
    services.postgres.start("idmirror_chaos")  # same data directory, same socket


def restart_postgres_fast(services: Services) -> float:
    """SIGINT to the postmaster (`pg_ctl stop -m fast`), then start it on the same data."""
    return _with_sync_waits(services, lambda: _restart_postgres(services, signal.SIGINT))


def restart_postgres_immediate(services: Services) -> float:
    """SIGQUIT to the postmaster (`pg_ctl stop -m immediate`: no checkpoint, crash recovery)."""
    return _with_sync_waits(services, lambda: _restart_postgres(services, signal.SIGQUIT))


def _terminate_backends(services: Services) -> None:
    with psycopg.connect(services.stack.database_url, autocommit=True) as conn:
        for _ in range(3):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            time.sleep(0.5)


def terminate_connections(services: Services) -> float:
    """pg_terminate_backend on every other connection to the database, three times."""
    return _with_sync_waits(services, lambda: _terminate_backends(services))


STALL_SECONDS = 30.0
# A params pattern that backtracks for ever on the value below: its graph update never finishes,
# and the drain's time limit (3 s in these scenarios) kills it, every time it is started.
BACKTRACKING = {"type": "object", "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}}}


def stall_ledger(services: Services) -> float:
    """Hold `key_heads` locked for STALL_SECONDS, as a stuck session or a long migration would:
    writes cannot be recorded, and must be refused in time (503 overloaded), not pile up."""
    with psycopg.connect(services.stack.database_url) as conn:
        conn.execute("LOCK TABLE key_heads IN ACCESS EXCLUSIVE MODE")
        time.sleep(STALL_SECONDS)
        conn.rollback()
    return time.monotonic()


def poison_job(services: Services) -> float:
    """A graph update whose apply kills its drain each time: it must end failed after a few
    tries, and no other job may wait on it for longer than that."""
    owner = f"poison-{uuid.uuid4().hex[:8]}"
    node_type = str(uuid.uuid4())
    with services.stack.client() as client:
        user = {"email": "p@example.com", "slug": owner}
        client.put(f"/v1/internal/users/{uuid.uuid4()}", json=user).raise_for_status()
        agent = {"display_name": "P"}
        client.put(f"/v1/internal/agents/bot@{owner}", json=agent).raise_for_status()
        schema = {"name": "slow", "params_schema": BACKTRACKING}
        client.put(f"/v1/internal/node-types/{node_type}", json=schema).raise_for_status()
        op = {"op": "create_node", "node_type_id": node_type, "params_used": {"p": "a" * 40 + "!"}}
        client.post(
            f"/v1/agents/bot@{owner}/update",
            json={"operations": [op]},
            headers={"Prefer": "respond-async"},
        ).raise_for_status()
    return time.monotonic()


FAULTS = (
    Fault("worker-sigkill", "worker SIGKILL mid-drain", kill_worker),
    Fault("api-sigkill", "API SIGKILL mid-batch", kill_api),
    Fault("redis-flushall", "Redis FLUSHALL", flush_redis),
    Fault("redis-restart", "Redis restart", restart_redis),
    Fault("postgres-fast", "PostgreSQL restart, fast (SIGINT)", restart_postgres_fast),
    Fault(
        "postgres-immediate", "PostgreSQL restart, immediate (SIGQUIT)", restart_postgres_immediate
    ),
    Fault("pg-terminate", "pg_terminate_backend during sync waits", terminate_connections),
    Fault("lock-stall", f"ledger locked for {STALL_SECONDS:g} s", stall_ledger),
    Fault("poison-job", "a job that kills its drain every time", poison_job),
)
