"""What the sweeper looks for and lets go of: keys whose drain message is overdue, finished jobs
past their retention, and expired Idempotency-Keys."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def stale_keys(session: Session, *, older_than_seconds: float, limit: int = 1000) -> list[str]:
    """Keys with a job pending for longer than a drain message should take to arrive."""
    return list(
        session.execute(
            text(
                "SELECT key FROM jobs WHERE status = 'pending' "
                "AND accepted_at < clock_timestamp() - make_interval(secs => :age) "
                "GROUP BY key ORDER BY min(accepted_at) LIMIT :limit"
            ),
            {"age": older_than_seconds, "limit": limit},
        ).scalars()
    )


def forget_finished_jobs(session: Session, *, retention_hours: float, limit: int) -> int:
    """Delete up to `limit` applied or failed jobs that finished more than `retention_hours`
    ago, oldest first; pending jobs stay whatever their age. Their Idempotency-Keys, younger
    than the retention (settings), go with them by cascade.

    A job finishes after it is accepted, so the index on accepted_at finds the candidates; the
    ids are collected first, as an array, so no plan can turn the LIMIT into a scan of jobs."""
    result = session.execute(
        text(
            "DELETE FROM jobs WHERE id = ANY(ARRAY("
            "SELECT id FROM jobs WHERE accepted_at < now() - make_interval(secs => :age) "
            "AND finished_at < now() - make_interval(secs => :age) "
            "ORDER BY accepted_at LIMIT :limit))"
        ),
        {"age": retention_hours * 3600, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def forget_idempotency_keys(session: Session, *, ttl_hours: float) -> int:
    """Delete Idempotency-Keys older than `ttl_hours`; how many."""
    result = session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => :ttl)"),
        {"ttl": ttl_hours * 3600},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def forget_backfill_items(session: Session, *, retention_hours: float, limit: int) -> int:
    """Delete up to `limit` backfill items (a key's history) applied more than
    `retention_hours` ago, as finished jobs are; found through the BRIN index on their time."""
    result = session.execute(
        text(
            "DELETE FROM backfill_items WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM backfill_items "
            "WHERE applied_at < now() - make_interval(secs => :age) LIMIT :limit))"
        ),
        {"age": retention_hours * 3600, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)
