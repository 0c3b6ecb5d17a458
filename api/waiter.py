"""Waiting for jobs: one LISTEN connection per API process wakes the requests that wait.

Workers NOTIFY the ids of the jobs they finished, in the transaction that finished them. A
request registers its job id before the job is accepted, so no notification can be missed;
a slow poll covers a listener that is reconnecting.
"""

import asyncio
import contextlib
import logging

import psycopg

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class JobWaiter:
    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._waiting: dict[str, asyncio.Event] = {}
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

    async def wait(self, job_id: str, timeout: float, is_done) -> bool:  # type: ignore[no-untyped-def]
        """Wait until the job is final or `timeout` passes; `is_done` polls the database."""
        event = self.register(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, POLL_SECONDS))
                    return True
                except TimeoutError:
                    if await is_done():
                        return True
        finally:
            self.forget(job_id)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    async for note in conn.notifies():
                        for job_id in note.payload.split(","):
                            event = self._waiting.get(job_id)
                            if event is not None:
                                event.set()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("job listener lost its connection (%s); reconnecting", exc)
                await asyncio.sleep(1)
