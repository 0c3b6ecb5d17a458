"""How a backfill moves: receiving -> (plan) -> users -> agents -> (drift) -> done.

Progress lives in Postgres, never in Celery: whoever finishes a piece of work (the upload, a
chunk, a step) moves the run on in the same transaction, under the run's row lock, and returns
the messages to send once that transaction has committed. Items are split into buckets by key
and a bucket's chunks are applied one after another, so two items of one key apply in line
order; different buckets run in parallel. A chunk is queued when it becomes the first pending
chunk of its bucket; the sweeper re-queues any such chunk whose message was lost.

While the input is still arriving, user chunks may already be applied, and agent chunks too once
the input has moved on to agents with every user chunk before them applied (`early_agents`).
"""

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.db import commit_without_waiting_for_disk

ACTIVE = ("receiving", "running")
RUN_COLUMNS = (
    "id, status, phase, mode, prune, dry_run, rerun, apply_early, early_agents, integrator, admin"
)
UPLOAD_INTERRUPTED = {
    "code": "upload_interrupted",
    "message": "the upload stopped before its end",
    "status": 400,
    "details": {},
}
# Node types depend on nothing and nothing in a backfill depends on them: they go with users.
PHASE_KINDS = {"users": ("node_type", "user"), "agents": ("agent",)}
EARLY_KINDS = PHASE_KINDS["users"]


@dataclass(frozen=True)
class Work:
    """A message to send after commit: apply a chunk, run a step, or pull from a source."""

    task: str  # "chunk" | "step" | "pull"
    backfill_id: str
    seq: int | None = None


_HEADS = text(
    """
    WITH heads AS (
        SELECT DISTINCT ON (bucket) seq, queued_at FROM backfill_chunks
        WHERE backfill_id = :backfill_id AND kind = :kind AND status = 'pending'
          AND (CAST(:bucket AS integer) IS NULL OR bucket = :bucket)
        ORDER BY bucket, seq
    ),
    free AS (
        -- A locked head is being applied right now; its own transaction queues what follows.
        SELECT c.seq FROM backfill_chunks c JOIN heads h ON h.seq = c.seq
        WHERE c.backfill_id = :backfill_id
          AND (h.queued_at IS NULL
               OR h.queued_at < clock_timestamp()
                                - make_interval(secs => CAST(:stale AS double precision)))
        FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE backfill_chunks c SET queued_at = clock_timestamp()
    FROM free WHERE c.backfill_id = :backfill_id AND c.seq = free.seq
    RETURNING c.seq
    """
)


def heads(
    session: Session,
    backfill_id: Any,
    kind: str,
    *,
    bucket: int | None = None,
    stale_seconds: float | None = None,
) -> list[Work]:
    """Queue the first pending chunk of each bucket (or of one), unless already queued.

    With `stale_seconds`, a head queued longer ago than that is queued again (the sweeper)."""
    seqs = session.execute(
        _HEADS,
        {
            "backfill_id": backfill_id,
            "kind": kind,
            "bucket": bucket,
            # NULL makes the age test false: only never-queued heads.
            "stale": stale_seconds,
        },
    ).scalars()
    return [Work("chunk", str(backfill_id), seq) for seq in sorted(seqs)]


def is_head(session: Session, backfill_id: Any, kind: str, bucket: int, seq: int) -> bool:
    return not session.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM backfill_chunks WHERE backfill_id = :backfill_id "
            "AND kind = :kind AND bucket = :bucket AND status = 'pending' AND seq < :seq)"
        ),
        {"backfill_id": backfill_id, "kind": kind, "bucket": bucket, "seq": seq},
    ).scalar()


def unqueue(session: Session, backfill_id: Any, seq: int) -> None:
    """A chunk delivered before its turn goes back to waiting for it."""
    session.execute(
        text(
            "UPDATE backfill_chunks SET queued_at = NULL "
            "WHERE backfill_id = :backfill_id AND seq = :seq"
        ),
        {"backfill_id": backfill_id, "seq": seq},
    )


def _pending(session: Session, backfill_id: Any, kinds: tuple[str, ...]) -> bool:
    return bool(
        session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM backfill_chunks WHERE backfill_id = :backfill_id "
                "AND kind = ANY(:kinds) AND status = 'pending')"
            ),
            {"backfill_id": backfill_id, "kinds": list(kinds)},
        ).scalar()
    )


def runnable(run: Any, kind: str) -> bool:
    """Whether chunks of `kind` may be applied in the run's current phase (agent chunks while
    receiving: also only once no user chunk is pending, see `users_pending`)."""
    if run.phase == "receiving":
        if kind == "agent":
            return bool(run.apply_early) and run.early_agents is True
        return bool(run.apply_early) and kind in EARLY_KINDS
    return kind in PHASE_KINDS.get(run.phase, ())


def users_pending(session: Session, backfill_id: Any) -> bool:
    """Whether a user (or node type) chunk stored so far is still to be applied."""
    return _pending(session, backfill_id, EARLY_KINDS)


def stop_early_agents(session: Session, backfill_id: Any) -> None:
    """Agent chunks wait for the end of the input from now on."""
    session.execute(
        text("UPDATE backfills SET early_agents = false WHERE id = :id"), {"id": backfill_id}
    )


def _set_phase(session: Session, backfill_id: Any, phase: str) -> None:
    session.execute(
        text("UPDATE backfills SET phase = :phase, touched_at = clock_timestamp() WHERE id = :id"),
        {"id": backfill_id, "phase": phase},
    )


def step(session: Session, backfill_id: Any) -> Work:
    session.execute(
        text("UPDATE backfills SET step_queued_at = clock_timestamp() WHERE id = :id"),
        {"id": backfill_id},
    )
    return Work("step", str(backfill_id))


def complete(
    session: Session,
    backfill_id: Any,
    *,
    status: str = "completed",
    error: dict[str, Any] | None = None,
    clean: bool = True,
) -> None:
    """Final status; the stored chunks have served their purpose.

    Only a caller that knows no chunk is being applied may `clean` (a chunk's transaction locks
    its chunk, then the run); others leave the chunks to the sweeper. The final status is
    committed durably, whatever the transaction it ends."""
    commit_without_waiting_for_disk(session, wait=True)
    session.execute(
        text(
            "UPDATE backfills SET status = :status, phase = 'done', error = CAST(:error AS jsonb), "
            "finished_at = clock_timestamp(), touched_at = clock_timestamp() "
            "WHERE id = :id AND status IN ('receiving', 'running')"
        ),
        {"id": backfill_id, "status": status, "error": json.dumps(error) if error else None},
    )
    if clean:
        session.execute(
            text("DELETE FROM backfill_chunks WHERE backfill_id = :id"), {"id": backfill_id}
        )
        session.execute(
            text("DELETE FROM backfill_users WHERE backfill_id = :id"), {"id": backfill_id}
        )


def interrupt_upload(session: Session, backfill_id: Any) -> None:
    """The client went away mid-upload: what was stored and applied stays, the rest never runs."""
    complete(session, backfill_id, status="failed", error=UPLOAD_INTERRUPTED, clean=False)


def advance(
    session: Session, run: Any, *, kind: str | None = None, bucket: int | None = None
) -> list[Work]:
    """Move a run (its row locked by the caller) as far as it can go now.

    `kind` and `bucket` name the chunk that just finished: only the next chunk of its bucket is
    queued then; on entering a phase, the first chunk of every bucket is."""
    phase = run.phase
    if phase in ("plan", "drift"):
        return [step(session, run.id)]
    if phase == "receiving":
        if kind is None or not runnable(run, kind):
            return []
        work = heads(session, run.id, kind, bucket=bucket)
        if kind in EARLY_KINDS and runnable(run, "agent") and not users_pending(session, run.id):
            work += heads(session, run.id, "agent")  # the last user chunk before the agents
        return work
    while phase in PHASE_KINDS:
        kinds = PHASE_KINDS[phase]
        if _pending(session, run.id, kinds):
            if kind is not None:
                # An agent chunk applied early may finish while the users phase runs.
                return heads(session, run.id, kind, bucket=bucket) if kind in kinds else []
            return [work for k in kinds for work in heads(session, run.id, k)]
        kind = bucket = None
        if phase == "users":
            phase = "agents"
            _set_phase(session, run.id, phase)
        elif run.mode == "mirror" and not run.rerun:
            _set_phase(session, run.id, "drift")
            return [step(session, run.id)]
        else:
            complete(session, run.id)
            return []
    return []


def finish_receiving(session: Session, backfill_id: Any) -> list[Work]:
    """The input is all stored: start (or go on) applying it."""
    run = session.execute(
        text(
            f"""
            UPDATE backfills SET status = 'running', touched_at = clock_timestamp(),
                phase = CASE WHEN prune AND NOT dry_run THEN 'plan' ELSE 'users' END
            WHERE id = :id AND status = 'receiving'
            RETURNING {RUN_COLUMNS}
            """
        ),
        {"id": backfill_id},
    ).one_or_none()
    return [] if run is None else advance(session, run)


def stray_work(
    session: Session, *, older_than_seconds: float, receive_timeout_seconds: float
) -> list[Work]:
    """What the sweeper must queue again: chunks, steps and pulls whose message was lost."""
    work = _stray_chunks(session, older_than_seconds)
    work += _stray_steps(session, older_than_seconds)
    work += _silent_pulls(session, max(older_than_seconds * 3, 10.0))
    _fail_silent_uploads(session, receive_timeout_seconds)
    _clean_finished(session)
    return work


def _stray_chunks(session: Session, older_than_seconds: float) -> list[Work]:
    """The runnable head chunks of every active run, queued longer ago than that or never."""
    work: list[Work] = []
    runs = session.execute(
        text(
            "SELECT id, phase, early_agents FROM backfills "
            "WHERE status IN ('receiving', 'running') "
            "AND (phase IN ('users', 'agents') OR (phase = 'receiving' AND apply_early))"
        )
    ).all()
    for run in runs:
        kinds = PHASE_KINDS["agents" if run.phase == "agents" else "users"]
        if run.phase == "receiving" and run.early_agents:
            kinds += PHASE_KINDS["agents"]
        for kind in kinds:
            work += heads(session, run.id, kind, stale_seconds=older_than_seconds)
    return work


def _stray_steps(session: Session, older_than_seconds: float) -> list[Work]:
    """Plan and drift steps queued longer ago than that, or never."""
    steps = session.execute(
        text(
            """
            UPDATE backfills SET step_queued_at = clock_timestamp()
            WHERE id IN (
                SELECT id FROM backfills WHERE status = 'running' AND phase IN ('plan', 'drift')
                  AND (step_queued_at IS NULL OR step_queued_at
                       < clock_timestamp() - make_interval(secs => :age))
                FOR UPDATE SKIP LOCKED)
            RETURNING id
            """
        ),
        {"age": older_than_seconds},
    ).scalars()
    return [Work("step", str(i)) for i in steps]


def _silent_pulls(session: Session, silent_seconds: float) -> list[Work]:
    """Pulls silent for that long.

    A pull touches its run at every page; a silent one lost its worker. A duplicate is
    harmless: the pull holds a lock for as long as it runs."""
    pulls = session.execute(
        text(
            """
            UPDATE backfills SET touched_at = clock_timestamp()
            WHERE id IN (
                SELECT id FROM backfills WHERE status = 'receiving' AND source IS NOT NULL
                  AND touched_at < clock_timestamp() - make_interval(secs => :age)
                FOR UPDATE SKIP LOCKED)
            RETURNING id
            """
        ),
        {"age": silent_seconds},
    ).scalars()
    return [Work("pull", str(i)) for i in pulls]


def _fail_silent_uploads(session: Session, receive_timeout_seconds: float) -> None:
    """Uploads with no progress for that long lost their API process: they fail."""
    session.execute(
        text(
            """
            UPDATE backfills SET status = 'failed', phase = 'done',
                finished_at = clock_timestamp(), error = CAST(:error AS jsonb)
            WHERE id IN (
                SELECT id FROM backfills WHERE status = 'receiving' AND source IS NULL
                  AND touched_at < clock_timestamp() - make_interval(secs => :age)
                FOR UPDATE SKIP LOCKED)
            """
        ),
        {"age": receive_timeout_seconds, "error": json.dumps(UPLOAD_INTERRUPTED)},
    )


def _clean_finished(session: Session) -> None:
    """Cancelled and failed runs leave their chunks and covered users to be removed here."""
    session.execute(
        text(
            """
            DELETE FROM backfill_chunks WHERE (backfill_id, seq) IN (
                SELECT c.backfill_id, c.seq FROM backfill_chunks c
                JOIN backfills b ON b.id = c.backfill_id
                WHERE b.status IN ('completed', 'failed', 'cancelled')
                LIMIT 500 FOR UPDATE OF c SKIP LOCKED)
            """
        )
    )
    session.execute(
        text(
            "DELETE FROM backfill_users WHERE backfill_id IN (SELECT id FROM backfills "
            "WHERE status IN ('completed', 'failed', 'cancelled'))"
        )
    )
