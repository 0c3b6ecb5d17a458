"""A key's whole history: its jobs (live writes and retries) and the backfill items that named
it, applied or failed, newest first.

Backfill chunks record each item that wrote its row (created, updated) or was refused as older
than it (superseded) in `backfill_items` (identity/backfill/sql.py); failed items are in
`backfill_failures`. An unchanged item wrote nothing and leaves no item: the row still holds
what an earlier write, in the history, put there.
"""

import uuid
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.answers import Timestamp

HISTORY_LIMIT = 200


class HistoryEntry(BaseModel):
    """One write of a key: a job, or an item of a backfill (`line` of run `backfill_id`)."""

    at: Timestamp  # a job's accept, an item's apply (a failed item's run start)
    key: str
    source: Literal["job", "backfill"]
    kind: str
    status: str  # a job's status; `applied` or `failed` for an item
    outcome: str | None
    code: str | None  # the error code of a failure
    job_id: uuid.UUID | None
    backfill_id: uuid.UUID | None
    line: int | None
    retried_by: uuid.UUID | None
    discarded: bool


_HISTORY = text(
    """
    (SELECT accepted_at AS at, key, 'job' AS source, kind, status, outcome,
            error ->> 'code' AS code, id AS job_id, NULL::uuid AS backfill_id,
            NULL::bigint AS line, retried_by, discarded_at IS NOT NULL AS discarded
     FROM jobs WHERE key = ANY(:keys) AND (CAST(:sees AS text) IS NULL OR integrator = :sees)
     ORDER BY accepted_at DESC LIMIT :limit)
    UNION ALL
    (SELECT i.applied_at, i.key, 'backfill', 'backfill.item', 'applied', i.outcome, NULL, NULL,
            i.backfill_id, i.line, NULL, false
     FROM backfill_items i JOIN backfills b ON b.id = i.backfill_id
     WHERE i.key = ANY(:keys) AND (CAST(:sees AS text) IS NULL OR b.integrator = :sees)
     ORDER BY i.applied_at DESC LIMIT :limit)
    UNION ALL
    (SELECT b.started_at, f.key, 'backfill', 'backfill.item', 'failed', NULL,
            f.error ->> 'code', NULL, f.backfill_id, f.line, NULL, false
     FROM backfill_failures f JOIN backfills b ON b.id = f.backfill_id
     WHERE f.key = ANY(:keys) AND (CAST(:sees AS text) IS NULL OR b.integrator = :sees)
     ORDER BY b.started_at DESC LIMIT :limit)
    ORDER BY at DESC, line DESC NULLS LAST LIMIT :limit
    """
)


def key_history(
    session: Session, keys: list[str], *, limit: int = HISTORY_LIMIT, sees: str | None = None
) -> list[HistoryEntry]:
    """The newest `limit` writes of `keys`, jobs and backfill items together; only those of
    the integrator `sees` names, if any."""
    rows = session.execute(_HISTORY, {"keys": keys, "limit": limit, "sees": sees}).all()
    return [HistoryEntry.model_validate(row, from_attributes=True) for row in rows]
