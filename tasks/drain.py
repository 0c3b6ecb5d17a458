"""identity.drain_key: apply a key's pending jobs in order.

What a drain did is its task's result, as Flower shows it: the jobs it finished per key (the
keys with most jobs first) and the jobs that failed, with their keys and error codes. A drain
that recorded failed jobs ends in FAILURE once it has drained everything it could (its work is
committed; the exception is expected, so it is neither retried nor redelivered, and the worker
logs it without a traceback), after an event that gives Flower the same result to show and
search. Flower receives task events only while it watches; docs/operations.md compares what
it shows with the console.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task
from kombu.exceptions import OperationalError as KombuOperationalError
from redis import RedisError

from identity.appliers import BATCH_APPLIERS, apply_job
from identity.db import transaction
from identity.ledger.drain import DrainReport, drain
from identity.settings import get_settings
from tasks.policy import RETRY_POLICY
from worker.producer import get_producer

log = logging.getLogger(__name__)

# What a result names at most: Flower shows the first RESULT_REPR_CHARS of it.
NAMED_KEYS, NAMED_FAILURES, RESULT_REPR_CHARS = 50, 20, 4096


class JobsFailed(Exception):
    """A drain finished, and some of the jobs it applied failed (they are in the ledger)."""


@dataclass
class DrainSummary:
    """What the passes of one drain task did, together."""

    key: str
    applied: int = 0
    failed_jobs: list[tuple[str, str, str]] = field(default_factory=list)
    by_key: dict[str, int] = field(default_factory=dict)

    def add(self, report: DrainReport) -> None:
        self.applied += report.applied
        self.failed_jobs += report.failed_jobs
        for key, n in report.by_key.items():
            self.by_key[key] = self.by_key.get(key, 0) + n

    def result(self) -> dict[str, Any]:
        """The task's result: what matters first, since Flower cuts it short."""
        busiest = sorted(self.by_key.items(), key=lambda item: (-item[1], item[0]))
        return {
            "key": self.key,
            "applied": self.applied,
            "failed": len(self.failed_jobs),
            "failed_jobs": [
                {"id": job_id, "key": key, "code": code}
                for job_id, key, code in self.failed_jobs[:NAMED_FAILURES]
            ],
            "keys": dict(busiest[:NAMED_KEYS]),
            "other_keys": max(0, len(busiest) - NAMED_KEYS),
        }


@shared_task(
    bind=True,
    name="identity.drain_key",
    throws=(JobsFailed,),
    resultrepr_maxsize=RESULT_REPR_CHARS,
    **RETRY_POLICY,
)
def drain_key(self: Task, key: str) -> dict[str, Any]:
    """Drain `key` first, then every key whose lock is free, until a pass finds nothing to do.

    A key locked by another drain is left to it: that drain did work, so it passes again.
    """
    get_producer().clear_flag()
    settings = get_settings()
    summary = DrainSummary(key)
    first: str | None = key
    while True:
        with transaction() as session:
            report = drain(
                session,
                first,
                apply_job,
                batch_size=settings.drain_batch_size,
                batch_appliers=BATCH_APPLIERS,
                max_starts=settings.max_job_starts,
                count_starts_after=settings.count_starts_after_seconds,
            )
        summary.add(report)
        if report.applied + report.failed == 0:
            break
        first = key if report.more else None
    result = summary.result()
    if not summary.failed_jobs:
        return result
    _tell_monitors(self, result)
    raise JobsFailed(
        f"{len(summary.failed_jobs)} of {summary.applied + len(summary.failed_jobs)} jobs "
        f"failed: {result['failed_jobs']}"
    )


def _tell_monitors(task: Task, result: dict[str, Any]) -> None:
    """Give Flower the result a failed task has none of (it keeps the fields of this event
    under the FAILURE that follows), so its search finds the keys of a failed drain."""
    try:
        task.send_event("task-jobs-failed", result=repr(result)[:RESULT_REPR_CHARS])
    except (RedisError, KombuOperationalError, OSError) as exc:
        log.warning("could not send the drain's result to monitors: %s", exc)
