"""Backfills: the bulk path that mirrors every existing user and agent, then keeps them honest.

A backfill is a run in `backfills`; its input (an NDJSON upload or an upstream pull) is stored in
chunks and applied by chunk tasks, users before agents, with the same version rules as single
writes. This module creates, reads, cancels and retries runs; receiving is in receive.py (with
upload.py, pull.py and store.py), applying in apply.py, the phases in flow.py and mirror mode in
drift.py. docs/backfills.md describes the whole.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity import audit
from identity.access import OPERATOR, Actor
from identity.answers import Timestamp
from identity.backfill.flow import RUN_COLUMNS, Work, advance
from identity.errors import (
    BackfillNotFound,
    BackfillNotRetryable,
    InvalidBackfill,
    SourceBusy,
)
from identity.keys import AgentKey, parse_ledger_key
from identity.pagination import Page, bigint_value, decode_cursor, page, text_value
from identity.schemas import check_not_ahead, to_version

COLUMNS = (
    "id, status, phase, mode, prune, dry_run, source, snapshot_at, snapshot_version, received, "
    "created, updated, unchanged, superseded, failed, retries, drift, error, started_at, "
    "finished_at, extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at) "
    "AS elapsed"
)
COUNTS = ("received", "created", "updated", "unchanged", "superseded", "failed")


@dataclass(frozen=True)
class BackfillOptions:
    """How to run a backfill: the query parameters of POST /v1/internal/backfills."""

    mode: Literal["upsert", "mirror"] = "upsert"
    prune: bool = False
    dry_run: bool = False
    snapshot_at: datetime | None = None

    def check(self) -> None:
        if self.prune and self.mode != "mirror":
            raise InvalidBackfill("prune=true needs mode=mirror", mode=self.mode)
        if self.snapshot_at is not None:
            check_not_ahead(to_version(self.snapshot_at), "query.snapshot_at")


def reads_known(mode: str, *, dry_run: bool) -> bool:
    """Whether the run may count lines an earlier backfill applied as unchanged without reading
    them (known.py): not a mirror run, whose drift needs every item of the input, nor a
    dry run, which keeps to the one path it reports on."""
    return mode == "upsert" and not dry_run


class BackfillCounts(BaseModel):
    received: int
    created: int
    updated: int
    unchanged: int
    superseded: int
    failed: int


class BackfillOut(BaseModel):
    """A backfill run as the API shows it."""

    id: uuid.UUID
    status: Literal["receiving", "running", "completed", "failed", "cancelled"]
    phase: Literal["receiving", "plan", "users", "agents", "drift", "done"]
    mode: Literal["upsert", "mirror"]
    prune: bool
    dry_run: bool
    source: str | None
    snapshot_at: Timestamp
    counts: BackfillCounts
    drift: dict[str, Any] | None
    error: dict[str, Any] | None
    retries: int
    started_at: Timestamp
    finished_at: Timestamp | None
    items_per_second: float


class BackfillFailureOut(BaseModel):
    """A failed item: its line, its key when the line names one, and its error envelope."""

    line: int
    kind: str | None
    key: str | None
    error: dict[str, Any]
    retryable: bool


class DriftedAgentOut(BaseModel):
    """An agent a mirror run's input no longer has, and what became of it."""

    agent_id: str
    key: str
    state: Literal["found", "pruned", "kept"]


def backfill_out(row: Any) -> BackfillOut:
    """The public form of a run."""
    processed = row.created + row.updated + row.unchanged + row.superseded + row.failed
    elapsed = float(row.elapsed or 0)
    return BackfillOut.model_validate(
        {
            **row._mapping,
            "counts": {name: getattr(row, name) for name in COUNTS},
            "items_per_second": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
        }
    )


def create(
    session: Session,
    options: BackfillOptions,
    *,
    now: datetime,
    source: str | None = None,
    actor: Actor = OPERATOR,
    origin: audit.Origin = audit.Origin(),
) -> BackfillOut:
    """A new run, receiving, for `actor` (its items write as that actor's writes would).
    Items without source_updated_at take the snapshot's version."""
    options.check()
    snapshot = options.snapshot_at or now
    params = {
        "id": uuid.uuid4(),
        "mode": options.mode,
        "prune": options.prune,
        "dry_run": options.dry_run,
        # Before its whole input is in, a run may apply users only if nothing has to be
        # decided about the input as a whole first.
        "apply_early": not options.dry_run and not options.prune,
        "source": source,
        "snapshot_at": snapshot,
        "snapshot_version": to_version(snapshot),
        "integrator": actor.integrator,
        "admin": actor.admin,
    }
    try:
        with session.begin_nested():
            row = session.execute(
                text(
                    f"""
                    INSERT INTO backfills (id, mode, prune, dry_run, apply_early, source,
                                           snapshot_at, snapshot_version, integrator, admin)
                    VALUES (:id, :mode, :prune, :dry_run, :apply_early, :source,
                            :snapshot_at, :snapshot_version, :integrator, :admin)
                    RETURNING {COLUMNS}
                    """
                ),
                params,
            ).one()
    except IntegrityError:
        running = session.execute(
            text(
                "SELECT id FROM backfills WHERE source = :source "
                "AND status IN ('receiving', 'running')"
            ),
            {"source": source},
        ).scalar()
        raise SourceBusy(
            f"source {source!r} is already being pulled",
            source=source,
            backfill_id=str(running) if running else None,
        ) from None
    details = {"mode": options.mode, "prune": options.prune, "dry_run": options.dry_run}
    audit.record(
        session, actor, origin, "backfill.create", key=f"backfill:{params['id']}", details=details
    )
    return backfill_out(row)


def _parse_id(raw: str | uuid.UUID) -> uuid.UUID:
    try:
        return raw if isinstance(raw, uuid.UUID) else uuid.UUID(raw)
    except ValueError:
        raise BackfillNotFound("no backfill has this id", backfill_id=str(raw)) from None


def _row(
    session: Session, backfill_id: uuid.UUID, *, lock: bool = False, sees: str | None = None
) -> Any:
    """The run, if `sees` (an integrator; None: anyone) may see it."""
    row = session.execute(
        text(
            f"SELECT {COLUMNS} FROM backfills WHERE id = :id "
            "AND (CAST(:sees AS text) IS NULL OR integrator = :sees)"
            + (" FOR UPDATE" if lock else "")
        ),
        {"id": backfill_id, "sees": sees},
    ).one_or_none()
    if row is None:
        raise BackfillNotFound("no backfill has this id", backfill_id=str(backfill_id))
    return row


def get_backfill(
    session: Session, backfill_id: str | uuid.UUID, *, sees: str | None = None
) -> BackfillOut:
    """The run with this id; BackfillNotFound when there is none (that `sees` may see)."""
    return backfill_out(_row(session, _parse_id(backfill_id), sees=sees))


def list_backfills(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    sees: str | None = None,
) -> Page[BackfillOut]:
    """Newest first; only the runs of the integrator `sees`, if given."""
    after = decode_cursor(cursor, datetime.fromisoformat, uuid.UUID)
    rows = session.execute(
        text(
            f"""
            SELECT {COLUMNS} FROM backfills
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:sees AS text) IS NULL OR integrator = :sees)
              AND (CAST(:after_at AS timestamptz) IS NULL
                   OR (started_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
            ORDER BY started_at DESC, id DESC LIMIT :limit
            """
        ),
        {
            "status": status,
            "sees": sees,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        },
    ).all()
    runs = [backfill_out(r) for r in rows]
    return page(runs, limit, lambda run: [run.started_at.isoformat(), str(run.id)])


def list_failures(
    session: Session, backfill_id: str, *, limit: int, cursor: str | None, sees: str | None = None
) -> Page[BackfillFailureOut]:
    """Failed items in line order: `line`, `key` (when the line names one) and `error`."""
    run_id = _parse_id(backfill_id)
    _row(session, run_id, sees=sees)
    after = decode_cursor(cursor, bigint_value)
    rows = session.execute(
        text(
            "SELECT line, kind, key, error, item IS NOT NULL AS retryable FROM backfill_failures "
            "WHERE backfill_id = :id AND (CAST(:after AS bigint) IS NULL OR line > :after) "
            "ORDER BY line LIMIT :limit"
        ),
        {"id": run_id, "after": after[0] if after else None, "limit": limit + 1},
    ).all()
    items = [BackfillFailureOut.model_validate(r._mapping) for r in rows]
    return page(items, limit, lambda failure: [failure.line])


def list_drift(
    session: Session, backfill_id: str, *, limit: int, cursor: str | None, sees: str | None = None
) -> Page[DriftedAgentOut]:
    """A mirror run's drift, agent by agent, with what became of each."""
    run_id = _parse_id(backfill_id)
    _row(session, run_id, sees=sees)
    after = decode_cursor(cursor, text_value)
    rows = session.execute(
        text(
            "SELECT agent_id, key, state FROM backfill_drift WHERE backfill_id = :id "
            "AND (CAST(:after AS text) IS NULL OR agent_id > :after) "
            "ORDER BY agent_id LIMIT :limit"
        ),
        {"id": run_id, "after": after[0] if after else None, "limit": limit + 1},
    ).all()
    return page([_drifted(r) for r in rows], limit, lambda drifted: [drifted.agent_id])


def _drifted(row: Row[Any]) -> DriftedAgentOut:
    """A drifted agent as the API lists it: its key without the ledger's `agent:`."""
    match parse_ledger_key(row.key):
        case AgentKey() as key:
            return DriftedAgentOut(agent_id=row.agent_id, key=key.path, state=row.state)
    raise ValueError(f"drift holds agents only, not {row.key!r}")


def cancel(session: Session, backfill_id: str, *, sees: str | None = None) -> BackfillOut:
    """Stop a run: chunks not applied yet never will be. A finished run is left as it is."""
    run_id = _parse_id(backfill_id)
    row = _row(session, run_id, lock=True, sees=sees)
    if row.status in ("receiving", "running"):
        session.execute(
            text(
                "UPDATE backfills SET status = 'cancelled', phase = 'done', "
                "finished_at = clock_timestamp(), touched_at = clock_timestamp() WHERE id = :id"
            ),
            {"id": run_id},
        )
        row = _row(session, run_id)
    return backfill_out(row)


_RETRY_CHUNKS = text(
    """
    WITH retried AS (
        DELETE FROM backfill_failures
        WHERE backfill_id = :id AND item IS NOT NULL
        RETURNING kind, key, line, item
    ),
    placed AS (
        SELECT kind, line, item, mod(abs(hashtext(key)::bigint), :buckets) AS bucket
        FROM retried
    ),
    numbered AS (
        SELECT *, (row_number() OVER (PARTITION BY kind, bucket ORDER BY line) - 1) / :size
               AS part
        FROM placed
    ),
    grouped AS (
        SELECT kind, bucket, part, count(*) AS size, jsonb_agg(item ORDER BY line) AS items
        FROM numbered GROUP BY kind, bucket, part
    )
    INSERT INTO backfill_chunks (backfill_id, seq, kind, bucket, size, items)
    SELECT :id, :base + row_number() OVER (ORDER BY kind, bucket, part), kind, bucket, size, items
    FROM grouped
    RETURNING size
    """
)


def retry(
    session: Session, backfill_id: str, *, chunk_size: int, buckets: int, sees: str | None = None
) -> tuple[BackfillOut, list[Work]]:
    """Run a completed run's failed items again (lines that were not valid stay failed)."""
    run_id = _parse_id(backfill_id)
    row = _row(session, run_id, lock=True, sees=sees)
    if row.status != "completed" or row.dry_run:
        raise BackfillNotRetryable(
            "only a completed backfill that is not a dry run can be retried; "
            f"this one is {'a dry run' if row.dry_run else row.status}",
            status=row.status,
        )
    chunks = session.execute(
        text("SELECT chunks FROM backfills WHERE id = :id"), {"id": run_id}
    ).scalar_one()
    sizes = (
        session.execute(
            _RETRY_CHUNKS,
            {"id": run_id, "buckets": buckets, "size": chunk_size, "base": chunks},
        )
        .scalars()
        .all()
    )
    if not sizes:
        raise BackfillNotRetryable(
            "no failed item can be retried: lines that were not valid stay failed",
            failed=row.failed,
        )
    run = session.execute(
        text(
            f"""
            UPDATE backfills SET status = 'running', phase = 'users', rerun = true,
                retries = retries + 1, failed = failed - :retried, chunks = chunks + :chunks,
                error = NULL, finished_at = NULL, touched_at = clock_timestamp()
            WHERE id = :id
            RETURNING {RUN_COLUMNS}
            """
        ),
        {"id": run_id, "retried": sum(sizes), "chunks": len(sizes)},
    ).one()
    work = advance(session, run)
    return backfill_out(_row(session, run_id)), work
