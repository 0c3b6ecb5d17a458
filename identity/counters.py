"""Counters that outlive processes: workers add to rows in their own transactions, and
/metrics (api/metrics.py) reads them, so the figures are the same whichever API process is
scraped."""

import json
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

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


def record_finished(
    session: Session,
    finished: list[tuple[str, str, float]],
    failed: Sequence[tuple[str, str]] = (),
) -> None:
    """Count finished jobs by kind and outcome, their accept-to-finish latency, and the failed
    ones by kind and error code."""
    if not finished:
        return
    by_outcome = Counter((kind, outcome) for kind, outcome, _ in finished)
    latencies = [latency for _, _, latency in finished]
    increments = [
        ("jobs_finished_total", stored_labels(kind=kind, outcome=outcome), float(n))
        for (kind, outcome), n in by_outcome.items()
    ]
    # Cumulative buckets: a latency counts in every bucket whose bound it does not exceed.
    ordered = sorted(latencies)
    increments += [
        (
            "job_latency_seconds_bucket",
            stored_labels(le=str(bound)),
            float(bisect_right(ordered, bound)),
        )
        for bound in LATENCY_BUCKETS
        if ordered[0] <= bound
    ]
    increments += [
        ("job_latency_seconds_sum", "{}", sum(latencies)),
        ("job_latency_seconds_count", "{}", float(len(latencies))),
    ]
    increments += [
        ("jobs_failed_total", stored_labels(kind=kind, code=code), float(n))
        for (kind, code), n in Counter(failed).items()
    ]
    add(session, increments)


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
