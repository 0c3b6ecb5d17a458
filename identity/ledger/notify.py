"""Waiting for jobs: one LISTEN connection per API process wakes the requests that wait.

Workers NOTIFY each finished job in the transaction that finished it, with its status and body
when they fit in a notification. A request registers its job id before the job is accepted, so
no notification can be missed; a slow poll covers a listener that is reconnecting.

The listener holds a raw psycopg connection: LISTEN is not a query, and receiving notifications
needs the driver's own `notifies()`, which SQLAlchemy does not wrap.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
Loader = Callable[[], Awaitable[dict[str, Any]]]


class JobWaiter:
    """Wakes requests waiting for jobs; `others` are channels whose notifications (and any
    reconnect, after which one may have been missed) call their callback."""

    def __init__(
        self, conninfo: str, channel: str, others: Mapping[str, Callable[[], None]] | None = None
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._others = dict(others or {})
        self._waiting: dict[str, asyncio.Event] = {}
        self._notified: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-waiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def register(self, job_id: str) -> asyncio.Event:
        event = self._waiting.get(job_id)
        if event is None:
            event = self._waiting[job_id] = asyncio.Event()
        return event

    def forget(self, job_id: str) -> None:
        self._waiting.pop(job_id, None)
        self._notified.pop(job_id, None)

    async def wait(self, job_id: str, timeout: float, load: Loader) -> dict[str, Any] | None:
        """The finished job, or None if it is still pending after `timeout` seconds."""
        event = self.register(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, POLL_SECONDS))
                    notified = self._notified.get(job_id, {})
                    if "status" in notified:
                        return _job(notified)
                except TimeoutError:
                    pass  # no word yet: look in the ledger, in case the listener missed it
                event.clear()
                job = await load()
                if job["status"] != "pending":
                    return job
            return None
        finally:
            self.forget(job_id)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    for channel in (self._channel, *self._others):
                        await conn.execute(f"LISTEN {channel}")
                    for missed in self._others.values():
                        missed()  # anything said while this connection was not listening
                    async for note in conn.notifies():
                        if note.channel == self._channel:
                            self._deliver(note.payload)
                        elif (heard := self._others.get(note.channel)) is not None:
                            heard()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("job listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(1)

    def _deliver(self, payload: str) -> None:
        try:
            note = json.loads(payload)
            job_id = note["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a job notification that is not ours: %.100s", payload)
            return
        event = self._waiting.get(job_id)
        if event is not None:
            self._notified[job_id] = note
            event.set()


def _job(note: dict[str, Any]) -> dict[str, Any]:
    """The parts of a job that answering needs, from its notification."""
    applied = note["status"] == "applied"
    return {
        "id": note["id"],
        "status": note["status"],
        "result": note["body"] if applied else None,
        "error": None if applied else note["body"],
    }
