"""Storing an upload's chunks on a thread of their own, in order, behind the validation.

While PostgreSQL takes one chunk (parsing it as jsonb, writing it, committing), the receiver
validates the next lines: psycopg waits for the server without holding the GIL. At most a few
stores wait, so memory stays bounded. After a store fails, none of the stores behind it runs
(no chunk is stored after a missing one), and the failure surfaces at the caller's next call.
"""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from identity.backfill.flow import Work

Store = Callable[[], list[Work]]


class StoreBehind:
    """Runs store transactions one after another on one thread; returns the work they made."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[list[Work]]] = deque()
        self._broken: BaseException | None = None

    def submit(self, store: Store) -> list[Work]:
        """Queue a store; returns the work of the stores finished so far (in order), and waits
        while more than `depth` are queued. Raises what a finished store raised."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-store")
        self._pending.append(self._pool.submit(self._run, store))
        work: list[Work] = []
        while self._pending and (len(self._pending) > self.depth or self._pending[0].done()):
            work += self._pending.popleft().result()
        return work

    def wait(self) -> list[Work]:
        """Every queued store done: their work, or what one of them raised."""
        work: list[Work] = []
        while self._pending:
            work += self._pending.popleft().result()
        return work

    def close(self) -> None:
        """Stop the thread: a store already running finishes, those still queued never run
        (after `wait` there are none; otherwise the caller is failing or was cancelled)."""
        self._broken = self._broken or _Closed()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pending.clear()

    def _run(self, store: Store) -> list[Work]:
        if self._broken is not None:
            raise self._broken
        try:
            return store()
        except BaseException as exc:
            self._broken = exc
            raise


class _Closed(Exception):
    """The upload ended before this store could run."""
