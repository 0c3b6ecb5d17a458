"""The audit trail: one entry per accepted write, per backfill and per admin action.

A write's entry is added by the statement that accepts it (identity/ledger/record.py) and given
its job's outcome by the drain statement that finishes the job (identity/ledger/drain.py); other
entries are added here, in the transaction of what they record. Entries are never changed
otherwise (a trigger refuses it) and are deleted only by the sweeper, after
IDMIRROR_AUDIT_RETENTION_DAYS. Refused requests are not entries: /metrics counts them.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.access import Actor
from identity.answers import Timestamp
from identity.pagination import Page, decode_cursor, page


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as the audit trail records it."""

    request_id: str | None = None
    client: str | None = None


class AuditEntryOut(BaseModel):
    """An audit entry: `action` is the job kind for writes (`agent.upsert`, ...), else
    `token.create`, `token.revoke`, `integrator.create`, `integrator.update`,
    `ownership.move` or `backfill.create`; `outcome` is a write's, once its job finished."""

    id: int
    at: Timestamp
    integrator: str | None
    token_id: uuid.UUID | None
    action: str
    key: str | None
    job_id: uuid.UUID | None
    outcome: str | None
    request_id: str | None
    client: str | None
    details: dict[str, Any] | None


_COLUMNS = "id, at, integrator, token_id, action, key, job_id, outcome, request_id, client, details"


def record(
    session: Session,
    actor: Actor,
    origin: Origin,
    action: str,
    *,
    key: str | None = None,
    outcome: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append an entry for what `actor` did, in the session's transaction."""
    session.execute(
        text(
            "INSERT INTO audit (integrator, token_id, action, key, outcome, request_id, client, "
            "details) VALUES (:integrator, :token_id, :action, :key, :outcome, :request_id, "
            ":client, CAST(:details AS jsonb))"
        ),
        {
            "integrator": actor.integrator,
            "token_id": actor.token_id,
            "action": action,
            "key": key,
            "outcome": outcome,
            "request_id": origin.request_id,
            "client": origin.client,
            "details": json.dumps(details) if details is not None else None,
        },
    )


def list_audit(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    integrator: str | None = None,
    key: str | None = None,
    token_id: uuid.UUID | None = None,
    since: datetime | None = None,
) -> Page[AuditEntryOut]:
    """Newest first, filtered by any of integrator, key, token and time."""
    after = decode_cursor(cursor, int)
    rows = session.execute(
        text(
            f"""
            SELECT {_COLUMNS} FROM audit
            WHERE (CAST(:integrator AS text) IS NULL OR integrator = :integrator)
              AND (CAST(:key AS text) IS NULL OR key = :key)
              AND (CAST(:token_id AS uuid) IS NULL OR token_id = :token_id)
              AND (CAST(:since AS timestamptz) IS NULL OR at >= :since)
              AND (CAST(:after AS bigint) IS NULL OR id < :after)
            ORDER BY id DESC LIMIT :limit
            """
        ),
        {
            "integrator": integrator,
            "key": key,
            "token_id": token_id,
            "since": since,
            "after": after[0] if after else None,
            "limit": limit + 1,
        },
    ).all()
    entries = [AuditEntryOut.model_validate(row._mapping) for row in rows]
    return page(entries, limit, lambda entry: [entry.id])


def forget_old_entries(session: Session, *, retention_days: float, limit: int) -> int:
    """Delete up to `limit` entries older than the retention, oldest first; how many."""
    result = session.execute(
        text(
            "DELETE FROM audit WHERE id = ANY(ARRAY(SELECT id FROM audit "
            "WHERE at < now() - make_interval(secs => :age) ORDER BY id LIMIT :limit))"
        ),
        {"age": retention_days * 86400, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)
