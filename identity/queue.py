"""Sending drain messages: at most one waits in the queue at any time.

A flag in Redis (SET NX with a TTL) says "a drain message is on its way". The API sets it after
its transaction commits and sends a message only when it set the flag; a drain task clears it
before it looks for pending jobs, and then drains every key it can lock until nothing is left.
A job committed while the flag is up is therefore seen by the drain that clears it, and under
load one message serves thousands of requests. Messages that never arrive (broker down, Redis
flushed, worker killed) leave jobs pending past the sweeper's threshold, and it sends one again.
The message names the key that asked, so Flower shows which write woke a drain.
"""

import logging
from functools import lru_cache
from typing import Literal

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from identity.settings import get_settings

log = logging.getLogger(__name__)

DRAIN_TASK = "identity.drain_key"
_FLAG = "idmirror:drain-queued"


class Dispatcher:
    """Producer side of the queue: one Redis client and one Celery app per process."""

    def __init__(self, redis_url: str, flag_seconds: int) -> None:
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=2, socket_connect_timeout=1, health_check_interval=30
        )
        self._celery = Celery("idmirror")
        self._celery.config_from_object("celeryconfig")
        self._celery.conf.broker_url = redis_url
        self._flag_seconds = flag_seconds

    def send_drain(self, key: str) -> Literal["sent", "already_queued", "unreachable"]:
        """Queue a drain starting at `key` unless one is on its way already."""
        try:
            if not self._redis.set(_FLAG, 1, nx=True, ex=self._flag_seconds):
                return "already_queued"
            try:
                self._celery.send_task(DRAIN_TASK, args=[key])
            except BaseException:
                self._redis.delete(_FLAG)
                raise
            return "sent"
        except (redis.RedisError, KombuOperationalError, OSError) as exc:
            log.warning("could not queue a drain of %s (the sweeper will): %s", key, exc)
            return "unreachable"

    def request_drain(self, key: str) -> bool:
        """Make sure a drain of `key` is queued. False if the broker could not be reached."""
        return self.send_drain(key) != "unreachable"

    def clear_flag(self) -> None:
        """Called by a drain before it looks: later commits must send a message of their own."""
        self._redis.delete(_FLAG)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except (redis.RedisError, OSError):
            return False


@lru_cache
def get_dispatcher() -> Dispatcher:
    settings = get_settings()
    return Dispatcher(settings.require_redis_url(), settings.queued_flag_seconds)
