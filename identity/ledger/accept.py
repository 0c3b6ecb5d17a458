"""Accepting writes on the event loop: writes that arrive together share a statement and a commit.

A write without an Idempotency-Key joins a queue. Up to `writers` tasks take what is queued and
record it with one statement, then go on while anything is queued; each batch's drain is asked
for beside them, so a slow Redis delays answers but not the next commit. A lone write is recorded
at once, as it would be on its own; under load one commit serves many requests. The writes of one
batch take their key's order in the order they arrived; two batches in flight at once are
ordered by their commits, as any two concurrent requests are.

Each write waits for the database at most the pool's timeout from the moment it arrived, however
many batches are ahead of it; then it fails (503 database_unavailable).

The statements (identity/ledger/record.py) run through the API's async SQLAlchemy engine
(identity.db.accept_engine, psycopg underneath).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from identity.errors import Overloaded
from identity.ledger import record
from identity.ledger.jobs import Accepted, Submission

log = logging.getLogger(__name__)

T = TypeVar("T")


class DrainRequests(Protocol):
    """Whatever asks the workers for a drain (worker/producer.py in the API process)."""

    async def request_drain(self, key: str) -> bool:
        """Make sure a drain of `key` is queued; False if the broker could not be reached."""
        ...


# Accepted, and the task that asks for its drain: true once a drain is queued, false if the
# broker could not be reached (the sweeper queues it then).
Written = tuple[Accepted, "asyncio.Future[bool]"]
# Server states in which no statement can run: shutting down, or not yet accepting connections.
_SHUTTING_DOWN = {"57P01", "57P02", "57P03"}
_SECOND_TRY_SECONDS = 1.0
_RECONNECT_SECONDS = 0.1  # between tries to open a connection while the server is unreachable


@dataclass
class _Queued:
    sub: Submission
    future: "asyncio.Future[Written]"
    deadline: float  # loop time after which the write stops waiting for the database


class Accepts:
    """The API process's way into the ledger: (the accepted job, whether a drain is queued)."""

    def __init__(
        self,
        engine: AsyncEngine,
        dispatcher: DrainRequests,
        *,
        idempotency_ttl_hours: float,
        max_batch: int = 100,
        writers: int = 2,
        max_queued: int = 1000,
        apply: record.ApplyAccepted | None = None,
    ) -> None:
        if not isinstance(engine.pool, QueuePool):
            raise TypeError("accepts need a queue pool, as identity.db.accept_engine makes")
        self._engine = engine
        self._pool = engine.pool
        self._timeout = self._pool.timeout()  # how long a write waits for a connection
        self._dispatcher = dispatcher
        self._ttl_hours = idempotency_ttl_hours
        self._max_batch = max_batch
        self._max_writers = writers
        self._max_queued = max_queued
        self._apply = apply  # applies writes to idle keys as they are accepted
        self._waiting = 0  # writes with an Idempotency-Key waiting to be recorded
        self._queue: list[_Queued] = []
        self._writers: set[asyncio.Task[None]] = set()
        self._drains: set[asyncio.Future[bool]] = set()

    async def accept(self, sub: Submission) -> tuple[Accepted, bool]:
        """Record `sub` as a pending job and make sure a drain is queued for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        if len(self._queue) + self._waiting >= self._max_queued:
            raise Overloaded(
                "too many writes are waiting to be recorded; send this one again shortly",
                waiting=self._max_queued,
            )
        if sub.idempotency_key is not None:
            self._waiting += 1
            try:
                accepted = await self._accept_keyed(sub, deadline)
            finally:
                self._waiting -= 1
            if accepted.job["status"] != "pending":  # applied as it was accepted, or before
                return accepted, True
            # A pending job named by its key asks again too: it may be the record of this very
            # write, made by a try whose connection broke before it could ask.
            return accepted, await self._request_drain(sub.key)
        future: asyncio.Future[Written] = loop.create_future()
        self._queue.append(_Queued(sub, future, deadline))
        if len(self._writers) < self._max_writers:
            writer = asyncio.create_task(self._write_while_queued(), name="accept-writer")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        accepted, drain = await future
        return accepted, await asyncio.shield(drain)  # the batch's other requests await it too

    async def _accept_keyed(self, sub: Submission, deadline: float) -> Accepted:
        """Record a write with an Idempotency-Key in a transaction of its own, applied if its
        key is idle (or pending, see _applied_or_pending)."""

        async def record_with(apply: record.ApplyAccepted | None) -> Accepted:
            return await self._on_connection(
                lambda conn, again: record.accept(
                    conn,
                    sub,
                    idempotency_ttl_hours=self._ttl_hours,
                    apply=None if again else apply,
                ),
                deadline,
            )

        try:
            return await self._applied_or_pending(record_with, 1)
        except DBAPIError as exc:
            if (overloaded := _overloaded(exc)) is not None:
                raise overloaded from exc
            raise

    async def _applied_or_pending(
        self, record_with: Callable[[record.ApplyAccepted | None], Awaitable[T]], writes: int
    ) -> T:
        """`record_with(applier)`, applying what it can; if applying fails as a whole (a lock
        wait that ran out of time, a deadlock, jobs applied together that break their statement:
        the accept takes no savepoint around them), nothing was recorded, and the writes are
        recorded as pending jobs instead, for the workers to apply. Errors that say the
        database is out of reach, and those of recording without applying, are raised."""
        if self._apply is None:
            return await record_with(None)
        try:
            return await record_with(self._apply)
        except Exception as exc:
            if _unreachable(exc):
                raise
            log.warning("%d writes left to the workers", writes, exc_info=True)
        return await record_with(None)

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job as the ledger has it now, read as writes are (for a request waiting on it)."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        return await self._on_connection(lambda conn, _: record.read_job(conn, job_id), deadline)

    async def close(self) -> None:
        """Let the writers finish what they took, and the drain requests they made."""
        while self._writers or self._drains:
            await asyncio.gather(*self._writers, *self._drains, return_exceptions=True)

    async def _write_while_queued(self) -> None:
        try:
            while self._queue:
                taken, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                batch = [queued for queued in taken if not queued.future.done()]  # not cancelled
                if batch:
                    await self._write(batch)
        finally:
            # At once, not in a done callback a loop step later: a write queued in between
            # would find every writer's place taken and wait with no writer to take it.
            if (me := asyncio.current_task()) is not None:
                self._writers.discard(me)

    async def _write(self, batch: list[_Queued], *, apply: bool = True) -> None:
        """Record a batch (applying what it can, unless `apply` is false) and settle each of
        its futures."""
        subs = [queued.sub for queued in batch]
        deadline = min(q.deadline for q in batch)

        async def record_with(applier: record.ApplyAccepted | None) -> list[Accepted]:
            return await self._on_connection(
                lambda conn, again: record.accept_many(conn, subs, again=again, apply=applier),
                deadline,
            )

        try:
            if apply:
                accepted = await self._applied_or_pending(record_with, len(batch))
            else:
                accepted = await record_with(None)
        except PoolTimeout as exc:
            # The earliest deadline of the batch has passed: the writes whose own wait is over
            # fail, the others go back to the head of the queue, in their order.
            now = asyncio.get_running_loop().time()
            _settle([q for q in batch if q.deadline <= now], exc)
            self._queue[:0] = [q for q in batch if q.deadline > now]
            return
        except Exception as exc:
            if _unreachable(exc):
                _settle(batch, exc)
                return
            if (overloaded := _overloaded(exc)) is not None:
                _settle(batch, overloaded)  # more statements would only stall as long again
                return
            if len(batch) == 1:
                _settle(batch, exc)
                return
            # The database refused the statement for one write's sake (or rolled it back as a
            # deadlock's victim): nothing was recorded, and each write is written alone, so
            # only that one fails and the others keep their order.
            log.warning("%d writes accepted one by one instead", len(batch), exc_info=True)
            try:
                for queued in batch:
                    if not queued.future.done():
                        await self._write([queued], apply=False)
            except BaseException as cancelled:
                _settle(batch, cancelled)
                raise
            return
        except BaseException as exc:  # cancelled: no request may wait forever
            _settle(batch, exc)
            raise
        drain = self._drain_for(
            [sub for sub, job in zip(subs, accepted, strict=True) if job.job["status"] == "pending"]
        )
        for queued, job in zip(batch, accepted, strict=True):
            if not queued.future.done():
                queued.future.set_result((job, drain))

    def _drain_for(self, pending: list[Submission]) -> "asyncio.Future[bool]":
        """A drain asked for the first of the `pending` jobs' keys (a drain takes the other
        keys' too), if any are left pending."""
        if not pending:
            done = asyncio.get_running_loop().create_future()
            done.set_result(True)
            return done
        drain = asyncio.ensure_future(self._request_drain(pending[0].key))
        self._drains.add(drain)
        drain.add_done_callback(self._drains.discard)
        return drain

    async def _request_drain(self, key: str) -> bool:
        try:
            return await self._dispatcher.request_drain(key)
        except Exception:  # the jobs are durable: the sweeper queues their drain
            log.exception("asking for a drain failed; the sweeper will")
            return False

    async def _on_connection(
        self, work: Callable[[AsyncConnection, bool], Awaitable[T]], deadline: float
    ) -> T:
        """Run `work(conn, again)` on a pooled connection, waiting for one until `deadline` at
        the most.

        Once more, with `again` true, on a fresh connection if the server had closed the one
        lent (a restart): the statement most likely reached no one, and should it have
        committed before the connection broke, `work` must not record it twice. (An accept with
        an Idempotency-Key finds its own record then.)"""
        loop = asyncio.get_running_loop()
        reconnected = False
        while True:
            # The second try gets a second at least: it must find out whether the first
            # committed, or its writes would be answered 503 although recorded.
            least = _SECOND_TRY_SECONDS if reconnected else 0.0
            conn = await self._connect(max(deadline, loop.time() + least))
            try:
                return await work(conn, reconnected)
            except DBAPIError as exc:
                # On a disconnect SQLAlchemy has invalidated the connection and marked the
                # pool's older ones stale: each is opened anew at its next checkout.
                if reconnected or not exc.connection_invalidated:
                    raise
            finally:
                await conn.close()
            reconnected = True

    async def _connect(self, deadline: float) -> AsyncConnection:
        """A pooled connection, waited for until `deadline` (loop time).

        The pool waits for a connection that others hold, but fails at once when it cannot
        open one: that is tried again until the deadline, as while the database restarts."""
        loop = asyncio.get_running_loop()
        failed: DBAPIError | None = None
        while True:
            try:
                if self._pool.checkedin():
                    # An idle one is lent at once: no timer, which would cost more than that.
                    return await self._engine.connect()
                async with asyncio.timeout_at(deadline):
                    return await self._engine.connect()
            except TimeoutError as exc:
                raise PoolTimeout("no database connection in time") from failed or exc
            except DBAPIError as exc:
                if not _unreachable(exc):
                    raise
                failed = exc
            if (left := deadline - loop.time()) <= 0:
                raise PoolTimeout("no database connection in time") from failed
            await asyncio.sleep(min(_RECONNECT_SECONDS, left))


def _overloaded(exc: BaseException) -> Overloaded | None:
    """The 503 a statement that ran out of time gets: the server ended it (a stalled lock, a
    stalled database) and nothing it did was recorded."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return Overloaded(
            "the write could not be recorded in time; nothing was recorded, send it again"
        )
    return None


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` says no statement could run at all, rather than that this one failed."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc  # the driver's error, which SQLAlchemy wraps
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SHUTTING_DOWN
    return False


def _settle(batch: list[_Queued], exc: BaseException) -> None:
    for queued in batch:
        if queued.future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            queued.future.cancel()
        else:
            queued.future.set_exception(exc)
