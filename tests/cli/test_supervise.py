"""`idmirror worker` keeps its Celery worker running: one that dies on its own is started again,
and the jobs accepted meanwhile are applied without anyone restarting anything."""

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cli.embedded import EmbeddedRedis
from tests.stack import Stack, database_url_for, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(postgres_server: str, tmp_home: Path) -> Iterator[Stack]:
    broker = EmbeddedRedis(tmp_home / "redis")
    broker.start()
    url = database_url_for(postgres_server, f"idmirror_sup_{uuid.uuid4().hex[:10]}")
    stack = Stack(url, broker.url, tmp_home)
    try:
        for name in ("worker", "api"):
            stack.start(name, *(["--concurrency", "1"] if name == "worker" else []))
        yield stack
    finally:
        stack.stop()
        broker.stop()


def celery_main(stack: Stack) -> psutil.Process | None:
    """The Celery worker's main process (the supervisor's child), if one runs now."""
    children = psutil.Process(stack.processes["worker"].pid).children()
    return children[0] if children else None


def test_a_worker_that_dies_on_its_own_is_started_again(isolated: Stack) -> None:
    first = celery_main(isolated)
    assert first is not None
    first.send_signal(signal.SIGKILL)  # as an unrecoverable error ends it, but harder

    def another() -> psutil.Process | None:
        child = celery_main(isolated)
        return child if child is not None and child.pid != first.pid else None

    replacement = wait_until(another, timeout=30)
    assert replacement.is_running()
    with isolated.client() as client:
        answer = client.put(
            f"/v1/internal/users/{uuid.uuid4()}",
            json={"email": "back@example.com", "slug": f"back-{uuid.uuid4().hex[:8]}"},
            headers={"Prefer": "wait=30"},
        )
    assert answer.status_code == 200, answer.text
