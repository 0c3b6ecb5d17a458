"""The durable job ledger: accepting writes as jobs, and reading them back.

Every write becomes a `jobs` row before anything else happens. A key's jobs take a sequence
number from `key_heads` in the accepting transaction, so sequence order is commit order, and
identity/ledger/drain.py applies them under a transaction-scoped advisory lock on the key, in
that order.
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.errors import IdempotencyKeyReused, IdmirrorError, JobNotFailed, JobNotFound
from identity.pagination import decode_cursor, page
from identity.schemas import check_not_ahead, to_version

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "idmirror_jobs"
JOB_COLUMNS = (
    "id, key, seq, kind, status, outcome, attempts, accepted_at, finished_at, result, error"
)


@dataclass(frozen=True)
class Submission:
    """A validated write, ready to be recorded."""

    key: str
    kind: str
    payload: dict[str, Any]
    explicit_version: int | None = None
    idempotency_key: str | None = None
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @cached_property
    def request_hash(self) -> str:
        canonical = json.dumps([self.kind, self.key, self.payload], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    job: dict[str, Any]
    reused: bool


@dataclass(frozen=True)
class Applied:
    """What an applier did: the outcome and the body the client is answered with."""

    outcome: str
    result: dict[str, Any]


def upserted(
    written: Any, stored: Any, version: int, out: Callable[..., dict[str, Any]]
) -> Applied:
    """The outcome of a conditional upsert: `written` is the row it returned (None when it wrote
    nothing), `stored` the row as it was, `version` the job's."""
    if written is not None:
        outcome = "created" if written.inserted else "updated"
        return Applied(outcome, out(written, created=written.inserted, outcome=outcome))
    outcome = "superseded" if stored.version > version else "unchanged"
    return Applied(outcome, out(stored, created=False, outcome=outcome))


@dataclass
class PendingJob:
    id: uuid.UUID
    key: str
    seq: int
    kind: str
    payload: dict[str, Any]
    version: int
    accepted_at: datetime


Applier = Callable[[Session, PendingJob], Applied]
# Applies jobs of distinct keys together: an outcome per job, in order, the error of a job that
# fails for good in its place.
BatchApplier = Callable[[Session, list[PendingJob]], list[Applied | IdmirrorError]]


def job_out(row: Any) -> dict[str, Any]:
    """The public form of a job row."""
    return {
        "id": str(row.id),
        "key": row.key,
        "seq": row.seq,
        "kind": row.kind,
        "status": row.status,
        "outcome": row.outcome,
        "attempts": row.attempts,
        "accepted_at": row.accepted_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "result": row.result,
        "error": row.error,
    }


# psycopg placeholders: the accept runs on the API's event loop through an async connection.
# Several writes accepted together take one statement. Each key's row in key_heads is bumped
# once, by the number of its jobs in the statement (rows locked in key order, so two such
# statements cannot deadlock each other), and its jobs take consecutive seqs and versions in the
# order they were given: the same numbers accepting them one after the other would give.
_ACCEPT = f"""
    WITH items AS (
        SELECT * FROM json_to_recordset(CAST(%(items)s AS json))
            AS i(n int, id uuid, key text, kind text, payload jsonb, hash text, version bigint)
    ),
    counts AS (SELECT key, count(*) AS c FROM items GROUP BY key),
    head AS (
        INSERT INTO key_heads AS h (key, last_seq, last_version)
        SELECT key, c, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + c - 1
        FROM counts ORDER BY key
        ON CONFLICT (key) DO UPDATE
            SET last_seq = h.last_seq + excluded.last_seq,
                last_version = greatest(h.last_version + excluded.last_seq, excluded.last_version)
        RETURNING key, last_seq, last_version
    ),
    numbered AS (
        SELECT i.*, c.c, row_number() OVER (PARTITION BY i.key ORDER BY i.n) AS r
        FROM items i JOIN counts c USING (key)
    )
    INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version)
    SELECT nb.id, nb.key, h.last_seq - nb.c + nb.r, nb.kind, nb.payload, nb.hash,
           coalesce(nb.version, h.last_version - nb.c + nb.r)
    FROM numbered nb JOIN head h USING (key)
    ORDER BY nb.n
    RETURNING {JOB_COLUMNS}
    """
_JOB_BY_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s"
_JOBS_BY_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY(%(ids)s)"
_IDEMPOTENCY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))"
_IDEMPOTENCY_LOOKUP = (
    "SELECT request_hash, job_id FROM idempotency_keys WHERE key = %s "
    "AND created_at > now() - make_interval(secs => %s)"
)
_IDEMPOTENCY_RECORD = (
    "INSERT INTO idempotency_keys (key, request_hash, job_id) VALUES (%s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, "
    "job_id = excluded.job_id, created_at = now()"
)


async def _insert(conn: psycopg.AsyncConnection[Any], subs: list[Submission]) -> list[Any]:
    """Insert the submissions' jobs; their rows, in the order given."""
    items = json.dumps(
        [
            {
                "n": n,
                "id": str(sub.job_id),
                "key": sub.key,
                "kind": sub.kind,
                "payload": sub.payload,
                "hash": sub.request_hash,
                "version": sub.explicit_version,
            }
            for n, sub in enumerate(subs)
        ]
    )
    rows = await (await conn.execute(_ACCEPT, {"items": items})).fetchall()
    by_id = {row.id: row for row in rows}
    return [by_id[sub.job_id] for sub in subs]


async def accept_many(
    conn: psycopg.AsyncConnection[Any], subs: list[Submission], *, again: bool = False
) -> list[Accepted]:
    """Record writes without an Idempotency-Key as pending jobs, in the order given.

    `conn` is in autocommit mode and yields rows with named columns: the accept is a single
    statement, atomic on its own, so it needs no BEGIN and COMMIT, and all of it commits at once.
    `again`: the same writes were sent on a connection that broke before the answer came; if
    they committed then, they are answered as recorded, not recorded twice. (Only then does the
    accept look its job ids up: a lookup in the statement itself would be planned once, while
    the ledger is small, as a scan of it.)
    """
    if any(sub.idempotency_key is not None for sub in subs):
        raise ValueError("a write with an Idempotency-Key is accepted on its own, by accept()")
    rows = await (_insert_again(conn, subs) if again else _insert(conn, subs))
    return [Accepted(job=job_out(row), reused=False) for row in rows]


async def _insert_again(conn: psycopg.AsyncConnection[Any], subs: list[Submission]) -> list[Any]:
    """Insert what an earlier try did not record; the rows of all of them, in order."""
    ids = [sub.job_id for sub in subs]
    for last_round in (False, True):
        found = await conn.execute(_JOBS_BY_ID, {"ids": ids})
        recorded = {row.id: row for row in await found.fetchall()}
        rest = [sub for sub in subs if sub.job_id not in recorded]
        try:
            inserted = await _insert(conn, rest) if rest else []
        except psycopg.errors.UniqueViolation as exc:
            # The earlier try was still running on the server when this one looked, and has
            # committed since: its rows are read back in the next round.
            if last_round or exc.diag.constraint_name != "jobs_pkey":
                raise
            continue
        recorded.update(zip((sub.job_id for sub in rest), inserted, strict=True))
        return [recorded[job_id] for job_id in ids]
    raise AssertionError("the last round returns or raises")


async def accept(
    conn: psycopg.AsyncConnection[Any], sub: Submission, *, idempotency_ttl_hours: float
) -> Accepted:
    """Record a write as a pending job, or return the job an Idempotency-Key already names."""
    if sub.idempotency_key is None:
        return (await accept_many(conn, [sub]))[0]

    request_hash = sub.request_hash
    async with conn.transaction():
        await conn.execute(_IDEMPOTENCY_LOCK, ["idem:" + sub.idempotency_key])
        lookup = [sub.idempotency_key, idempotency_ttl_hours * 3600]
        previous = await (await conn.execute(_IDEMPOTENCY_LOOKUP, lookup)).fetchone()
        if previous is not None:
            if previous.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request",
                    idempotency_key=sub.idempotency_key,
                    job_id=str(previous.job_id),
                )
            first = await conn.execute(_JOB_BY_ID, {"id": previous.job_id})
            return Accepted(job=job_out(await first.fetchone()), reused=True)
        (row,) = await _insert(conn, [sub])
        record = [sub.idempotency_key, request_hash, sub.job_id]
        await conn.execute(_IDEMPOTENCY_RECORD, record)
    return Accepted(job=job_out(row), reused=False)


def get_job(session: Session, job_id: uuid.UUID | str) -> dict[str, Any]:
    row = session.execute(
        text(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id"), {"id": job_id}
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    return job_out(row)


def list_jobs(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    key: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Newest first, filtered by any of status, key and kind."""
    after = decode_cursor(cursor, datetime.fromisoformat, uuid.UUID)
    rows = session.execute(
        text(
            f"""
            SELECT {JOB_COLUMNS} FROM jobs
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:key AS text) IS NULL OR key = :key)
              AND (CAST(:kind AS text) IS NULL OR kind = :kind)
              AND (CAST(:after_at AS timestamptz) IS NULL
                   OR (accepted_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
            ORDER BY accepted_at DESC, id DESC
            LIMIT :limit
            """
        ),
        {
            "status": status,
            "key": key,
            "kind": kind,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        },
    ).all()
    return page([job_out(r) for r in rows], limit, ["accepted_at", "id"])


def resubmission(
    session: Session, job_id: uuid.UUID | str, *, idempotency_key: str | None = None
) -> Submission:
    """A new submission carrying a failed job's payload, for POST /v1/jobs/{id}/retry."""
    row = session.execute(
        text("SELECT key, kind, status, payload FROM jobs WHERE id = :id"), {"id": job_id}
    ).one_or_none()
    if row is None:
        raise JobNotFound("no job has this id", job_id=str(job_id))
    if row.status != "failed":
        raise JobNotFailed(f"only failed jobs can be retried; this one is {row.status}")
    source = row.payload.get("source_updated_at")
    version = None
    if source is not None:
        version = to_version(datetime.fromisoformat(source))
        check_not_ahead(version, "payload.source_updated_at")  # a job stored before the rule
    return Submission(
        key=row.key,
        kind=row.kind,
        payload=row.payload,
        explicit_version=version,
        idempotency_key=idempotency_key,
    )


def forget_finished_jobs(session: Session, *, retention_hours: float, limit: int) -> int:
    """Delete up to `limit` applied or failed jobs that finished more than `retention_hours`
    ago, oldest first; pending jobs stay whatever their age. Their Idempotency-Keys, younger
    than the retention (settings), go with them by cascade.

    A job finishes after it is accepted, so the index on accepted_at finds the candidates; the
    ids are collected first, as an array, so no plan can turn the LIMIT into a scan of jobs."""
    result = session.execute(
        text(
            "DELETE FROM jobs WHERE id = ANY(ARRAY("
            "SELECT id FROM jobs WHERE accepted_at < now() - make_interval(secs => :age) "
            "AND finished_at < now() - make_interval(secs => :age) "
            "ORDER BY accepted_at LIMIT :limit))"
        ),
        {"age": retention_hours * 3600, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def forget_idempotency_keys(session: Session, *, ttl_hours: float) -> int:
    result = session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => :ttl)"),
        {"ttl": ttl_hours * 3600},
    )
    return int(getattr(result, "rowcount", 0) or 0)
