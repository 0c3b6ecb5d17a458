"""`idmirror up|api|worker|beat|flower|migrate|backfill`."""

import os
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from cli import admin
from cli.embedded import EmbeddedUnavailable
from cli.remote import api_token
from identity.logs import configure as configure_logs
from identity.logs import logging_config
from identity.settings import InvalidSettings, Settings, get_settings

if TYPE_CHECKING:
    pass


app = typer.Typer(no_args_is_help=True)
app.add_typer(admin.tokens, name="tokens")
app.add_typer(admin.integrators, name="integrators")
app.command("audit")(admin.audit)
console = Console()
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def main() -> None:
    """The `idmirror` command. What stops it before it could start ends it with one line on
    stderr and exit code 2, without a traceback."""
    try:
        app()
    except (InvalidSettings, EmbeddedUnavailable) as exc:
        typer.echo(f"idmirror: {exc}", err=True)
        raise SystemExit(2) from None


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"idmirror {version('idmirror')}")
        raise typer.Exit()


@app.callback()
def _options(
    _: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """idmirror: mirror users and agents through a durable job ledger."""


def run_migrations(database_url: str) -> None:
    """Bring the schema to the newest revision, on a server new enough for the service."""
    import psycopg
    from alembic import command
    from alembic.config import Config

    from identity.db import UnsupportedServer, check_server_version, libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        try:
            check_server_version(conn.info.server_version)
        except UnsupportedServer as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None

    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


@app.command()
def migrate() -> None:
    """Apply database migrations to IDMIRROR_DATABASE_URL."""
    run_migrations(get_settings().require_database_url())
    console.print("migrations applied")


def api_settings(workers: int | None) -> Settings:
    """The settings of `idmirror api`; `--workers` is set as IDMIRROR_API_WORKERS for every
    process it starts, which read their settings anew and share the accept writers by it."""
    if workers:
        os.environ["IDMIRROR_API_WORKERS"] = str(workers)
        get_settings.cache_clear()
    return get_settings()


@app.command()
def api(
    workers: int | None = typer.Option(
        None, help="uvicorn worker processes (default: IDMIRROR_API_WORKERS, 1)"
    ),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from cli.processes import serve_spread, spreads

    settings = api_settings(workers)
    settings.require_database_url()
    settings.require_redis_url()
    options: dict[str, Any] = dict(
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.api_workers,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        access_log=False,  # api/access.py logs each request, with its job and request ids
    )
    if spreads(settings.api_workers, settings.port):
        serve_spread(uvicorn.Config("api.app:create_app", **options))
    else:
        uvicorn.run("api.app:create_app", **options)


def _banner(settings: Settings) -> list[str]:
    """Celery's options for its start-up banner: none among JSON lines."""
    return ["--quiet"] if settings.log_format == "json" else []


@app.command()
def worker(
    concurrency: int | None = typer.Option(None, help="worker processes (default: CPU count)"),
    hostname: str = typer.Option(
        "idmirror@%h", help="the worker's node name, unique among the workers (%h: this host)"
    ),
) -> None:
    """Run a Celery worker that applies jobs, started again if it ever exits on its own."""
    from cli.supervise import run_worker

    settings = get_settings()
    settings.require_redis_url()
    configure_logs(settings.log_level, settings.log_format)
    argv = [
        *_banner(settings),
        "worker",
        f"--loglevel={settings.log_level}",
        f"--hostname={hostname}",
    ]
    concurrency = concurrency or settings.worker_concurrency
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    raise typer.Exit(run_worker(argv))


@app.command()
def beat() -> None:
    """Run Celery beat (the sweeper's schedule). Run exactly one."""
    from worker.app import app as celery_app

    settings = get_settings()
    settings.require_redis_url()
    settings.home.mkdir(parents=True, exist_ok=True)
    schedule = settings.home / "celerybeat-schedule"
    celery_app.start(
        [*_banner(settings), "beat", f"--loglevel={settings.log_level}", f"--schedule={schedule}"]
    )


@app.command()
def flower() -> None:
    """Run Flower, the Celery monitor, behind the login IDMIRROR_FLOWER_BASIC_AUTH."""
    from worker.app import app as celery_app

    settings = get_settings()
    settings.require_redis_url()
    if not settings.flower_basic_auth:
        console.print(
            "[red]IDMIRROR_FLOWER_BASIC_AUTH is not set: Flower shows every task's arguments "
            "and needs a login (user:password)[/]"
        )
        raise typer.Exit(2)
    configure_logs(settings.log_level, settings.log_format)  # before Flower would add its own
    celery_app.start(
        [
            "flower",
            f"--port={settings.flower_port}",
            f"--address={settings.flower_host}",
            f"--logging={settings.log_level.lower()}",
            f"--basic-auth={settings.flower_basic_auth}",
        ]
    )


@app.command()
def up() -> None:
    """Run it all: embedded Postgres and Redis (unless URLs are set), API, worker, beat, Flower."""
    from cli.up import run_up

    run_up()


@app.command()
def backfill(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="NDJSON, one item a line"),
    mode: str = typer.Option("upsert", help="upsert, or mirror (also report agents not in FILE)"),
    prune: bool = typer.Option(False, help="with --mode mirror: soft-delete those agents"),
    dry_run: bool = typer.Option(False, help="count and report, change nothing"),
    snapshot_at: str | None = typer.Option(None, help="RFC 3339 version of undated items"),
    url: str | None = typer.Option(None, envvar="IDMIRROR_URL", help="API base URL"),
    token: str | None = typer.Option(None, envvar="IDMIRROR_TOKEN", help="bearer token"),
    poll: float = typer.Option(0.5, help="seconds between progress checks"),
) -> None:
    """Upload FILE as a backfill, follow it to its end and print its counts."""
    from cli.backfill import run_backfill

    settings = get_settings()
    base = url or f"http://{settings.host}:{settings.port}"
    run_backfill(
        file,
        base,
        api_token(token),
        mode=mode,
        prune=prune,
        dry_run=dry_run,
        snapshot_at=snapshot_at,
        poll=poll,
    )
