"""Sending backfill messages after commit. A message that cannot be sent is not an error: the
work it names is in Postgres and the sweeper sends it again."""

import logging
from collections.abc import Iterable
from functools import lru_cache

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from identity.backfill.flow import Work
from identity.settings import get_settings

log = logging.getLogger(__name__)

TASKS = {
    "chunk": "identity.backfill_chunk",
    "step": "identity.backfill_step",
    "pull": "identity.backfill_pull",
}


class BackfillSender:
    """One Celery producer per process."""

    def __init__(self, redis_url: str) -> None:
        self._celery = Celery("idmirror")
        self._celery.config_from_object("celeryconfig")
        self._celery.conf.broker_url = redis_url

    def send(self, work: Iterable[Work]) -> int:
        sent = 0
        for item in work:
            args: list[object] = [item.backfill_id]
            if item.seq is not None:
                args.append(item.seq)
            try:
                self._celery.send_task(TASKS[item.task], args=args)
            except (redis.RedisError, KombuOperationalError, OSError) as exc:
                log.warning("could not queue %s %s (the sweeper will): %s", item.task, args, exc)
                continue
            sent += 1
        return sent


@lru_cache
def get_sender() -> BackfillSender:
    return BackfillSender(get_settings().require_redis_url())
