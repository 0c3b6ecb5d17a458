"""Real services for the tests: Postgres, Redis, and idmirror's own processes.

With IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL set the tests use those servers; otherwise they
start embedded ones. Each stack of processes (API, worker, beat) gets its own environment, so a
fault test can run a stack on a database and a Redis of its own.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, LiteralString, TypeVar

import httpx
import psycopg
from psycopg.abc import Params
from sqlalchemy.engine import make_url

from cli.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-" + uuid.uuid4().hex
# How long a process may take to start: on a busy host, each uvicorn process of several
# imports and compiles the whole app (no bytecode is written here) for tens of seconds.
START_SECONDS = 90

T = TypeVar("T")


CREATED_DATABASES: list[str] = []


def _admin_url(server_url: str) -> str:
    base = make_url(server_url).set(drivername="postgresql")
    return base.set(database="postgres").render_as_string(hide_password=False)


def database_url_for(server_url: str, name: str) -> str:
    """A new, migrated database on the server `server_url` points at."""
    from cli.main import run_migrations

    base = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    CREATED_DATABASES.append(name)
    url = base.set(database=name).render_as_string(hide_password=False)
    run_migrations(url)
    return url


def drop_created_databases(server_url: str) -> None:
    """Leave an external server as the suite found it."""
    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        while CREATED_DATABASES:
            conn.execute(f'DROP DATABASE IF EXISTS "{CREATED_DATABASES.pop()}" WITH (FORCE)')


class Stack:
    """API, worker and beat processes sharing one database and one Redis."""

    def __init__(self, database_url: str, redis_url: str, log_dir: Path, **settings: str) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.port = free_port()
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "IDMIRROR_DATABASE_URL": database_url,
            "IDMIRROR_REDIS_URL": redis_url,
            "IDMIRROR_INTERNAL_TOKEN": TOKEN,
            "IDMIRROR_PORT": str(self.port),
            "IDMIRROR_HOME": str(log_dir),
            "IDMIRROR_SWEEP_INTERVAL_SECONDS": "1",
            "IDMIRROR_SWEEP_AFTER_SECONDS": "2",
            "IDMIRROR_LOG_LEVEL": "WARNING",
            **{f"IDMIRROR_{k.upper()}": v for k, v in settings.items()},
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
            **kwargs,
        )

    def start(self, name: str, *args: str, label: str | None = None) -> subprocess.Popen[bytes]:
        """Start `idmirror <name>` in its own process group, known by `label` (by default its
        name) in `processes` and its log's name."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        label = label or name
        log = open(self.log_dir / f"{label}.log", "ab")  # noqa: SIM115 - the child owns it
        env = self.env
        if name == "worker":  # the worker announces "ready." at INFO
            env = {**env, "IDMIRROR_LOG_LEVEL": "INFO"}
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", name, *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[label] = process
        if name == "api":
            self._wait_for_api(process)
        if name == "worker":
            self._wait_for_worker(process, self.log_dir / f"{label}.log")
        return process

    def _wait_for_api(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"api exited; see {self.log_dir / 'api.log'}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("api did not start")

    def _wait_for_worker(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited; see {log}")
            if log.exists() and b"ready." in log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError("worker did not become ready")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker has children)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def pause(self, name: str, *, resume: bool = False) -> None:
        """Freeze a process group (SIGSTOP), or let it go on (SIGCONT): it keeps its connections."""
        os.killpg(self.processes[name].pid, signal.SIGCONT if resume else signal.SIGSTOP)

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)


@contextlib.contextmanager
def keys_busy(database_url: str, *keys: str) -> Iterator[None]:
    """Hold the keys' advisory locks, as a drain or a backfill chunk applying them does: the
    API leaves writes to them pending for the workers, which apply them once the locks go."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for key in keys:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def scalar(
    conn: psycopg.Connection[Any], query: LiteralString, params: Params | None = None
) -> Any:
    """The first column of the first row `query` returns; a query that returns no row fails."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row: {query}"
    return row[0]
