"""Sending messages through the one Celery app: drains, with at most one waiting in the queue,
and the backfill work the domain returns.

A flag in Redis (SET NX with a TTL) says "a drain message is on its way". The API sets it after
its transaction commits and sends a message only when it set the flag; a drain task clears it
before it looks for pending jobs, and then drains every key it can lock until nothing is left.
A job committed while the flag is up is therefore seen by the drain that clears it, and under
load one message serves thousands of requests. Messages that never arrive (broker down, Redis
flushed, worker killed) leave jobs pending past the sweeper's threshold, and it sends one again.
The message names the key that asked, so Flower shows which write woke a drain.

A message that cannot be sent is not an error: the work it names is in Postgres.
"""

import asyncio
import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

import redis
import redis.asyncio
from kombu.exceptions import OperationalError as KombuOperationalError

from identity.backfill.flow import Work
from identity.settings import get_settings
from worker.app import app

log = logging.getLogger(__name__)

DRAIN_TASK = "identity.drain_key"
BACKFILL_TASKS = {
    "chunk": "identity.backfill_chunk",
    "step": "identity.backfill_step",
    "pull": "identity.backfill_pull",
}
_FLAG = "idmirror:drain-queued"
_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 2,
    "socket_connect_timeout": 1,
    "health_check_interval": 30,
}
_UNREACHABLE = (redis.RedisError, KombuOperationalError, OSError)


def _warn_unreachable(key: str, exc: BaseException) -> None:
    log.warning("could not queue a drain of %s (the sweeper will): %s", key, exc)


class Producer:
    """One Redis client and one pool of broker connections per process, for the broker at
    `redis_url`; messages take the app's settings (serializer, publish retries)."""

    def __init__(self, redis_url: str, flag_seconds: int) -> None:
        self._redis = redis.Redis.from_url(redis_url, **_CLIENT_OPTIONS)
        self._connections = app.connection_for_write(redis_url).Pool(
            limit=app.conf.broker_pool_limit
        )
        self._flag_seconds = flag_seconds

    def send_drain(
        self, key: str, *, whatever_the_flag: bool = False
    ) -> Literal["sent", "already_queued", "unreachable"]:
        """Queue a drain starting at `key` unless one is on its way already; with
        `whatever_the_flag`, queue one anyway (the flag may stand for a message that a dead
        worker took with it)."""
        try:
            set_flag = self._redis.set(_FLAG, 1, nx=not whatever_the_flag, ex=self._flag_seconds)
            if not set_flag:
                return "already_queued"
            try:
                self.send_message(key)
            except BaseException:
                self._redis.delete(_FLAG)
                raise
            return "sent"
        except _UNREACHABLE as exc:
            _warn_unreachable(key, exc)
            return "unreachable"

    def send_message(self, key: str) -> None:
        """Send a drain message whatever the flag says."""
        self._send(DRAIN_TASK, [key])

    def clear_flag(self) -> None:
        """Called by a drain before it looks: later commits must send a message of their own."""
        self._redis.delete(_FLAG)

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._redis.ping())
        except (redis.RedisError, OSError):
            return False

    def send_work(self, work: Iterable[Work]) -> int:
        """Send backfill messages (after commit); how many could be sent."""
        sent = 0
        for item in work:
            args: list[object] = [item.backfill_id]
            if item.seq is not None:
                args.append(item.seq)
            try:
                self._send(BACKFILL_TASKS[item.task], args)
            except _UNREACHABLE as exc:
                log.warning("could not queue %s %s (the sweeper will): %s", item.task, args, exc)
                continue
            sent += 1
        return sent

    def _send(self, task: str, args: list[Any]) -> None:
        with self._connections.acquire(block=True) as connection:
            app.send_task(task, args=args, connection=connection)


class AsyncDispatcher:
    """The drain protocol for an event loop: the flag through redis.asyncio, and the message,
    needed only when the flag was set, sent by the producer in a thread."""

    def __init__(self, redis_url: str, flag_seconds: int, sender: Producer) -> None:
        self._redis = redis.asyncio.Redis.from_url(redis_url, **_CLIENT_OPTIONS)
        self._flag_seconds = flag_seconds
        self._sender = sender

    async def request_drain(self, key: str) -> bool:
        """Make sure a drain of `key` is queued. False if the broker could not be reached."""
        try:
            if await self._redis.set(_FLAG, 1, nx=True, ex=self._flag_seconds):
                try:
                    await asyncio.to_thread(self._sender.send_message, key)
                except BaseException:
                    await self._redis.delete(_FLAG)
                    raise
            return True
        except _UNREACHABLE as exc:
            _warn_unreachable(key, exc)
            return False

    async def close(self) -> None:
        """Close the Redis client (on the loop that made it)."""
        await self._redis.aclose()


@lru_cache
def get_producer() -> Producer:
    """This process's producer, for the broker the settings name."""
    settings = get_settings()
    return Producer(settings.require_redis_url(), settings.queued_flag_seconds)


def async_dispatcher() -> AsyncDispatcher:
    """A new one for the caller's event loop, which closes it."""
    settings = get_settings()
    return AsyncDispatcher(
        settings.require_redis_url(), settings.queued_flag_seconds, get_producer()
    )
