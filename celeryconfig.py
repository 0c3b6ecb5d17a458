"""Celery settings, all derived from identity.settings."""

from identity.settings import get_settings

_settings = get_settings()

broker_url = _settings.redis_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    # A lost worker's unacknowledged messages come back after this; the sweeper is faster.
    "visibility_timeout": 600,
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
}
# An API request must not hang on a broker that is down: the job is durable, the sweeper
# sends the message later.
task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}

task_ignore_result = True
task_acks_late = True
task_reject_on_worker_lost = True
task_serializer = "json"
accept_content = ["json"]
worker_prefetch_multiplier = 4
worker_hijack_root_logger = False
# Task events cost the worker three Redis messages per task; Flower switches them on while it
# watches (its enable_events control command), so they are off otherwise.
worker_send_task_events = False
task_send_sent_event = False
imports = ("tasks.drain", "tasks.sweep", "tasks.backfill")
# A drain that runs past this is killed with its worker process, like one whose job crashed it:
# the jobs it began count a start each, and a job that keeps doing so ends failed
# (IDMIRROR_MAX_JOB_STARTS) instead of holding its keys forever.
task_annotations = {"identity.drain_key": {"time_limit": _settings.drain_time_limit_seconds}}

# The sweeper is not on the schedule: beat runs it in its own process (worker/beat.py).
beat_schedule: dict[str, dict[str, object]] = {}


def _source_schedule(schedule: float | str) -> object:
    """Seconds between runs, or a five-field crontab ("*/15 * * * *")."""
    if isinstance(schedule, str):
        from celery.schedules import crontab

        minute, hour, day_of_month, month_of_year, day_of_week = schedule.split()
        return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    return schedule


for _name, _source in _settings.sources.items():
    if _source.schedule is not None:
        beat_schedule[f"backfill-source-{_name}"] = {
            "task": "identity.backfill_source",
            "schedule": _source_schedule(_source.schedule),
            "args": [_name],
        }
