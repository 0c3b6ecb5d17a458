"""Chunks stored behind the validation: in order, a bounded number at a time, none after a failure."""

import threading
from collections.abc import Callable

import pytest

from identity.backfill.flow import Work
from identity.backfill.writer import StoreBehind


def test_stores_run_in_order_and_their_work_comes_back_in_order() -> None:
    behind = StoreBehind(depth=2)
    ran: list[int] = []

    def store(n: int) -> Callable[[], list[Work]]:
        def write() -> list[Work]:
            ran.append(n)
            return [Work("chunk", "run", n)]

        return write

    work: list[Work] = []
    for n in range(10):
        work += behind.submit(store(n))
    work += behind.wait()
    behind.close()
    assert ran == list(range(10))
    assert [w.seq for w in work] == list(range(10))


def test_no_more_than_depth_stores_wait() -> None:
    behind = StoreBehind(depth=2)
    gate = threading.Event()
    started = threading.Event()

    def slow() -> list[Work]:
        started.set()
        gate.wait(10)
        return []

    behind.submit(slow)
    started.wait(10)
    behind.submit(lambda: [])
    submitted = threading.Event()

    def submit_third() -> None:
        behind.submit(lambda: [])
        submitted.set()

    third = threading.Thread(target=submit_third)
    third.start()
    # The third store would make three waiting: submitting it waits for the first.
    assert not submitted.wait(0.3)
    gate.set()
    assert submitted.wait(10)
    third.join(10)
    behind.wait()
    behind.close()


def test_after_a_failed_store_none_behind_it_runs_and_the_failure_surfaces() -> None:
    behind = StoreBehind(depth=4)
    gate = threading.Event()
    ran: list[str] = []

    def failing() -> list[Work]:
        gate.wait(10)
        raise RuntimeError("the database went away")

    def after() -> list[Work]:
        ran.append("after")
        return []

    behind.submit(failing)
    behind.submit(after)
    gate.set()
    with pytest.raises(RuntimeError, match="went away"):
        behind.wait()
    behind.close()
    assert ran == []
