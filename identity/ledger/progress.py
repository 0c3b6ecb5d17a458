"""Whether pending work moves: the pending jobs, the age of the oldest, and the heartbeats the
drain and the sweeper write (`heartbeats`).

A drain writes its heartbeat in the statement that records the jobs it finished
(identity/ledger/drain.py); the sweeper, which runs in beat's process, on every sweep. Work is
stalled when jobs are pending, the oldest has waited longer than the stall time, and no drain
has finished a job within it either: a backlog that is being worked through is not a stall,
and neither is a quiet system.
"""

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

_PROGRESS = text(
    """
    SELECT
        (SELECT count(*) FROM jobs WHERE status = 'pending') AS pending,
        (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(accepted_at)), 0)
         FROM jobs WHERE status = 'pending') AS oldest,
        (SELECT extract(epoch FROM clock_timestamp() - at) FROM heartbeats
         WHERE name = 'drain') AS since_drain,
        (SELECT extract(epoch FROM clock_timestamp() - at) FROM heartbeats
         WHERE name = 'sweeper') AS since_sweep
    """
)


@dataclass(frozen=True)
class Progress:
    """What /healthz/stall, /metrics and the console tell about pending work."""

    pending: int
    oldest_pending_age: float  # seconds; 0 when nothing is pending
    since_drain: float | None  # seconds since a drain last finished a job; None: never
    since_sweep: float | None  # seconds since the sweeper last ran; None: never
    stall_after: float

    @property
    def stalled(self) -> bool:
        return (
            self.pending > 0
            and self.oldest_pending_age > self.stall_after
            and (self.since_drain is None or self.since_drain > self.stall_after)
        )


def read_progress(session: Session, *, stall_after: float) -> Progress:
    """The pending work and the heartbeats, as of now."""
    row = session.execute(_PROGRESS).one()
    return Progress(
        pending=int(row.pending),
        oldest_pending_age=float(row.oldest),
        since_drain=None if row.since_drain is None else float(row.since_drain),
        since_sweep=None if row.since_sweep is None else float(row.since_sweep),
        stall_after=stall_after,
    )


def beat(session: Session, name: str) -> None:
    """Record that `name` (the sweeper) is alive now."""
    session.execute(
        text(
            "INSERT INTO heartbeats (name, at) VALUES (:name, clock_timestamp()) "
            "ON CONFLICT (name) DO UPDATE SET at = excluded.at"
        ),
        {"name": name},
    )
