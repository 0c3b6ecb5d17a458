"""What Flower is told about a drain, read with Celery's own event receiver and state (Flower's)
and Flower's own search: a drain names the keys it finished jobs of, and one that recorded a
failed job ends in FAILURE, with the job and its key searchable."""

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State
from flower.utils.search import TaskSearchEngine

from tests.conftest import OwnStack, new_slug, put_user
from tests.stack import Stack, wait_until


class Watcher:
    """Task events of a stack's workers, as Flower receives them (it switches them on)."""

    def __init__(self, stack: Stack) -> None:
        self.app = Celery(broker=stack.redis_url)
        self.state = State()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self.app.connection() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.state.event})
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def start(self) -> None:
        self.thread.start()
        wait_until(lambda: self.receiver is not None, timeout=10)
        wait_until(lambda: self.app.control.enable_events(reply=True, timeout=1), timeout=20)

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.app.control.disable_events()
        self.thread.join(5)

    def drains(self, state: str) -> list[Any]:
        return [
            task
            for task in list(self.state.tasks.values())
            if task.name == "identity.drain_key" and task.state == state
        ]


@pytest.fixture
def watched(own_stack: OwnStack) -> Iterator[tuple[Stack, Watcher]]:
    stack = own_stack("api", "worker", apply_on_accept="false")  # every job through a drain
    watcher = Watcher(stack)
    watcher.start()
    yield stack, watcher
    watcher.stop()


def test_flower_shows_a_drain_with_a_failed_job_as_a_failure_found_by_its_key(
    watched: tuple[Stack, Watcher],
) -> None:
    stack, watcher = watched
    user_slug = new_slug("gone")
    with stack.client() as client:
        user = put_user(client)
        failed = client.put(f"/v1/internal/agents/bot@{user_slug}", json={"display_name": "B"})
    assert failed.status_code == 404
    job_id = failed.headers["Idmirror-Job-Id"]

    [failure] = wait_until(lambda: watcher.drains("FAILURE"), timeout=20)
    assert "JobsFailed" in failure.exception and job_id in failure.exception
    assert f"'key': 'agent:bot@{user_slug}'" in failure.result
    assert "'code': 'user_not_found'" in failure.result
    success = wait_until(
        lambda: [t for t in watcher.drains("SUCCESS") if f"user:{user['id']}" in t.result],
        timeout=20,
    )
    assert "'failed': 0" in success[0].result

    search = TaskSearchEngine()
    search.rebuild(list(watcher.state.tasks.items()))
    assert search.matching_ids(f"bot@{user_slug}") == {failure.uuid}
    assert search.matching_ids(user["id"]) == {success[0].uuid}
