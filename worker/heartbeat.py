"""Worker liveness: each worker's main process writes a key with a short lifetime in Redis every
IDMIRROR_WORKER_HEARTBEAT_SECONDS, and /metrics counts the keys (`idmirror_workers_alive`).

The heartbeat runs on the worker's own timer, where it consumes messages, so a worker that is
stopped, frozen or cut off from Redis stops renewing it and drops out of the count within three
heartbeats. It tells that a worker is there, not that it gets through its work: a
stall (pending work that does not move, identity/ledger/progress.py) is told apart.
"""

import contextlib
import logging
import time
from functools import lru_cache
from typing import Any

import redis
from celery import bootsteps

from identity.settings import get_settings

log = logging.getLogger(__name__)

_PREFIX = "idmirror:worker-alive:"


@lru_cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().require_redis_url(), socket_timeout=1, socket_connect_timeout=1
    )


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep: renew this worker's key now and at every heartbeat."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.every = 5.0

    def start(self, worker: Any) -> None:
        self.every = get_settings().worker_heartbeat_seconds
        self.beat(worker.hostname)
        self.tref = worker.timer.call_repeatedly(
            self.every, self.beat, (worker.hostname,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        with contextlib.suppress(redis.RedisError, OSError):  # else it ends with its lifetime
            _client().delete(_PREFIX + worker.hostname)

    def beat(self, hostname: str) -> None:
        try:
            _client().set(_PREFIX + hostname, time.time(), ex=max(1, round(3 * self.every)))
        except (redis.RedisError, OSError) as exc:
            log.warning("worker heartbeat not written: %s", exc)


def workers_alive() -> int | None:
    """How many workers renewed their key within its lifetime; None if Redis did not answer."""
    try:
        return sum(1 for _ in _client().scan_iter(match=_PREFIX + "*", count=100))
    except (redis.RedisError, OSError):
        return None
