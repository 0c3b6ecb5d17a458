"""The services one chaos scenario runs on, all its own: an embedded PostgreSQL and Redis under
a directory, and idmirror's API, worker and beat as real processes (`tests.stack.Stack`, the
harness the fault tests use, which runs each in its own process group so it can be killed).

Every fault needs servers no one else uses: PostgreSQL restarts, Redis is flushed or restarted.
"""

import time
from pathlib import Path
from types import TracebackType

from cli.embedded import EmbeddedPostgres, EmbeddedRedis
from cli.main import run_migrations
from tests.stack import TOKEN, Stack

WORKER_ARGS = ("--concurrency", "2")


class Services:
    """PostgreSQL, Redis, API, worker and beat; a context manager that stops all of them."""

    def __init__(self, home: Path, *, api_workers: int = 1, workers: int = 1, **settings: str):
        """`api_workers` uvicorn processes serve the API, and `workers` worker processes
        apply jobs."""
        self.home = home
        self.api_workers = api_workers
        self.workers = workers
        self.postgres = EmbeddedPostgres(home / "postgres")
        self.redis = EmbeddedRedis(home / "redis")
        # A drain that runs past 3 s is killed: the poison scenario's job is found out quickly.
        self.settings = {"drain_time_limit_seconds": "3", **settings}
        self.token = TOKEN
        self.stack: Stack

    def __enter__(self) -> "Services":
        try:
            database_url = self.postgres.start("idmirror_chaos")
            run_migrations(database_url)
            self.redis.start()
            self.stack = Stack(database_url, self.redis.url, self.home / "stack", **self.settings)
            self.start_worker()
            for n in range(2, self.workers + 1):
                hostname = f"--hostname=idmirror{n}@%h"
                self.stack.start("worker", *WORKER_ARGS, hostname, label=f"worker-{n}")
            self.stack.start("beat")
            self.start_api()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if hasattr(self, "stack"):
            self.stack.stop()
        self.redis.stop()
        self.postgres.stop()

    def start_worker(self) -> None:
        """Start a worker and wait for its own "ready." (the log keeps its predecessors')."""
        log = self.home / "stack" / "worker.log"
        before = log.read_bytes().count(b"ready.") if log.exists() else 0
        process = self.stack.start("worker", *WORKER_ARGS)
        deadline = time.monotonic() + 60
        while log.read_bytes().count(b"ready.") <= before:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not become ready; see {log}")
            time.sleep(0.05)

    def start_api(self) -> None:
        self.stack.start("api", "--workers", str(self.api_workers))

    @property
    def postmaster_pid(self) -> int:
        return int((self.home / "postgres" / "postmaster.pid").read_text().split()[0])

    def group_pids(self) -> dict[str, int]:
        """The root pid of the API's and the worker's process groups, as they are now."""
        return {
            name: process.pid
            for name, process in list(self.stack.processes.items())
            if name in ("api", "worker")
        }
