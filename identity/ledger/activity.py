"""Throughput, latency and backlog over the last hours, read from the ledger, for the console's
charts.

The window is cut into equal buckets. A bucket counts the jobs accepted in it, the jobs that
finished in it (and how many of those failed), the median and 95th percentile of their
accept-to-finish time, and the backlog (jobs accepted and not finished) at its end. The jobs
read are those accepted within twice the window, and every pending job: one accepted before
that and finished within the window is left out of both counts.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

_EVENTS = text(
    """
    WITH c AS (
        SELECT accepted_at, finished_at, status FROM jobs
        WHERE accepted_at >= CAST(:t0 AS timestamptz) - make_interval(secs => :span)
          AND (CAST(:sees AS text) IS NULL OR integrator = :sees)
        UNION ALL
        SELECT accepted_at, finished_at, status FROM jobs
        WHERE status = 'pending'
          AND accepted_at < CAST(:t0 AS timestamptz) - make_interval(secs => :span)
          AND (CAST(:sees AS text) IS NULL OR integrator = :sees)
    ),
    events AS (
        SELECT 'accepted' AS event,
               floor(extract(epoch FROM accepted_at - :t0) / :width)::int AS bucket,
               NULL::float8 AS latency, status
        FROM c WHERE accepted_at >= :t0
        UNION ALL
        SELECT 'finished', floor(extract(epoch FROM finished_at - :t0) / :width)::int,
               extract(epoch FROM finished_at - accepted_at), status
        FROM c WHERE finished_at >= :t0
        UNION ALL
        SELECT 'backlog', -1, NULL, status
        FROM c WHERE accepted_at < :t0 AND (finished_at IS NULL OR finished_at >= :t0)
    )
    SELECT event, bucket, count(*) AS n, count(*) FILTER (WHERE status = 'failed') AS failed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) AS p95
    FROM events GROUP BY event, bucket
    """
)


@dataclass
class Bucket:
    start: datetime
    accepted: int = 0
    finished: int = 0
    failed: int = 0
    p50: float | None = None  # seconds from accept to final status
    p95: float | None = None
    backlog: int = 0  # at the bucket's end


def activity(
    session: Session, *, hours: float, buckets: int = 60, sees: str | None = None
) -> list[Bucket]:
    """The last `hours`, in `buckets` equal buckets, oldest first; only the jobs of the
    integrator `sees` names, if any."""
    now: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    span = hours * 3600
    width = span / buckets
    t0 = now - timedelta(seconds=span)
    out = [Bucket(t0 + timedelta(seconds=width * i)) for i in range(buckets)]
    backlog_at_start = 0
    accepted = [0] * buckets
    finished = [0] * buckets
    params = {"t0": t0, "span": span, "width": width, "sees": sees}
    rows = session.execute(_EVENTS, params).all()
    for row in rows:
        if row.event == "backlog":
            backlog_at_start = row.n
            continue
        i = min(row.bucket, buckets - 1)  # the last instant belongs to the last bucket
        if row.event == "accepted":
            accepted[i] += row.n
            out[i].accepted += row.n
        else:
            finished[i] += row.n
            out[i].finished, out[i].failed = out[i].finished + row.n, out[i].failed + row.failed
            out[i].p50, out[i].p95 = row.p50, row.p95
    backlog = backlog_at_start
    for i, bucket in enumerate(out):
        backlog += accepted[i] - finished[i]
        bucket.backlog = backlog
    return out
