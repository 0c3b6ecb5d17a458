"""The service stack a benchmark drives: Postgres, Redis, migrations, API, worker and beat.

Postgres and Redis are embedded (under a temporary directory) unless IDMIRROR_DATABASE_URL /
IDMIRROR_REDIS_URL are set. The API, worker and beat run as `python -m cli ...` subprocesses,
each in its own process group, and are always stopped, also when the benchmark fails.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql

from bench import statements
from cli.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from cli.main import run_migrations
from identity.db import libpq_url

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-secret"
# Set by the stack itself; any other IDMIRROR_* variable in the environment passes on as tuning.
_OWN_SETTINGS = {
    "IDMIRROR_DATABASE_URL",
    "IDMIRROR_REDIS_URL",
    "IDMIRROR_INTERNAL_TOKEN",
    "IDMIRROR_PORT",
    "IDMIRROR_HOST",
    "IDMIRROR_HOME",
    "IDMIRROR_LOG_LEVEL",
}


def answers(url: str) -> bool:
    """Whether a GET of `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass(frozen=True)
class StackConfig:
    """How the service processes are run; `describe()` names it in reports."""

    api_workers: int = 1
    worker_concurrency: int | None = None

    def tuning(self) -> dict[str, str]:
        """IDMIRROR_* tuning variables from the environment, passed on to the services."""
        return {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith("IDMIRROR_") and k not in _OWN_SETTINGS
        }

    @property
    def worker_processes(self) -> int:
        """The worker's prefork concurrency: as asked, else the CPU count (Celery's default)."""
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def label(self) -> str:
        """Short, for a table column: API processes and worker processes."""
        return f"API x{self.api_workers}, worker x{self.worker_processes}"

    def describe(self) -> str:
        parts = [
            f"API: {self.api_workers} uvicorn process{'es' if self.api_workers > 1 else ''}",
            f"worker: 1 Celery worker, prefork concurrency {self.worker_processes}",
        ]
        parts += [f"{k}={v}" for k, v in self.tuning().items()]
        return "; ".join(parts)


@dataclass
class Stack:
    """A running stack. Use as a context manager: everything it started is stopped on exit."""

    config: StackConfig = field(default_factory=StackConfig)
    keep: bool = False
    # Server settings for every session of the database (ALTER DATABASE ... SET), made before the
    # services start: for a database of the stack's own, not one that outlives it.
    database_settings: dict[str, str] = field(default_factory=dict)
    # Count Postgres's time by statement (bench/statements.py): the embedded server is started
    # again with pg_stat_statements preloaded; an external one must preload it itself.
    statement_stats: bool = False

    home: Path = field(init=False)
    database_url: str = field(init=False)
    redis_url: str = field(init=False)
    port: int = field(init=False)
    embedded: bool = field(init=False, default=False)
    counts_statements: bool = field(init=False, default=False)  # statement_stats, and it works
    env: dict[str, str] = field(init=False, default_factory=dict)  # of every process it starts
    processes: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    _postgres: EmbeddedPostgres | None = field(init=False, default=None)
    _redis: EmbeddedRedis | None = field(init=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pg_conninfo(self) -> str:
        return libpq_url(self.database_url)

    def __enter__(self) -> "Stack":
        self.home = Path(tempfile.mkdtemp(prefix="idmirror-bench-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start(self) -> None:
        database_url = os.environ.get("IDMIRROR_DATABASE_URL")
        redis_url = os.environ.get("IDMIRROR_REDIS_URL")
        if not database_url:
            self._postgres = EmbeddedPostgres(self.home / "postgres")
            database_url = self._postgres.start()
            self.embedded = True
            if self.statement_stats:
                with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
                    conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                self._postgres.stop()
                database_url = self._postgres.start()
        if not redis_url:
            self._redis = EmbeddedRedis(self.home / "redis")
            redis_url = self._redis.start()
        self.database_url, self.redis_url = database_url, redis_url
        run_migrations(database_url)
        if self.statement_stats:
            with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
                self.counts_statements = statements.enable(conn)
        if self.database_settings:
            with psycopg.connect(self.pg_conninfo, autocommit=True) as conn:
                for name, value in self.database_settings.items():
                    setting = sql.SQL(".").join(map(sql.Identifier, name.split(".")))
                    statement = sql.SQL("ALTER DATABASE {} SET {} = {}")
                    conn.execute(statement.format(sql.Identifier(conn.info.dbname), setting, value))

        self.port = free_port()
        self.env = {
            **os.environ,
            "IDMIRROR_DATABASE_URL": database_url,
            "IDMIRROR_REDIS_URL": redis_url,
            "IDMIRROR_INTERNAL_TOKEN": TOKEN,
            "IDMIRROR_HOST": "127.0.0.1",
            "IDMIRROR_PORT": str(self.port),
            "IDMIRROR_HOME": str(self.home),
            "IDMIRROR_LOG_LEVEL": "WARNING",
        }
        (self.home / "logs").mkdir()
        worker = ["worker"]
        if self.config.worker_concurrency:
            worker += ["--concurrency", str(self.config.worker_concurrency)]
        self._spawn_api()
        self.spawn("worker", ["cli", *worker])
        self.spawn("beat", ["cli", "beat"])
        self.wait_until(self._ready, timeout=90)

    def _spawn_api(self) -> None:
        self.spawn("api", ["cli", "api", "--workers", str(self.config.api_workers)])

    def restart_api(self, api_workers: int) -> None:
        """Stop the API and start it again with `api_workers` uvicorn processes, on the same
        port; Postgres, Redis, the worker and beat run on. Process roots change with it."""
        api = self.processes.pop("api")
        with contextlib.suppress(ProcessLookupError):
            api.send_signal(signal.SIGINT)
        self._reap(api)
        self.config = replace(self.config, api_workers=api_workers)
        self._spawn_api()
        self.wait_until(self._ready, timeout=90)

    def spawn(self, name: str, module_args: list[str]) -> None:
        """Start `python -m <module_args>` in its own process group with the services'
        environment, logging to logs/<name>.log; it is stopped with the rest of the stack."""
        with open(self.home / "logs" / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", *module_args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def _ready(self) -> bool:
        """/readyz answers 200 and the Celery worker answers a ping."""
        return answers(self.base_url + "/readyz") and self.celery_ping()

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()` is true; fails at once when a process of the stack has exited."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack was not ready after {timeout:.0f}s; see {self.home}")
            time.sleep(0.3)

    def celery_ping(self) -> bool:
        from celery import Celery

        app = Celery("bench", broker=self.redis_url)
        try:
            return bool(app.control.inspect(timeout=1.0).ping())
        finally:
            app.close()

    def celery_task_totals(self) -> dict[str, int] | None:
        """Tasks each name has run on all workers so far (from `celery inspect stats`)."""
        from celery import Celery

        app = Celery("bench", broker=self.redis_url)
        try:
            stats = app.control.inspect(timeout=2.0).stats() or {}
        except Exception:  # an unanswered broadcast only loses this optional figure
            return None
        finally:
            app.close()
        totals: dict[str, int] = {}
        for worker in stats.values():
            for name, count in (worker.get("total") or {}).items():
                totals[name] = totals.get(name, 0) + int(count)
        return totals

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def pg_connect(self) -> psycopg.Connection:
        return psycopg.connect(self.pg_conninfo, autocommit=True)

    def process_roots(self) -> dict[str, list[int]]:
        """The root pid of each process group whose CPU a benchmark samples."""
        roots = {name: [p.pid] for name, p in self.processes.items()}
        with contextlib.suppress(psycopg.Error, psutil.Error), self.pg_connect() as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()
            if backend is not None and psutil.pid_exists(backend[0]):
                postmaster = psutil.Process(backend[0]).parent()
                if postmaster is not None and "postgres" in postmaster.name():
                    roots["postgres"] = [postmaster.pid]
        with contextlib.suppress(redis.RedisError, psutil.Error):
            pid = int(self.redis_client().info("server")["process_id"])
            if psutil.pid_exists(pid) and "redis" in psutil.Process(pid).name():
                roots["redis"] = [pid]
        return roots

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> None:
        """Wait for a process that was asked to stop (SIGKILL to its group after 20 s), then
        kill what is left of its group."""
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        # Children that outlived their parent (prefork pool, uvicorn workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the services (SIGINT, then SIGKILL to their process group), then the servers."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            self._reap(process)
        self.processes.clear()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if not self.keep and getattr(self, "home", None) is not None:
            shutil.rmtree(self.home, ignore_errors=True)
