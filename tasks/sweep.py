"""identity.sweep: re-send drain messages for jobs that have waited too long, and forget what
has outlived its retention.

Beat runs it in its own process (worker/beat.py), not through the queue: the sweeper must go on
when the workers it sends drains to are stopped, and its heartbeat (`heartbeats.sweeper`) says
it does. It stays a task, so that it can also be sent by hand."""

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session

from identity import counters
from identity.audit import forget_old_entries
from identity.backfill.flow import stray_work
from identity.db import transaction
from identity.ledger import progress
from identity.ledger.retention import (
    forget_backfill_items,
    forget_finished_jobs,
    forget_idempotency_keys,
    stale_keys,
)
from identity.settings import get_settings
from worker.producer import get_producer

log = logging.getLogger(__name__)

# Finished jobs past their retention are deleted this many at a time, in transactions of their
# own, at most FORGET_BATCHES times a sweep: up to 25,000 every 5 s, ahead of any write rate
# the service sustains, without one long transaction.
FORGET_BATCH, FORGET_BATCHES = 5000, 5


@shared_task(name="identity.sweep", acks_late=True, ignore_result=True)
def sweep() -> dict[str, Any]:
    """Queue a drain for every key whose pending jobs are older than the threshold."""
    settings = get_settings()
    with transaction() as session:
        progress.beat(session, "sweeper")
        keys = stale_keys(session, older_than_seconds=settings.sweep_after_seconds)
        forgotten = forget_idempotency_keys(session, ttl_hours=settings.idempotency_ttl_hours)
        backfill_work = stray_work(
            session,
            older_than_seconds=settings.sweep_after_seconds,
            receive_timeout_seconds=settings.backfill_receive_timeout_seconds,
        )
    # A job this old was not reached by the drain the flag stands for (if any: the worker that
    # took its message may have died): one drain more, whatever the flag says, drains every
    # key whose lock is free, the oldest first.
    sent = 0
    if keys and get_producer().send_drain(keys[0], whatever_the_flag=True) == "sent":
        sent = 1
    # Silent unless it sent something: a sweep that finds nothing runs every few seconds.
    if sent:
        log.info("re-queued a drain for stray pending jobs (keys with them: %d)", len(keys))
    if keys:
        with transaction() as session:
            counters.record_sweep(session, sent)
    backfill_sent = get_producer().send_work(backfill_work)
    if backfill_sent:
        log.info("re-queued %d stray backfill messages", backfill_sent)
    if backfill_work:
        with transaction() as session:
            counters.record_backfill_sweep(session, backfill_sent)
    return {
        "stale_keys": len(keys),
        "queued": sent,
        "backfill_requeued": backfill_sent,
        "idempotency_keys_forgotten": forgotten,
        "jobs_forgotten": forget_old_jobs(settings.job_retention_hours),
        "audit_forgotten": forget_old_audit(settings.audit_retention_days),
        "backfill_items_forgotten": forget_old_items(settings.job_retention_hours),
    }


def _in_batches(forget: Callable[[Session, int], int], batch: int, batches: int) -> int:
    """Run `forget(session, limit)` a batch per transaction until a batch comes up short."""
    total = 0
    for _ in range(batches):
        with transaction() as session:
            deleted = forget(session, batch)
        total += deleted
        if deleted < batch:
            break
    return total


def forget_old_jobs(
    retention_hours: float, *, batch: int = FORGET_BATCH, batches: int = FORGET_BATCHES
) -> int:
    """Delete finished jobs older than the retention, a batch per transaction."""

    def forget(session: Session, limit: int) -> int:
        deleted = forget_finished_jobs(session, retention_hours=retention_hours, limit=limit)
        if deleted:
            counters.record_forgotten_jobs(session, deleted)
        return deleted

    total = _in_batches(forget, batch, batches)
    if total:
        log.debug("forgot %d finished jobs older than %g hours", total, retention_hours)
    return total


def forget_old_audit(
    retention_days: float, *, batch: int = FORGET_BATCH, batches: int = FORGET_BATCHES
) -> int:
    """Delete audit entries older than IDMIRROR_AUDIT_RETENTION_DAYS, a batch per transaction."""

    def forget(session: Session, limit: int) -> int:
        return forget_old_entries(session, retention_days=retention_days, limit=limit)

    total = _in_batches(forget, batch, batches)
    if total:
        log.info("forgot %d audit entries older than %g days", total, retention_days)
    return total


def forget_old_items(
    retention_hours: float, *, batch: int = FORGET_BATCH, batches: int = FORGET_BATCHES
) -> int:
    """Delete backfill items (a key's history) older than the jobs' retention."""

    def forget(session: Session, limit: int) -> int:
        return forget_backfill_items(session, retention_hours=retention_hours, limit=limit)

    return _in_batches(forget, batch, batches)
