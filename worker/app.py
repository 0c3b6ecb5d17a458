"""The Celery app: `celery -A worker.app worker` and `celery -A worker.app beat`."""

import logging

from celery import Celery
from celery.signals import worker_process_init

from identity.db import dispose_after_fork
from identity.settings import get_settings

app = Celery("idmirror")
app.config_from_object("celeryconfig")
app.conf.broker_url = get_settings().require_redis_url()


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    """A forked child must not share its parent's database connections."""
    dispose_after_fork()
    logging.getLogger("identity").setLevel(get_settings().log_level)
