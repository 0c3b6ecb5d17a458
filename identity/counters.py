"""Counters that outlive processes: workers add to rows in their own transactions, and
/metrics (api/metrics.py) reads them, so the figures are the same whichever API process is
scraped."""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping

from sqlalchemy import text
from sqlalchemy.orm import Session

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Each counter is kept in up to SHARDS rows; a transaction adds to the one its connection's
# backend picks, so transactions on other connections need not wait for its commit to add to
# the same counter. Readers sum the shards (SUMMED).
SHARDS = 16
# One statement for all the increments of a transaction, touching rows in a fixed order so
# concurrent writers never deadlock.
_ADD = text(
    f"""
    INSERT INTO metric_counters (name, labels, shard, value)
    SELECT name, labels, pg_backend_pid() % {SHARDS}, value
    FROM json_to_recordset(CAST(:increments AS json)) AS i(name text, labels text, value float8)
    ORDER BY name, labels
    ON CONFLICT (name, labels, shard)
        DO UPDATE SET value = metric_counters.value + excluded.value
    """
)
SUMMED = "SELECT name, labels, sum(value) AS value FROM metric_counters GROUP BY name, labels"


def stored_labels(**labels: str) -> str:
    """The stored form of a counter's labels."""
    return json.dumps(labels, sort_keys=True)


def add(session: Session, increments: Iterable[tuple[str, str, float]]) -> None:
    """Add to counters (several increments of one counter are summed first)."""
    totals: defaultdict[tuple[str, str], float] = defaultdict(float)
    for name, labels, value in increments:
        totals[(name, labels)] += value
    if totals:
        rows = [{"name": n, "labels": lb, "value": v} for (n, lb), v in totals.items()]
        session.execute(_ADD, {"increments": json.dumps(rows)})


# The counters of finished jobs, added by the statement that marks them
# (identity/ledger/apply.py): a CTE reading `kind, outcome, status, code, latency` from the
# statement's CTE `marked`, so that counting costs no round trip of its own. Its labels are
# stored_labels()'s JSON, spelled out (kinds, outcomes and error codes are ASCII names);
# latencies count in every bucket whose bound they do not exceed, as Prometheus's cumulative
# buckets do, and a bucket below the smallest latency is not touched.
_BUCKETS = ", ".join(
    f"({bound}::float8, '{stored_labels(le=str(bound))}')" for bound in LATENCY_BUCKETS
)
COUNT_FINISHED = f"""
    counted AS (
        INSERT INTO metric_counters AS c (name, labels, shard, value)
        SELECT name, labels, pg_backend_pid() % {SHARDS}, value FROM (
            SELECT 'jobs_finished_total' AS name,
                   format('{{"kind": %s, "outcome": %s}}', to_json(kind),
                          to_json(coalesce(outcome, status))) AS labels,
                   count(*)::float8 AS value
            FROM marked GROUP BY kind, coalesce(outcome, status)
            UNION ALL
            SELECT 'jobs_failed_total',
                   format('{{"code": %s, "kind": %s}}', coalesce(to_json(code)::text, 'null'),
                          to_json(kind)),
                   count(*)
            FROM marked WHERE status = 'failed' GROUP BY kind, code
            UNION ALL
            SELECT 'job_latency_seconds_bucket', b.labels, count(*) FILTER (WHERE s <= b.bound)
            FROM (SELECT extract(epoch FROM latency)::float8 AS s FROM marked) m,
                 (VALUES {_BUCKETS}) AS b(bound, labels)
            GROUP BY b.bound, b.labels HAVING min(s) <= b.bound
            UNION ALL
            SELECT 'job_latency_seconds_sum', '{{}}', sum(extract(epoch FROM latency))::float8
            FROM marked HAVING count(*) > 0
            UNION ALL
            SELECT 'job_latency_seconds_count', '{{}}', count(*) FROM marked HAVING count(*) > 0
        ) i
        ORDER BY name, labels
        ON CONFLICT (name, labels, shard) DO UPDATE SET value = c.value + excluded.value
    )
"""


def record_sweep(session: Session, reenqueued: int) -> None:
    """Count the drain messages the sweeper sent again."""
    add(session, [("sweeper_reenqueued_total", "{}", float(reenqueued))])


def record_forgotten_jobs(session: Session, forgotten: int) -> None:
    """Count the finished jobs retention deleted."""
    add(session, [("jobs_forgotten_total", "{}", float(forgotten))])


def record_backfill_items(session: Session, kind: str, outcomes: Mapping[str, int]) -> None:
    """Count a backfill chunk's items by kind and outcome."""
    add(
        session,
        [
            ("backfill_items_total", stored_labels(kind=kind, outcome=outcome), float(n))
            for outcome, n in outcomes.items()
            if n
        ],
    )


def record_backfill_sweep(session: Session, reenqueued: int) -> None:
    """Count the backfill messages the sweeper sent again."""
    add(session, [("backfill_sweeper_reenqueued_total", "{}", float(reenqueued))])
