"""Engine and session factory; one pool per process, disposed after fork. The API also keeps an
async engine, for accepting writes on its event loop."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from identity.settings import get_settings

# Errors that say the database could not run the statement now, not that the statement is wrong:
# a transaction that meets one rolls back and is tried again.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def sqlalchemy_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme the operator wrote."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


# The oldest PostgreSQL the service runs on: the suite runs on 15 and 18.
MIN_SERVER_VERSION = 150000


class UnsupportedServer(RuntimeError):
    """The PostgreSQL server is older than the service supports."""


def check_server_version(version_num: int) -> None:
    """Refuse a server older than MIN_SERVER_VERSION (`server_version_num`, e.g. 150019)."""
    if version_num < MIN_SERVER_VERSION:
        raise UnsupportedServer(
            f"PostgreSQL {version_num // 10000} is too old: idmirror needs "
            f"{MIN_SERVER_VERSION // 10000} or newer"
        )


_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        settings = get_settings()
        _engine = create_engine(
            sqlalchemy_url(settings.require_database_url()),
            pool_size=20,
            max_overflow=20,
            # A connection is checked (one round trip) as it leaves the pool: one the server
            # dropped (a restart, pg_terminate_backend) is replaced instead of failing a read or
            # the answer to a write. A drain pass or a request is one checkout, so it costs a
            # round trip per pass, not per job.
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={
                "options": server_timeouts(
                    settings.statement_timeout_seconds, settings.lock_timeout_seconds
                )
            },
        )
    return _engine


def server_timeouts(statement_seconds: float, lock_seconds: float) -> str:
    """libpq `options` that make the server end a statement, or a wait for a lock, that runs
    past its bound, so that no stalled database holds a request or a worker forever."""
    return (
        f"-c statement_timeout={round(statement_seconds * 1000)} "
        f"-c lock_timeout={round(lock_seconds * 1000)}"
    )


def accept_engine(
    url: str | None = None,
    *,
    pool_size: int = 20,
    timeout: float = 10.0,
    statement_seconds: float | None = None,
    connect_args: dict[str, Any] | None = None,
) -> AsyncEngine:
    """The API's engine for accepting writes (identity/ledger/accept.py), by default on the
    settings' database; its connections belong to the event loop that first uses them.

    Autocommit: a batch of writes is one statement, atomic on its own, and needs no BEGIN and
    COMMIT; a write with an Idempotency-Key turns it off for its transaction. Like the sync
    engine, it checks no connection before lending it: a connection the server dropped fails
    once, and the caller retries on a fresh one. `timeout` bounds a wait for a connection,
    `statement_seconds` (server-side) each statement and each wait for a lock in it.
    """
    if statement_seconds is not None:
        options = server_timeouts(statement_seconds, statement_seconds)
        connect_args = {**(connect_args or {}), "options": options}
    return create_async_engine(
        sqlalchemy_url(url or get_settings().require_database_url()),
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args or {},
    )


def session_factory() -> sessionmaker[Session]:
    global _sessionmaker
    if _sessionmaker is None:
        _sessionmaker = sessionmaker(get_engine(), expire_on_commit=False)
    return _sessionmaker


@contextmanager
def transaction() -> Iterator[Session]:
    """One session, one transaction: commits on success, rolls back on error."""
    with session_factory().begin() as session:
        yield session


def commit_without_waiting_for_disk(session: Session, wait: bool = False) -> None:
    """Let the current transaction's commit return before its WAL is on disk
    (`synchronous_commit = off`); `wait=True` takes that back for it (the server's setting).

    Only for transactions whose loss in a crash is noticed and repaired: a backfill chunk's
    apply, whose effect, done mark and counts are lost together (the sweeper queues it again),
    or a stored chunk of an upload, which the upload's next store notices missing (it fails the
    upload). WAL is flushed in order, so any later synchronous commit (the end of the upload,
    the run's completion, every live write) makes them durable too; a crash loses at most the
    last few hundred milliseconds of them, never an answered request."""
    session.execute(text(f"SET LOCAL synchronous_commit TO {'DEFAULT' if wait else 'off'}"))


def dispose_after_fork() -> None:
    """Drop connections inherited from the parent process without closing them under it."""
    if _engine is not None:
        _engine.dispose(close=False)
