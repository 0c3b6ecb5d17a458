"""`idmirror worker` keeps its Celery worker running: one that dies on its own is started again,
and the jobs accepted meanwhile are applied without anyone restarting anything."""

import signal
import uuid

import psutil
import pytest

from tests.conftest import OwnStack
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(own_stack: OwnStack) -> Stack:
    return own_stack("worker", "api", worker_args=["--concurrency", "1"])


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
