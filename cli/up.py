"""`idmirror up`: the whole service in one command, for a first run and for development.

PostgreSQL and Redis are embedded unless their URLs are set; the API, a worker, beat and Flower
run as child processes, watched until a signal or one of them exiting stops them all.
"""

import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import typer
from rich.console import Console

from cli.children import Children
from cli.main import run_migrations
from identity.settings import Settings, get_settings

if TYPE_CHECKING:
    from cli.embedded import EmbeddedPostgres, EmbeddedRedis

console = Console(soft_wrap=True)  # a long path stays on its line, in a terminal or a file
Env = dict[str, str]
NAMES = ("api", "worker", "beat", "flower")
READY_SECONDS = 120.0
# `up` is for a first run and for development, where running as root (in a container, in a VM)
# is common; Celery's warning against it is meant for production workers, which the image runs
# as a user of their own.
QUIET_ROOT = "ignore:You're running the worker with superuser privileges"


def _saved(path: Path, configured: str | None, make: Callable[[], str]) -> str:
    """The configured secret, else the one saved at `path`, else a new one saved there."""
    if configured:
        return configured
    if path.exists():
        return path.read_text().strip()
    secret = make()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def _token(home: Path) -> str:
    """The API's bootstrap token: configured, or kept under IDMIRROR_HOME."""
    return _saved(home / "token", get_settings().internal_token, lambda: secrets.token_urlsafe(32))


def _flower_login(home: Path) -> str:
    """Flower's `user:password`: configured, or kept under IDMIRROR_HOME."""
    return _saved(
        home / "flower-login",
        get_settings().flower_basic_auth,
        lambda: "admin:" + secrets.token_urlsafe(18),
    )


def hold_home(home: Path) -> IO[str]:
    """Take IDMIRROR_HOME's lock for as long as this process lives: the kernel releases it when
    the process ends, however it ends. AlreadyRunning while another process holds it."""
    lock = (home / "up.lock").open("a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise AlreadyRunning(f"idmirror up already runs on {home} (pid {holder})") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


class AlreadyRunning(Exception):
    """Another `idmirror up` holds IDMIRROR_HOME."""


def _embedded(home: Path) -> tuple["EmbeddedPostgres | None", "EmbeddedRedis | None"]:
    """The embedded servers for the URLs not set, made but not started: a missing `embedded`
    extra stops `up` before anything runs."""
    from cli.embedded import EmbeddedPostgres, EmbeddedRedis

    settings = get_settings()
    postgres = None if settings.database_url else EmbeddedPostgres(home / "postgres")
    redis_server = None if settings.redis_url else EmbeddedRedis(home / "redis")
    return postgres, redis_server


def _start(postgres: "EmbeddedPostgres | None", redis_server: "EmbeddedRedis | None") -> Env:
    """The environment of the processes: the URLs of the services, embedded ones started."""
    settings = get_settings()
    if postgres:
        console.print(f"starting embedded PostgreSQL in {postgres.directory}")
    database_url = postgres.start() if postgres else settings.require_database_url()
    redis_url = redis_server.start() if redis_server else settings.require_redis_url()
    if redis_server:
        console.print(f"started embedded Redis at {redis_url}")
    home = str(settings.home.resolve())
    warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET_ROOT]))
    return {
        **os.environ,
        "IDMIRROR_DATABASE_URL": database_url,
        "IDMIRROR_REDIS_URL": redis_url,
        "IDMIRROR_INTERNAL_TOKEN": _token(settings.home.resolve()),
        "IDMIRROR_FLOWER_BASIC_AUTH": _flower_login(settings.home.resolve()),
        "IDMIRROR_HOME": home,
        "PYTHONUNBUFFERED": "1",  # lines reach `up` as they are written
        "PYTHONWARNINGS": warnings,
    }


def _answering(settings: Settings, redis_url: str) -> Callable[[], bool]:
    """Whether the API is ready and a worker answers a ping."""
    import httpx

    from worker.app import app as celery_app

    # This process's settings may have no broker (an embedded one started since), and a ping
    # publishes through the app's own connections.
    celery_app.conf.broker_url = redis_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    ready = f"http://{host}:{settings.port}/readyz"

    def answering() -> bool:
        try:
            if httpx.get(ready, timeout=2).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        return bool(celery_app.control.ping(timeout=0.5))

    return answering


def _banner(settings: Settings, env: Env) -> str:
    base = f"http://{settings.host}:{settings.port}"
    token = env["IDMIRROR_INTERNAL_TOKEN"]
    return (
        f"\n[bold green]idmirror is up[/]\n"
        f"  API      {base}  (docs at {base}/docs)\n"
        f"  Flower   http://127.0.0.1:{settings.flower_port}  "
        f"(login {env['IDMIRROR_FLOWER_BASIC_AUTH']})\n"
        f"  token    {token}\n"
        f"  data     {env['IDMIRROR_HOME']}\n\n"
        f"  export IDMIRROR_TOKEN={token}\n"
        f"Ctrl-C stops everything.\n"
    )


def _run(settings: Settings, env: Env) -> bool:
    """Run the processes until a signal (True) or one of them failing (False). Flower starts
    once the API is ready and a worker answers, so its first look finds the worker."""
    children = Children(env, NAMES)
    try:
        for name in ("api", "worker", "beat"):
            children.start(name)
        if not children.wait_for(_answering(settings, env["IDMIRROR_REDIS_URL"]), READY_SECONDS):
            if not children.stopping:
                children.say(f"the API and a worker were not ready in {READY_SECONDS:g} s")
            return children.failed is None and children.stopping
        children.start("flower")
        with children.output:
            console.print(_banner(settings, env))
        children.watch()
        return children.failed is None
    finally:
        children.stop()


def run_up() -> None:
    """Start everything `idmirror up` runs and watch it until told to stop."""
    settings = get_settings()
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        lock = hold_home(home)
    except AlreadyRunning as exc:
        typer.echo(f"idmirror: {exc}", err=True)
        raise typer.Exit(1) from None
    postgres, redis_server = _embedded(home)
    try:
        env = _start(postgres, redis_server)
        run_migrations(env["IDMIRROR_DATABASE_URL"])
        clean = _run(settings, env)
    finally:
        if redis_server:
            redis_server.stop()
            console.print("embedded Redis stopped")
        if postgres:
            postgres.stop()
            console.print("embedded PostgreSQL stopped")
        lock.close()
    if not clean:
        raise typer.Exit(1)
