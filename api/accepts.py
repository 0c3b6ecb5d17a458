"""Accepting writes on the event loop: writes that arrive together share a statement and a commit.

A write without an Idempotency-Key joins a queue. Up to `writers` tasks take what is queued and
record it with one statement, then ask for one drain for all of it, and go on while anything is
queued. A lone write is recorded at once, as it would be on its own; under load one commit
serves many requests. The writes of one batch take their key's order in the order they arrived;
two batches in flight at once are ordered by their commits, as any two concurrent requests are.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from identity import ledger
from identity.queue import AsyncDispatcher

log = logging.getLogger(__name__)

T = TypeVar("T")
Queued = tuple[ledger.Submission, "asyncio.Future[tuple[ledger.Accepted, bool]]"]
# A deadlock (with a drain writing tombstones of several keys) rolled the statement back, and
# nothing was written: it is tried again, up to this many times in all.
_DEADLOCK_ATTEMPTS = 3


class Accepts:
    """The API process's way into the ledger: (the accepted job, whether a drain is queued)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        dispatcher: AsyncDispatcher,
        *,
        idempotency_ttl_hours: float,
        max_batch: int = 100,
        writers: int = 2,
    ) -> None:
        self._pool = pool
        self._dispatcher = dispatcher
        self._ttl_hours = idempotency_ttl_hours
        self._max_batch = max_batch
        self._writers = writers
        self._busy = 0
        self._queue: list[Queued] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(self, sub: ledger.Submission) -> tuple[ledger.Accepted, bool]:
        """Record `sub` as a pending job and make sure a drain is queued for it."""
        if sub.idempotency_key is not None:
            accepted = await self._on_connection(
                lambda conn: ledger.accept(conn, sub, idempotency_ttl_hours=self._ttl_hours)
            )
            if accepted.reused:
                return accepted, True
            return accepted, await self._dispatcher.request_drain(sub.key)
        future: asyncio.Future[tuple[ledger.Accepted, bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((sub, future))
        if self._busy < self._writers:
            self._busy += 1
            task = asyncio.create_task(self._write_while_queued(), name="accept-writer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def close(self) -> None:
        """Let the writers finish what they took."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _write_while_queued(self) -> None:
        try:
            while self._queue:
                taken, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                batch = [(sub, future) for sub, future in taken if not future.done()]
                if batch:
                    await self._write(batch)
        finally:
            self._busy -= 1

    async def _write(self, batch: list[Queued]) -> None:
        """Record a batch and settle each of its futures; never raises."""
        subs = [sub for sub, _ in batch]
        try:
            accepted = await self._on_connection(lambda conn: ledger.accept_many(conn, subs))
        except psycopg.OperationalError as exc:  # the database is unreachable: every one fails
            _settle(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            # Something in one write the database refuses: each is written alone, so it fails
            # alone. None of them was recorded, so the order of the rest is kept.
            log.warning("%d writes accepted one by one instead", len(batch), exc_info=True)
            for one in batch:
                await self._write([one])
            return
        try:
            queued = await self._dispatcher.request_drain(subs[0].key)
        except Exception:  # the jobs are durable: the sweeper queues their drain
            log.exception("asking for a drain failed; the sweeper will")
            queued = False
        for (_, future), job in zip(batch, accepted, strict=True):
            if not future.done():
                future.set_result((job, queued))

    async def _on_connection(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """Run `work` on a pooled connection. Once more on a fresh one if the server had closed
        the connection (a restart), and again after a deadlock: in both cases nothing was
        committed."""
        reconnected = False
        deadlocks = 0
        while True:
            async with self._pool.connection() as conn:
                try:
                    return await work(conn)
                except psycopg.errors.DeadlockDetected:
                    deadlocks += 1
                    if deadlocks >= _DEADLOCK_ATTEMPTS:
                        raise
                    continue
                except psycopg.OperationalError:
                    if reconnected or not conn.broken:
                        raise
            reconnected = True
            await self._pool.check()  # drop the other connections the server closed


def _settle(batch: list[Queued], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
