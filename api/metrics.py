"""The Prometheus side of /metrics: the ledger's counters and pending gauges, read from Postgres
at scrape time, so every API process reports the same figures; and the workers alive, from
their heartbeats in Redis."""

import json
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from identity.counters import LATENCY_BUCKETS, SUMMED, stored_labels
from identity.ledger.progress import Progress, read_progress
from identity.settings import get_settings
from worker.heartbeat import workers_alive


class LedgerCollector(Collector):
    """Reads the counters and the pending-job gauge from Postgres at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        with self._sessions() as session:
            rows = session.execute(text(SUMMED)).all()
            progress = read_progress(session, stall_after=get_settings().stall_after_seconds)
        values = {(r.name, r.labels): r.value for r in rows}
        finished, failed, backfill_items = _labelled(values)
        yield from (finished, _plain(values, "sweeper_reenqueued"), _latency(values))
        yield from _progress(progress)
        yield from (failed, _plain(values, "jobs_forgotten"), backfill_items)
        yield _plain(values, "backfill_sweeper_reenqueued")
        alive = workers_alive()
        if alive is not None:  # Redis away: no figure rather than a wrong one
            yield _gauge("workers_alive", float(alive))


_GAUGE_HELP = {
    "jobs_pending": "Jobs waiting to be applied",
    "oldest_pending_job_age_seconds": (
        "Age of the oldest pending job (0 when none is pending): a stall shows here first"
    ),
    "stalled": (
        "1 while jobs are pending, the oldest for longer than IDMIRROR_STALL_AFTER_SECONDS, "
        "and no drain has finished a job within that time"
    ),
    "drain_heartbeat_age_seconds": "Seconds since a drain last finished a job",
    "sweeper_heartbeat_age_seconds": "Seconds since the sweeper (run by beat) last ran",
    "workers_alive": "Workers whose heartbeat in Redis is fresh",
}


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"idmirror_{name}", _GAUGE_HELP[name])
    family.add_metric([], value)
    return family


def _progress(progress: Progress) -> Iterator[GaugeMetricFamily]:
    """The pending work's gauges; a heartbeat never written is left out."""
    yield _gauge("jobs_pending", float(progress.pending))
    yield _gauge("oldest_pending_job_age_seconds", progress.oldest_pending_age)
    yield _gauge("stalled", 1.0 if progress.stalled else 0.0)
    if progress.since_drain is not None:
        yield _gauge("drain_heartbeat_age_seconds", progress.since_drain)
    if progress.since_sweep is not None:
        yield _gauge("sweeper_heartbeat_age_seconds", progress.since_sweep)


_PLAIN_HELP = {
    "sweeper_reenqueued": "Drain messages the sweeper sent for stray jobs",
    "jobs_forgotten": "Finished jobs deleted from the ledger after IDMIRROR_JOB_RETENTION_HOURS",
    "backfill_sweeper_reenqueued": (
        "Backfill messages (chunks, steps, pulls) the sweeper sent again"
    ),
}


def _plain(values: dict[tuple[str, str], float], name: str) -> CounterMetricFamily:
    """A counter without labels."""
    family = CounterMetricFamily(f"idmirror_{name}", _PLAIN_HELP[name])
    family.add_metric([], values.get((f"{name}_total", "{}"), 0.0))
    return family


def _labelled(
    values: dict[tuple[str, str], float],
) -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
    """Finished jobs by kind and outcome, failed ones by kind and code, backfill items."""
    finished = CounterMetricFamily(
        "idmirror_jobs_finished", "Jobs that reached a final status", labels=["kind", "outcome"]
    )
    failed = CounterMetricFamily(
        "idmirror_jobs_failed",
        "Jobs that failed, by kind and error code: the dead-letter view's size",
        labels=["kind", "code"],
    )
    backfill_items = CounterMetricFamily(
        "idmirror_backfill_items",
        "Backfill items applied, by kind and outcome",
        labels=["kind", "outcome"],
    )
    for (name, labels), value in values.items():
        parsed = json.loads(labels)
        if name == "jobs_finished_total":
            finished.add_metric([parsed["kind"], parsed["outcome"]], value)
        elif name == "jobs_failed_total":
            failed.add_metric([parsed["kind"], parsed["code"] or "unknown"], value)
        elif name == "backfill_items_total":
            backfill_items.add_metric([parsed["kind"], parsed["outcome"]], value)
    return finished, failed, backfill_items


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
