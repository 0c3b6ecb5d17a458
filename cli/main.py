"""`idmirror up|api|worker|beat|flower|migrate`."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from identity.settings import get_settings

app = typer.Typer(
    help="idmirror: mirror users and agents through a durable job ledger.", no_args_is_help=True
)
console = Console()
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def run_migrations(database_url: str) -> None:
    """Bring the schema to the newest revision."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


@app.command()
def migrate() -> None:
    """Apply database migrations to IDMIRROR_DATABASE_URL."""
    run_migrations(get_settings().require_database_url())
    console.print("migrations applied")


@app.command()
def api(workers: int = typer.Option(1, help="uvicorn worker processes")) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def worker(
    concurrency: int | None = typer.Option(None, help="worker processes (default: CPU count)"),
) -> None:
    """Run a Celery worker that applies jobs."""
    from worker.app import app as celery_app

    settings = get_settings()
    argv = ["worker", f"--loglevel={settings.log_level}", "--hostname=idmirror@%h"]
    concurrency = concurrency or settings.worker_concurrency
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@app.command()
def beat() -> None:
    """Run Celery beat (the sweeper's schedule). Run exactly one."""
    from worker.app import app as celery_app

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    schedule = settings.home / "celerybeat-schedule"
    celery_app.start(["beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"])


@app.command()
def flower() -> None:
    """Run Flower, the Celery monitor."""
    from worker.app import app as celery_app

    celery_app.start(["flower", f"--port={get_settings().flower_port}", "--address=127.0.0.1"])


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


@app.command()
def up() -> None:
    """Run it all: embedded Postgres and Redis (unless URLs are set), API, worker, beat, Flower."""
    from cli.embedded import EmbeddedPostgres, EmbeddedRedis

    settings = get_settings()
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    postgres = redis_server = None
    database_url, redis_url = settings.database_url, settings.redis_url
    if not database_url:
        console.print(f"starting embedded PostgreSQL in {home / 'postgres'}")
        postgres = EmbeddedPostgres(home / "postgres")
        database_url = postgres.start()
    if not redis_url:
        redis_server = EmbeddedRedis(home / "redis")
        redis_url = redis_server.start()
        console.print(f"started embedded Redis at {redis_url}")
    token = _token(home)
    env = {
        **os.environ,
        "IDMIRROR_DATABASE_URL": database_url,
        "IDMIRROR_REDIS_URL": redis_url,
        "IDMIRROR_INTERNAL_TOKEN": token,
        "IDMIRROR_HOME": str(home),
    }
    run_migrations(database_url)

    me = [sys.executable, "-m", "cli"]
    processes = {
        name: subprocess.Popen(me + [name], env=env) for name in ("api", "worker", "beat", "flower")
    }
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
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    console.print(f"[red]{name} exited with {process.returncode}; stopping[/]")
                    stopping = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis_server:
            redis_server.stop()
        if postgres:
            postgres.stop()
        console.print("stopped")
