"""identity.backfill_*: apply a chunk, run a phase step, pull a source, start a scheduled pull.

Each task does its work in Postgres transactions and sends the follow-up messages that work
returned only after they committed. A lost message is re-sent by the sweeper.
"""

import logging
from typing import Any

from celery import shared_task
from sqlalchemy.exc import DBAPIError

from identity.backfill import sources
from identity.backfill.apply import apply_chunk, fail_chunk
from identity.backfill.drift import run_step
from identity.backfill.flow import Work
from identity.db import TRANSIENT_ERRORS, transaction
from identity.errors import InternalError, SourceBusy, SourceNotFound
from identity.settings import get_settings
from tasks.policy import RETRY_POLICY
from worker.producer import get_producer

log = logging.getLogger(__name__)


@shared_task(name="identity.backfill_chunk", **RETRY_POLICY)
def backfill_chunk(backfill_id: str, seq: int) -> dict[str, Any]:
    """Apply one stored chunk (a no-op if it is done, being applied, or not its turn yet)."""
    try:
        with transaction() as session:
            work = apply_chunk(session, backfill_id, seq)
    except TRANSIENT_ERRORS:
        raise
    except (DBAPIError, ValueError, KeyError, TypeError) as exc:
        log.exception("backfill %s chunk %s cannot be applied", backfill_id, seq)
        error = InternalError(f"the item's chunk could not be applied: {type(exc).__name__}")
        with transaction() as session:
            work = fail_chunk(session, backfill_id, seq, error.envelope())
    get_producer().send_work(work)
    return {"backfill_id": backfill_id, "seq": seq, "queued": len(work)}


@shared_task(name="identity.backfill_step", **RETRY_POLICY)
def backfill_step(backfill_id: str) -> dict[str, Any]:
    """Run a plan or drift phase to its end, one transaction per step."""
    settings = get_settings()
    steps = 0
    while True:
        with transaction() as session:
            work = run_step(
                session,
                backfill_id,
                max_fraction=settings.prune_max_fraction,
                batch=settings.backfill_chunk_size,
            )
        steps += 1
        if work != [Work("step", backfill_id)]:
            get_producer().send_work(work)
            return {"backfill_id": backfill_id, "steps": steps}


@shared_task(name="identity.backfill_pull", **RETRY_POLICY)
def backfill_pull(backfill_id: str) -> dict[str, Any]:
    """Pull a run's upstream source into chunks, resuming from its last checkpoint."""
    work = sources.pull(backfill_id, get_settings(), transaction)
    get_producer().send_work(work)
    return {"backfill_id": backfill_id, "queued": len(work)}


@shared_task(name="identity.backfill_source", acks_late=True, ignore_result=True)
def backfill_source(name: str) -> dict[str, Any]:
    """Beat's entry for a scheduled source: start a pull unless one is running."""
    try:
        with transaction() as session:
            run, work = sources.start(session, get_settings(), name)
    except (SourceBusy, SourceNotFound) as exc:
        log.info("scheduled pull of %s not started: %s", name, exc.message)
        return {"source": name, "started": None}
    get_producer().send_work(work)
    return {"source": name, "started": str(run.id)}
