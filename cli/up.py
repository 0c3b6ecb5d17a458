"""`idmirror up`: the whole service in one command, for a first run and for development.

PostgreSQL and Redis are embedded unless their URLs are set; the API, a worker, beat and Flower
run as child processes, watched until a signal or one of them exiting stops them all.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cli.main import console, run_migrations
from identity.settings import get_settings

if TYPE_CHECKING:
    from cli.embedded import EmbeddedPostgres, EmbeddedRedis


def _token(home: Path) -> str:
    """The configured token, else the one saved under IDMIRROR_HOME, else a new saved one."""
    configured = get_settings().internal_token
    if configured:
        return configured
    path = home / "token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _start_services(
    home: Path,
) -> tuple[str, str, "EmbeddedPostgres | None", "EmbeddedRedis | None"]:
    """The configured Postgres and Redis URLs, starting embedded servers for those not set."""
    from cli.embedded import EmbeddedPostgres, EmbeddedRedis

    settings = get_settings()
    # Both made before either starts: a missing `embedded` extra stops `up` before anything runs.
    postgres = None if settings.database_url else EmbeddedPostgres(home / "postgres")
    redis_server = None if settings.redis_url else EmbeddedRedis(home / "redis")
    if postgres:
        console.print(f"starting embedded PostgreSQL in {home / 'postgres'}")
    database_url = postgres.start() if postgres else settings.require_database_url()
    redis_url = redis_server.start() if redis_server else settings.require_redis_url()
    if redis_server:
        console.print(f"started embedded Redis at {redis_url}")
    return database_url, redis_url, postgres, redis_server


def _start_processes(env: dict[str, str]) -> dict[str, subprocess.Popen[bytes]]:
    """The API, worker, beat and Flower, each as `python -m cli <name>` with this environment."""
    me = [sys.executable, "-m", "cli"]
    return {
        name: subprocess.Popen(me + [name], env=env) for name in ("api", "worker", "beat", "flower")
    }


class _Supervisor:
    """Watches the processes `up` started until a signal or one of them exiting, then stops all."""

    def __init__(self, processes: dict[str, subprocess.Popen[bytes]]) -> None:
        self.processes = processes
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        # Also when started in the background, where SIGINT would otherwise be ignored.
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def watch(self) -> None:
        """Return once asked to stop or when any process has exited."""
        while not self.stopping:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    console.print(f"[red]{name} exited with {process.returncode}; stopping[/]")
                    self.stopping = True
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate every process still running; kill those not gone after 15 s."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()  # a warm shutdown for Celery, a graceful one for uvicorn
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def run_up() -> None:
    """Start everything `idmirror up` runs and watch it until told to stop."""
    settings = get_settings()
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    database_url, redis_url, postgres, redis_server = _start_services(home)
    token = _token(home)
    env = {
        **os.environ,
        "IDMIRROR_DATABASE_URL": database_url,
        "IDMIRROR_REDIS_URL": redis_url,
        "IDMIRROR_INTERNAL_TOKEN": token,
        "IDMIRROR_HOME": str(home),
    }
    run_migrations(database_url)

    processes = _start_processes(env)
    base = f"http://{settings.host}:{settings.port}"
    console.print(
        f"\n[bold green]idmirror is up[/]\n"
        f"  API      {base}  (docs at {base}/docs)\n"
        f"  Flower   http://127.0.0.1:{settings.flower_port}\n"
        f"  token    {token}\n"
        f"  data     {home}\n\n"
        f"  export IDMIRROR_TOKEN={token}\n"
        f"Ctrl-C stops everything.\n"
    )
    supervisor = _Supervisor(processes)
    try:
        supervisor.watch()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        if redis_server:
            redis_server.stop()
        if postgres:
            postgres.stop()
        console.print("stopped")
