"""Recording writes as jobs: the statements of the accept path, on the API's async engine.

Several writes take one statement (`accept_many`); a write with an Idempotency-Key takes a
transaction of its own (`accept`). The statements are `text()` built once, so each execution
finds its compiled form in SQLAlchemy's cache. identity/ledger/accept.py decides when they run.
"""

import json
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from identity import counters
from identity.errors import IdempotencyKeyReused
from identity.ledger.apply import AUDIT_OUTCOME, Finished
from identity.ledger.jobs import JOB_BY_ID, JOB_COLUMNS, Accepted, Submission, job_out, job_rows

# Several writes accepted together are numbered in one statement (_ACCEPT or _NUMBER below).
# Each key's row in key_heads is bumped once, by the number of its jobs in the statement (rows
# locked in key order, so two such statements cannot deadlock each other), and its jobs take
# consecutive seqs and versions in the order they were given: the same numbers accepting them
# one after the other would give. `items` (n, key, version: the write's explicit version or
# null) comes before it.
_NUMBERED = """
    head AS (
        INSERT INTO key_heads AS h (key, last_seq, last_version)
        SELECT key, count(*),
               (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + count(*) - 1
        FROM items GROUP BY key ORDER BY key
        ON CONFLICT (key) DO UPDATE
            SET last_seq = h.last_seq + excluded.last_seq,
                last_version = greatest(h.last_version + excluded.last_seq, excluded.last_version)
        RETURNING key, last_seq, last_version
    ),
    numbered AS (
        SELECT i.*, last_seq - count(*) OVER keys + row_number() OVER taken AS job_seq,
               coalesce(version, last_version - count(*) OVER keys + row_number() OVER taken)
                   AS job_version
        FROM items i JOIN head USING (key)
        WINDOW keys AS (PARTITION BY key), taken AS (keys ORDER BY n)
    )
"""
# A write's fields, as json_to_recordset reads them from the items of _insert and _record.
_ITEM = (
    "n int, id uuid, key text, kind text, payload jsonb, hash text, version bigint, "
    "integrator text, token uuid, admin bool, request text, client text"
)
# Writes recorded as pending jobs, with their audit entries. Its text is kept compact:
# pg_stat_activity shows a statement's first kilobyte, and what it does (INSERT INTO jobs)
# should be in it.
_ACCEPT = job_rows(
    " ".join(
        f"""
    WITH items AS (SELECT * FROM json_to_recordset(CAST(:items AS json)) AS i({_ITEM})),
    {_NUMBERED},
    inserted AS (
        INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, integrator,
                          token_id, admin)
        SELECT id, key, job_seq, kind, payload, hash, job_version, integrator, token, admin
        FROM numbered ORDER BY n
        RETURNING {JOB_COLUMNS}
    ),
    audited AS (
        INSERT INTO audit (integrator, token_id, action, key, job_id, request_id, client)
        SELECT integrator, token, kind, key, id, request, client FROM items ORDER BY n
    )
    SELECT {JOB_COLUMNS} FROM inserted
    """.split()
    )
)
# Writes applied where they are accepted take their numbers first (seq, version, accepted_at:
# their keys' rows stay locked to the commit), and are recorded once decided, by _DECIDED.
_NUMBER = text(
    " ".join(
        f"""
    WITH items AS (
        SELECT * FROM json_to_recordset(CAST(:items AS json))
            AS i(n int, key text, version bigint)
    ),
    {_NUMBERED}
    SELECT job_seq AS seq, job_version AS version, clock_timestamp() AS accepted_at
    FROM numbered ORDER BY n
    """.split()
    )
)
# The jobs of writes numbered by _NUMBER, inserted as decided: applied or failed, with their
# audit entries' outcomes and their counts (given the columns _MARK gives identity/counters.py),
# or pending, for the workers. No row is written twice: a job inserted pending and then marked
# would add to the pending indexes and leave a dead row behind for every write.
_DECIDED = job_rows(
    f"""
    WITH d AS (
        SELECT * FROM json_to_recordset(CAST(:items AS json))
            AS d({_ITEM}, seq bigint, accepted_at timestamptz, status text, outcome text,
                 result json, error json)
    ),
    inserted AS (
        INSERT INTO jobs (id, key, seq, kind, payload, payload_hash, version, integrator,
                          token_id, admin, status, outcome, result, error, attempts,
                          accepted_at, finished_at)
        SELECT id, key, seq, kind, payload, hash, version, integrator, token, admin, status,
               outcome, result, error, (status <> 'pending')::int, accepted_at,
               CASE WHEN status <> 'pending' THEN clock_timestamp() END
        FROM d ORDER BY n
        RETURNING {JOB_COLUMNS}, finished_at - accepted_at AS latency, error ->> 'code' AS code
    ),
    marked AS (SELECT * FROM inserted WHERE status <> 'pending'),
    audited AS (
        INSERT INTO audit (integrator, token_id, action, key, job_id, request_id, client,
                           outcome)
        SELECT d.integrator, d.token, d.kind, d.key, d.id, d.request, d.client, {AUDIT_OUTCOME}
        FROM d LEFT JOIN marked m USING (id) ORDER BY d.n
    ),
    {counters.COUNT_FINISHED}
    SELECT {JOB_COLUMNS} FROM inserted
    """
)
# A job row as the accept path reads it: SQLAlchemy's Row finds a column by name through
# __getattr__, several times slower than a field of a named tuple, and each accepted write's
# answer reads thirteen of them. (mypy sees no fields in a namedtuple named from a constant.)
_job_row: Callable[[Iterable[Any]], Any] = namedtuple(  # type: ignore[attr-defined]
    "JobRow", JOB_COLUMNS
)._make
_JOBS_BY_ID = job_rows(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY(:ids)")
_IDEMPOTENCY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 1))")
_IDEMPOTENCY_LOOKUP = text(
    "SELECT request_hash, job_id FROM idempotency_keys WHERE key = :key "
    "AND created_at > now() - make_interval(secs => :seconds)"
)
_IDEMPOTENCY_RECORD = text(
    "INSERT INTO idempotency_keys (key, request_hash, job_id) VALUES (:key, :hash, :job_id) "
    "ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, "
    "job_id = excluded.job_id, created_at = now()"
)


def _item(n: int, sub: Submission) -> dict[str, Any]:
    return {
        "n": n,
        "id": str(sub.job_id),
        "key": sub.key,
        "kind": sub.kind,
        "payload": sub.payload,
        "hash": sub.request_hash,
        "version": sub.explicit_version,
        "integrator": sub.actor.integrator,
        "token": sub.actor.token_id and str(sub.actor.token_id),
        "admin": sub.actor.admin,
        "request": sub.request_id,
        "client": sub.client,
    }


async def _inserted(
    conn: AsyncConnection, statement: Any, subs: list[Submission], items: list[dict[str, Any]]
) -> list[Any]:
    """Insert the submissions' jobs with `statement`, given their `items`; their rows, in the
    order given."""
    result = await conn.execute(statement, {"items": json.dumps(items)})
    by_id = {row.id: row for row in map(_job_row, result.all())}
    return [by_id[sub.job_id] for sub in subs]


async def _insert(conn: AsyncConnection, subs: list[Submission]) -> list[Any]:
    """Insert the submissions' jobs, pending; their rows, in the order given."""
    return await _inserted(conn, _ACCEPT, subs, [_item(n, sub) for n, sub in enumerate(subs)])


# Applies writes in the transaction that accepts them, given each one's numbers
# (identity/ledger/apply.py apply_accepted, given its appliers): what it decided, by job id.
ApplyAccepted = Callable[[Session, list[tuple[Submission, Any]]], dict[uuid.UUID, Finished]]


async def _record(conn: AsyncConnection, subs: list[Submission], apply: ApplyAccepted) -> list[Any]:
    """Number the writes, apply those `apply` can, and record every one as decided (pending,
    if it was not applied); their rows, in the order given. In a transaction."""
    numbering = [
        {"n": n, "key": sub.key, "version": sub.explicit_version} for n, sub in enumerate(subs)
    ]
    numbers = (await conn.execute(_NUMBER, {"items": json.dumps(numbering)})).all()
    decided = await conn.run_sync(_in_session, apply, list(zip(subs, numbers, strict=True)))
    items = []
    for n, (sub, taken) in enumerate(zip(subs, numbers, strict=True)):
        item = _item(n, sub)
        item.update(seq=taken.seq, version=taken.version, accepted_at=taken.accepted_at.isoformat())
        if (finished := decided.get(sub.job_id)) is None:
            item["status"] = "pending"
        else:
            item.update(
                status=finished.status,
                outcome=finished.outcome,
                result=finished.result,
                error=finished.error,
            )
        items.append(item)
    return await _inserted(conn, _DECIDED, subs, items)


async def accept_many(
    conn: AsyncConnection,
    subs: list[Submission],
    *,
    again: bool = False,
    apply: ApplyAccepted | None = None,
) -> list[Accepted]:
    """Record writes without an Idempotency-Key as pending jobs, in the order given, and
    apply those to idle keys with `apply`, if given, in the same transaction.

    `conn` is in autocommit mode (the accept engine's): without `apply`, the accept is a single
    statement, atomic on its own, so it needs no BEGIN and COMMIT, and all of it commits at once.
    `again`: the same writes were sent on a connection that broke before the answer came; if
    they committed then, they are answered as recorded, not recorded twice. (Only then does the
    accept look its job ids up: a lookup in the statement itself would be planned once, while
    the ledger is small, as a scan of it.)
    """
    if any(sub.idempotency_key is not None for sub in subs):
        raise ValueError("a write with an Idempotency-Key is accepted on its own, by accept()")
    if apply is not None and not again:
        return await _accept_and_apply(conn, subs, apply)
    rows = await (_insert_again(conn, subs) if again else _insert(conn, subs))
    return [Accepted(job=job_out(row), reused=False) for row in rows]


async def _accept_and_apply(
    conn: AsyncConnection, subs: list[Submission], apply: ApplyAccepted
) -> list[Accepted]:
    """Record the writes and apply those `apply` can, in one transaction: a write to an idle
    key is answered applied, with the commit that records it."""
    await conn.execution_options(isolation_level="READ COMMITTED")
    async with conn.begin():
        rows = await _record(conn, subs, apply)
    return [Accepted(job=job_out(row), reused=False) for row in rows]


def _in_session(
    connection: Connection, apply: ApplyAccepted, accepted: list[tuple[Submission, Any]]
) -> dict[uuid.UUID, Finished]:
    # The session joins the connection's transaction: the commit is the accept's.
    with Session(bind=connection) as session:
        return apply(session, accepted)


async def _insert_again(conn: AsyncConnection, subs: list[Submission]) -> list[Any]:
    """Insert what an earlier try did not record; the rows of all of them, in order."""
    ids = [sub.job_id for sub in subs]
    for last_round in (False, True):
        found = await conn.execute(_JOBS_BY_ID, {"ids": ids})
        recorded = {row.id: row for row in map(_job_row, found.all())}
        rest = [sub for sub in subs if sub.job_id not in recorded]
        try:
            inserted = await _insert(conn, rest) if rest else []
        except IntegrityError as exc:
            # The earlier try was still running on the server when this one looked, and has
            # committed since: its rows are read back in the next round.
            diag = exc.orig.diag if isinstance(exc.orig, psycopg.Error) else None
            if last_round or diag is None or diag.constraint_name != "jobs_pkey":
                raise
            continue
        recorded.update(zip((sub.job_id for sub in rest), inserted, strict=True))
        return [recorded[job_id] for job_id in ids]
    raise AssertionError("the last round returns or raises")


async def accept(
    conn: AsyncConnection,
    sub: Submission,
    *,
    idempotency_ttl_hours: float,
    apply: ApplyAccepted | None = None,
) -> Accepted:
    """Record a write as a pending job (applied with `apply`, if given, when its key is
    idle), or return the job an Idempotency-Key already names.

    `conn` is a connection of the accept engine in no transaction yet."""
    if sub.idempotency_key is None:
        return (await accept_many(conn, [sub], apply=apply))[0]

    request_hash = sub.request_hash
    # Each integrator's keys are its own; the bootstrap token's are stored as they came.
    stored_key = sub.idempotency_key
    if sub.actor.integrator is not None:
        stored_key = f"{sub.actor.integrator}\n{stored_key}"
    # A transaction of its own, in which the lookup after the lock sees what a write with the
    # same key committed while this one waited for the lock.
    await conn.execution_options(isolation_level="READ COMMITTED")
    async with conn.begin():
        await conn.execute(_IDEMPOTENCY_LOCK, {"lock": "idem:" + stored_key})
        lookup = {"key": stored_key, "seconds": idempotency_ttl_hours * 3600}
        previous = (await conn.execute(_IDEMPOTENCY_LOOKUP, lookup)).one_or_none()
        if previous is not None:
            if previous.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request",
                    idempotency_key=sub.idempotency_key,
                    job_id=str(previous.job_id),
                )
            return Accepted(job=await read_job(conn, previous.job_id), reused=True)
        (row,) = await (_insert(conn, [sub]) if apply is None else _record(conn, [sub], apply))
        record = {"key": stored_key, "hash": request_hash, "job_id": sub.job_id}
        await conn.execute(_IDEMPOTENCY_RECORD, record)
    return Accepted(job=job_out(row), reused=False)


async def read_job(conn: AsyncConnection, job_id: Any) -> dict[str, Any]:
    return job_out((await conn.execute(JOB_BY_ID, {"id": job_id})).one())
