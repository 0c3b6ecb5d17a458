"""The one Celery app: `celery -A worker.app worker` and `celery -A worker.app beat`, and the app
the producer (worker/producer.py) sends through from the API and from tasks."""

import logging

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init, worker_process_init

from identity import logs
from identity.db import dispose_after_fork
from identity.settings import get_settings

# Configured lazily (celeryconfig is read on first use), so that importing the app, as the API
# does, needs no settings yet.
app = Celery("idmirror")
app.config_from_object("celeryconfig")


@worker_init.connect
@beat_init.connect
def _require_broker(**_: object) -> None:
    """A worker or beat without a broker URL stops here, not on Celery's default broker."""
    get_settings().require_redis_url()


class _RoutineSweeps(logging.Filter):
    """Drops Celery's INFO lines about the sweep (beat sent it, a worker received it, it
    succeeded): three every few seconds would drown the rest. The sweep logs itself when it
    re-queued something."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "identity.sweep" not in record.getMessage()


_ROUTINE_SWEEPS = _RoutineSweeps()


@setup_logging.connect
def _logs(**_: object) -> None:
    """Workers and beat log as every idmirror process does (Celery's own setup is skipped)."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).addFilter(_ROUTINE_SWEEPS)


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    """A forked child must not share its parent's database connections."""
    dispose_after_fork()
