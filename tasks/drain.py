"""identity.drain_key: apply a key's pending jobs in order."""

from typing import Any

from celery import shared_task

from identity.appliers import BATCH_APPLIERS, apply_job
from identity.db import transaction
from identity.ledger.drain import drain
from identity.settings import get_settings
from tasks.policy import RETRY_POLICY
from worker.producer import get_producer


@shared_task(name="identity.drain_key", **RETRY_POLICY)
def drain_key(key: str) -> dict[str, Any]:
    """Drain `key` first, then every key whose lock is free, until a pass finds nothing to do.

    A key locked by another drain is left to it: that drain did work, so it passes again.
    """
    get_producer().clear_flag()
    settings = get_settings()
    applied = failed = 0
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
        applied, failed = applied + report.applied, failed + report.failed
        if report.applied + report.failed == 0:
            return {"key": key, "applied": applied, "failed": failed}
        first = key if report.more else None
