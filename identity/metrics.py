"""Counters that outlive processes: workers add to rows in their own transactions, and
/metrics reads them, so the figures are the same whichever API process is scraped."""

import json
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# One statement for all the increments of a transaction, touching rows in a fixed order so
# concurrent writers never deadlock.
_ADD = text(
    """
    INSERT INTO metric_counters (name, labels, value)
    SELECT name, labels, value
    FROM json_to_recordset(CAST(:increments AS json)) AS i(name text, labels text, value float8)
    ORDER BY name, labels
    ON CONFLICT (name, labels) DO UPDATE SET value = metric_counters.value + excluded.value
    """
)


def _labels(**labels: str) -> str:
    return json.dumps(labels, sort_keys=True)


def add(session: Session, increments: Iterable[tuple[str, str, float]]) -> None:
    """Add to counters (several increments of one counter are summed first)."""
    totals: defaultdict[tuple[str, str], float] = defaultdict(float)
    for name, labels, value in increments:
        totals[(name, labels)] += value
    if totals:
        rows = [{"name": n, "labels": lb, "value": v} for (n, lb), v in totals.items()]
        session.execute(_ADD, {"increments": json.dumps(rows)})


def record_finished(session: Session, finished: list[tuple[str, str, float]]) -> None:
    """Count finished jobs by kind and outcome, and their accept-to-finish latency."""
    if not finished:
        return
    by_outcome = Counter((kind, outcome) for kind, outcome, _ in finished)
    latencies = [latency for _, _, latency in finished]
    increments = [
        ("jobs_finished_total", _labels(kind=kind, outcome=outcome), float(n))
        for (kind, outcome), n in by_outcome.items()
    ]
    # Cumulative buckets: a latency counts in every bucket whose bound it does not exceed.
    ordered = sorted(latencies)
    increments += [
        ("job_latency_seconds_bucket", _labels(le=str(bound)), float(bisect_right(ordered, bound)))
        for bound in LATENCY_BUCKETS
        if ordered[0] <= bound
    ]
    increments += [
        ("job_latency_seconds_sum", "{}", sum(latencies)),
        ("job_latency_seconds_count", "{}", float(len(latencies))),
    ]
    add(session, increments)


def record_sweep(session: Session, reenqueued: int) -> None:
    add(session, [("sweeper_reenqueued_total", "{}", float(reenqueued))])


def record_forgotten_jobs(session: Session, forgotten: int) -> None:
    add(session, [("jobs_forgotten_total", "{}", float(forgotten))])


def record_backfill_items(session: Session, kind: str, outcomes: Mapping[str, int]) -> None:
    """Count a backfill chunk's items by kind and outcome."""
    add(
        session,
        [
            ("backfill_items_total", _labels(kind=kind, outcome=outcome), float(n))
            for outcome, n in outcomes.items()
            if n
        ],
    )


def record_backfill_sweep(session: Session, reenqueued: int) -> None:
    add(session, [("backfill_sweeper_reenqueued_total", "{}", float(reenqueued))])


class LedgerCollector(Collector):
    """Reads the counters and the pending-job gauge from Postgres at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        with self._sessions() as session:
            rows = session.execute(text("SELECT name, labels, value FROM metric_counters")).all()
            pending = session.execute(
                text("SELECT count(*) FROM jobs WHERE status = 'pending'")
            ).scalar_one()
        values = {(r.name, r.labels): r.value for r in rows}

        finished = CounterMetricFamily(
            "idmirror_jobs_finished", "Jobs that reached a final status", labels=["kind", "outcome"]
        )
        reenqueued = CounterMetricFamily(
            "idmirror_sweeper_reenqueued", "Drain messages the sweeper sent for stray jobs"
        )
        backfill_items = CounterMetricFamily(
            "idmirror_backfill_items",
            "Backfill items applied, by kind and outcome",
            labels=["kind", "outcome"],
        )
        backfill_reenqueued = CounterMetricFamily(
            "idmirror_backfill_sweeper_reenqueued",
            "Backfill messages (chunks, steps, pulls) the sweeper sent again",
        )
        forgotten = CounterMetricFamily(
            "idmirror_jobs_forgotten",
            "Finished jobs deleted from the ledger after IDMIRROR_JOB_RETENTION_HOURS",
        )
        for (name, labels), value in values.items():
            parsed = json.loads(labels)
            if name == "jobs_finished_total":
                finished.add_metric([parsed["kind"], parsed["outcome"]], value)
            elif name == "backfill_items_total":
                backfill_items.add_metric([parsed["kind"], parsed["outcome"]], value)
        reenqueued.add_metric([], values.get(("sweeper_reenqueued_total", "{}"), 0.0))
        backfill_reenqueued.add_metric(
            [], values.get(("backfill_sweeper_reenqueued_total", "{}"), 0.0)
        )
        forgotten.add_metric([], values.get(("jobs_forgotten_total", "{}"), 0.0))

        buckets = [
            (str(b), values.get(("job_latency_seconds_bucket", _labels(le=str(b))), 0.0))
            for b in LATENCY_BUCKETS
        ]
        count = values.get(("job_latency_seconds_count", "{}"), 0.0)
        latency = HistogramMetricFamily(
            "idmirror_job_latency_seconds", "Time from accept to final status"
        )
        latency.add_metric(
            [],
            buckets + [("+Inf", count)],
            sum_value=values.get(("job_latency_seconds_sum", "{}"), 0.0),
        )
        gauge = GaugeMetricFamily("idmirror_jobs_pending", "Jobs waiting to be applied")
        gauge.add_metric([], float(pending))
        yield from (
            finished,
            reenqueued,
            latency,
            gauge,
            forgotten,
            backfill_items,
            backfill_reenqueued,
        )
