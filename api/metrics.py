"""The Prometheus side of /metrics: the ledger's counters and pending gauge, read from Postgres
at scrape time, so every API process reports the same figures."""

import json
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from identity.counters import LATENCY_BUCKETS, stored_labels


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

        gauge = GaugeMetricFamily("idmirror_jobs_pending", "Jobs waiting to be applied")
        gauge.add_metric([], float(pending))
        yield from (
            finished,
            reenqueued,
            _latency(values),
            gauge,
            forgotten,
            backfill_items,
            backfill_reenqueued,
        )


def _latency(values: dict[tuple[str, str], float]) -> HistogramMetricFamily:
    """The accept-to-final-status histogram, from its stored cumulative buckets."""
    buckets = [
        (str(b), values.get(("job_latency_seconds_bucket", stored_labels(le=str(b))), 0.0))
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
    return latency
