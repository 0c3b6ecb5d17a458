"""The one Celery app: `celery -A worker.app worker` and `celery -A worker.app beat`, and the app
the producer (worker/producer.py) sends through from the API and from tasks."""

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init, worker_process_init

from identity import logs
from identity.db import dispose_after_fork
from identity.settings import get_settings
from worker.beat import Sweeper
from worker.heartbeat import Heartbeat

# Configured lazily (celeryconfig is read on first use), so that importing the app, as the API
# does, needs no settings yet.
app = Celery("idmirror")
app.config_from_object("celeryconfig")
app.steps["worker"].add(Heartbeat)


@worker_init.connect
@beat_init.connect
def _require_broker(**_: object) -> None:
    """A worker or beat without a broker URL stops here, not on Celery's default broker."""
    get_settings().require_redis_url()


@setup_logging.connect
def _logs(**_: object) -> None:
    """Workers and beat log as every idmirror process does (Celery's own setup is skipped)."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)


@beat_init.connect
def _start_sweeper(**_: object) -> None:
    """The sweeper runs beside beat's schedule, in its process (worker/beat.py)."""
    Sweeper(get_settings().sweep_interval_seconds).start()


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    """A forked child must not share its parent's database connections."""
    dispose_after_fork()
