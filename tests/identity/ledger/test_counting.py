"""The statement that marks a drain's jobs counts them too: by kind and outcome, the failed ones
by kind and error code, and their accept-to-finish latency in cumulative buckets, under the
labels /metrics reads (identity/counters.py stored_labels)."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.counters import LATENCY_BUCKETS, stored_labels
from identity.ledger.apply import Finished, PendingJob, record_decisions


def pending(session: Session, kind: str, accepted_ago: float) -> PendingJob:
    """A pending job of `kind`, accepted `accepted_ago` seconds ago."""
    job = PendingJob(uuid.uuid4(), f"{kind}:{uuid.uuid4()}", 1, kind, {}, 1, datetime.now(UTC))
    session.execute(
        text(
            "INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, status, "
            "accepted_at) VALUES (:id, :key, 1, :kind, '{}', '', 1, 'pending', "
            "clock_timestamp() - make_interval(secs => :ago))"
        ),
        {"id": job.id, "key": job.key, "kind": kind, "ago": accepted_ago},
    )
    return job


def counted(session: Session) -> dict[tuple[str, str], float]:
    rows = session.execute(
        text("SELECT name, labels, sum(value) FROM metric_counters GROUP BY name, labels")
    )
    return {(name, labels): value for name, labels, value in rows}


def test_marking_jobs_counts_them_under_the_labels_metrics_reads(session: Session) -> None:
    finished = [
        Finished(pending(session, "user.upsert", 0.3), "created", result={}),
        Finished(pending(session, "user.upsert", 3), None, error={"code": "user_not_found"}),
        Finished(pending(session, "agent.upsert", 30), None, error={"code": "slug_taken"}),
        Finished(pending(session, "agent.upsert", 0.3), "unchanged", result={}),
        Finished(pending(session, "agent.upsert", 0.3), "unchanged", result={}),
    ]
    record_decisions(session, finished)

    values = counted(session)
    latency_sum = values.pop(("job_latency_seconds_sum", "{}"))
    assert 33.9 <= latency_sum < 34.9
    finished_total = "jobs_finished_total"
    expected = {
        (finished_total, stored_labels(kind="user.upsert", outcome="created")): 1.0,
        (finished_total, stored_labels(kind="user.upsert", outcome="failed")): 1.0,
        (finished_total, stored_labels(kind="agent.upsert", outcome="failed")): 1.0,
        (finished_total, stored_labels(kind="agent.upsert", outcome="unchanged")): 2.0,
        ("jobs_failed_total", stored_labels(kind="user.upsert", code="user_not_found")): 1.0,
        ("jobs_failed_total", stored_labels(kind="agent.upsert", code="slug_taken")): 1.0,
        ("job_latency_seconds_count", "{}"): 5.0,
    }
    # Cumulative: a bucket counts the latencies at most its bound; none is below 0.3 s.
    latencies = [0.3, 3, 30, 0.3, 0.3]
    for bound in LATENCY_BUCKETS:
        if bound >= 0.3:
            within = sum(1 for latency in latencies if latency < bound)  # each took a bit longer
            expected[("job_latency_seconds_bucket", stored_labels(le=str(bound)))] = float(within)
    assert values == expected

    # A second drain adds to the same rows.
    record_decisions(session, [Finished(pending(session, "user.upsert", 0.3), "created")])
    again = counted(session)
    assert again[(finished_total, stored_labels(kind="user.upsert", outcome="created"))] == 2.0
    assert again[("job_latency_seconds_count", "{}")] == 6.0
    assert len(again) == len(values) + 1
