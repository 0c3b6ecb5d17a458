"""Marking a drain's jobs finds them by id, however many other jobs are pending or were marked
since the last vacuum: a scan of the pending index would grow with both."""

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.ledger.apply import _RECORD, Finished, _decisions, record_decisions
from identity.ledger.jobs import NOTIFY_CHANNEL
from tests.identity.ledger.test_counting import pending

_MANY = """
    INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, status)
    SELECT gen_random_uuid(), 'user:' || :prefix || n, 1, 'user.upsert', '{}', '', 1, 'pending'
    FROM generate_series(1, :count) AS n
"""


def test_a_mark_reads_its_jobs_by_id_with_thousands_pending_and_marked(session: Session) -> None:
    session.execute(text(_MANY), {"prefix": "waiting-", "count": 3000})
    session.execute(text(_MANY), {"prefix": "done-", "count": 3000})
    # Marked without a vacuum since: their entries stay in the pending indexes.
    session.execute(text("UPDATE jobs SET status = 'applied' WHERE key LIKE 'user:done-%'"))
    mine = [pending(session, "user.upsert", 0.1) for _ in range(2)]
    session.commit()
    session.execute(text("ANALYZE jobs"))
    finished = [Finished(job, "created", result={}) for job in mine]

    params = {**_decisions(finished), "channel": NOTIFY_CHANNEL}
    plan = "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {_RECORD}"), params))
    assert "Index Scan on jobs_pkey" in plan or "Index Scan using jobs_pkey" in plan, plan
    assert "jobs_pending" not in plan, plan

    record_decisions(session, finished)
    rows = session.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
    assert {status: count for status, count in rows} == {"pending": 3000, "applied": 3002}
