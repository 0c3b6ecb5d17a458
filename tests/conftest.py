"""Session-wide services: Postgres and Redis (embedded unless URLs are set), and one stack of
API, worker and beat processes that most tests share."""

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cli.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.stack import Stack, database_url_for, drop_created_databases, keys_busy

_TMP = Path(tempfile.mkdtemp(prefix="idmirror-tests-"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a Postgres server the tests may create databases on."""
    url = os.environ.get("IDMIRROR_DATABASE_URL")
    if url:
        yield url
        drop_created_databases(url)  # after every stack that used them has stopped
        return
    server = EmbeddedPostgres(_TMP / "postgres")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("IDMIRROR_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(_TMP / "redis")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server: str) -> str:
    return database_url_for(postgres_server, f"idmirror_test_{os.getpid()}")


@pytest.fixture(scope="session")
def domain(database_url: str, redis_url: str) -> Iterator[None]:
    """Point this process's own settings at the test database, for calling the domain directly."""
    from identity import db, settings
    from worker import producer

    saved = {k: os.environ.get(k) for k in ("IDMIRROR_DATABASE_URL", "IDMIRROR_REDIS_URL")}
    os.environ["IDMIRROR_DATABASE_URL"] = database_url
    os.environ["IDMIRROR_REDIS_URL"] = redis_url
    settings.get_settings.cache_clear()
    producer.get_producer.cache_clear()
    db._engine, db._sessionmaker = None, None
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    settings.get_settings.cache_clear()
    producer.get_producer.cache_clear()


@pytest.fixture(scope="session")
def stack(database_url: str, redis_url: str) -> Iterator[Stack]:
    """The shared stack: one API, one worker (two processes), one beat."""
    shared = Stack(database_url, redis_url, _TMP / "stack")
    try:
        shared.start("worker", "--concurrency", "2")
        shared.start("beat")
        shared.start("api")
        yield shared
    finally:
        shared.stop()


# Starts a stack on a database and a Redis of their own, with the processes named and the
# settings given (a worker's arguments as `worker_args`).
OwnStack = Callable[..., Stack]


def start_stack(
    postgres_server: str,
    home: Path,
    made: list[tuple[Stack, EmbeddedRedis]],
    *processes: str,
    worker_args: Sequence[str] = (),
    **settings: str,
) -> Stack:
    """A stack on a new database and a Redis of its own; `made` gets it before it starts, so
    that whoever stops what was made stops it too."""
    broker = EmbeddedRedis(home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_own_{uuid.uuid4().hex[:10]}")
    stack = Stack(url, broker.url, home, **settings)
    made.append((stack, broker))
    for name in processes:
        stack.start(name, *(worker_args if name == "worker" else ()))
    return stack


def stop_stacks(made: list[tuple[Stack, EmbeddedRedis]]) -> None:
    for stack, broker in made:
        stack.stop()
        broker.stop()


@pytest.fixture
def own_stack(postgres_server: str, tmp_home: Path) -> Iterator[OwnStack]:
    """Stacks for tests that break, stall or starve their services; stopped after the test."""
    made: list[tuple[Stack, EmbeddedRedis]] = []

    def make(*processes: str, worker_args: Sequence[str] = (), **settings: str) -> Stack:
        home = tmp_home / f"own-{len(made)}"
        return start_stack(
            postgres_server, home, made, *processes, worker_args=worker_args, **settings
        )

    yield make
    stop_stacks(made)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A direct connection, for asserting what is stored."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def tmp_home() -> Path:
    path = _TMP / f"home-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def new_slug(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def put_user(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    """Create a user with fresh id and slug; returns the response body."""
    user_id = overrides.pop("id", str(uuid.uuid4()))
    body = {"email": "someone@example.com", "slug": new_slug("u"), **overrides}
    response = client.put(f"/v1/internal/users/{user_id}", json=body)
    assert response.status_code == 200, response.text
    user: dict[str, Any] = response.json()
    return user


def put_pending_users(stack: Stack, client: httpx.Client, n: int) -> None:
    """PUT `n` new users, respond-async, while their keys are busy: the API leaves them pending
    for the workers, as it does a write behind another."""
    users = [uuid.uuid4() for _ in range(n)]
    with keys_busy(stack.database_url, *(f"user:{u}" for u in users)):
        for user in users:
            answer = client.put(
                f"/v1/internal/users/{user}",
                json={"email": "s@example.com", "slug": new_slug()},
                headers={"Prefer": "respond-async"},
            )
            assert answer.status_code == 202 and answer.json()["status"] == "pending"


def put_node_type(client: httpx.Client, params_schema: dict[str, Any] | None = None) -> str:
    node_type_id = str(uuid.uuid4())
    response = client.put(
        f"/v1/internal/node-types/{node_type_id}",
        json={"name": "step", "params_schema": params_schema or {"type": "object"}},
    )
    assert response.status_code == 200, response.text
    return node_type_id


def put_agent(client: httpx.Client) -> dict[str, Any]:
    """A fresh user with one agent; returns the agent."""
    user = put_user(client)
    response = client.put(f"/v1/internal/agents/bot@{user['slug']}", json={"display_name": "Bot"})
    assert response.status_code == 200, response.text
    agent: dict[str, Any] = response.json()
    return agent
