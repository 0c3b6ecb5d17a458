"""The console's charts read the ledger: jobs accepted and finished per bucket, latency
percentiles of those that finished, and the backlog at each bucket's end, counting the jobs
that were pending when the window began."""

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.ledger.activity import activity


def add_job(session: Session, accepted_ago: float, finished_ago: float | None, status: str) -> None:
    """A job accepted `accepted_ago` seconds ago, finished `finished_ago` seconds ago (or not)."""
    session.execute(
        text(
            "INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, status, "
            "accepted_at, finished_at) VALUES (:id, :key, 1, 'user.upsert', '{}', '', 1, :status, "
            "clock_timestamp() - make_interval(secs => :accepted), "
            "clock_timestamp() - make_interval(secs => CAST(:finished AS float8)))"
        ),
        {
            "id": uuid.uuid4(),
            "key": f"user:{uuid.uuid4()}",
            "status": status,
            "accepted": accepted_ago,
            "finished": finished_ago,
        },
    )


def test_buckets_count_throughput_latency_and_the_backlog(session: Session) -> None:
    add_job(session, 7200, None, "pending")  # pending since before the window
    add_job(session, 3300, 3290, "applied")  # the first bucket: 10 s of latency
    add_job(session, 3250, 3240, "failed")
    add_job(session, 100, 98, "applied")  # the last bucket: 2 s
    add_job(session, 50, None, "pending")
    session.flush()
    buckets = activity(session, hours=1, buckets=6)  # 10 minutes each

    assert [b.accepted for b in buckets] == [2, 0, 0, 0, 0, 2]
    assert [b.finished for b in buckets] == [2, 0, 0, 0, 0, 1]
    assert [b.failed for b in buckets] == [1, 0, 0, 0, 0, 0]
    assert buckets[0].p50 == pytest.approx(10, abs=0.1)
    assert buckets[-1].p95 == pytest.approx(2, abs=0.1)
    assert buckets[1].p50 is None
    # The job pending since before the window is in every bucket's backlog.
    assert [b.backlog for b in buckets] == [1, 1, 1, 1, 1, 2]
