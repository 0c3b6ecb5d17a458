"""Storing what a receiver read: chunk rows, failed lines and the run's counts, in one transaction.

Each store claims its place in the run (its chunks' sequence numbers and its counts) against the
counts the stores before it left, so a store that PostgreSQL lost in a crash is noticed by the
next one, and returns the chunks that may be applied already.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session

from identity import counters
from identity.backfill.flow import EARLY_KINDS, Work, heads, users_pending
from identity.backfill.items import Failure, stored_key
from identity.db import commit_without_waiting_for_disk
from identity.errors import IdmirrorError, ServiceUnavailable, ValidationFailed

_LINE = re.compile(rb'^\{"l":(\d+)')  # every stored element starts with its line number
Chunk = tuple[str, int, list[bytes]]  # kind, bucket, the stored elements


class ReceiveStopped(Exception):
    """The run stopped receiving (it was cancelled) while its input was still arriving."""


class InputLost(ServiceUnavailable):
    """What an upload stored earlier is gone: PostgreSQL lost its last commits in a crash
    (stores do not wait for the disk) and came back while the upload went on."""

    code = "backfill_input_lost"


@dataclass
class InputOrder:
    """Where the input stands between users and agents, for applying agents early."""

    agents: bool = False  # an agent line has come, and every user line before it is stored
    late_users: bool = False  # a user line has come after an agent line


@dataclass
class Batch:
    """What one store writes: full buffers as chunks, failed lines, lines known unchanged."""

    chunks: list[Chunk] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unchanged: Counter[str] = field(default_factory=Counter)  # by kind
    order: InputOrder = field(default_factory=InputOrder)
    state: dict[str, Any] | None = None  # a pull's checkpoint: where its input stands

    @property
    def lines(self) -> int:
        """How many received lines the store counts."""
        return (
            sum(len(parts) for _, _, parts in self.chunks)
            + len(self.failures)
            + self.unchanged.total()
        )


_CLAIM = text(
    """
    UPDATE backfills SET chunks = chunks + :chunks, received = received + :received,
        failed = failed + :failed, unchanged = unchanged + :unchanged,
        touched_at = clock_timestamp(),
        source_state = coalesce(CAST(:state AS jsonb), source_state),
        early_agents = CASE WHEN :late_users THEN false
                            WHEN :agents AND apply_early AND early_agents IS NULL THEN true
                            ELSE early_agents END
    WHERE id = :id AND status = 'receiving' AND chunks = :chunks_before
      AND received = :received_before
    RETURNING chunks, phase, apply_early, early_agents
    """
)
_CHUNK = text(
    "INSERT INTO backfill_chunks (backfill_id, seq, kind, bucket, size, items) "
    "VALUES (:id, :seq, :kind, :bucket, :size, CAST(:items AS jsonb))"
)
_FAILURES = text(
    """
    INSERT INTO backfill_failures (backfill_id, line, kind, key, error)
    SELECT :id, f.line, f.kind, f.key, CAST(f.error AS jsonb)
    FROM unnest(CAST(:lines AS bigint[]), CAST(:kinds AS text[]), CAST(:keys AS text[]),
                CAST(:errors AS text[])) AS f(line, kind, key, error)
    ON CONFLICT (backfill_id, line) DO NOTHING
    """
)


def store(
    session: Session, backfill_id: str, batch: Batch, *, before: tuple[int, int] = (0, 0)
) -> list[Work]:
    """Store a batch, count it, and queue the chunks that may run already. `before`: the run's
    chunks and received lines that the stores before this one counted; if the run holds fewer,
    some were lost (InputLost)."""
    if batch.state is None:  # not a pull's checkpoint, where a pull resumes: that one stays durable
        commit_without_waiting_for_disk(session)
    # The rows first and the claim last: the claim locks the run's row until the commit, and
    # workers finishing chunks of the run wait for it. A claim that fails rolls them back.
    refused = _insert_chunks(session, backfill_id, before[0], batch.chunks)
    _insert_failures(session, backfill_id, batch.failures + refused)
    for kind, count in batch.unchanged.items():  # chunks count their own items when applied
        counters.record_backfill_items(session, kind, {"unchanged": count})
    claim = _claim(session, backfill_id, batch, before, refused=len(refused))
    return _early_work(session, backfill_id, claim, batch.chunks)


def _claim(
    session: Session, backfill_id: str, batch: Batch, before: tuple[int, int], *, refused: int
) -> Row[Any]:
    """Add the batch to the run's counts (`refused`: its elements PostgreSQL refused); raises
    if the run no longer receives or lost a store."""
    claim = session.execute(
        _CLAIM,
        {
            "id": backfill_id,
            "chunks": len(batch.chunks),
            "received": batch.lines,
            "failed": len(batch.failures) + refused,
            "unchanged": batch.unchanged.total(),
            "state": json.dumps(batch.state) if batch.state is not None else None,
            "agents": batch.order.agents,
            "late_users": batch.order.late_users,
            "chunks_before": before[0],
            "received_before": before[1],
        },
    ).one_or_none()
    if claim is not None:
        return claim
    status = session.execute(
        text("SELECT status FROM backfills WHERE id = :id"), {"id": backfill_id}
    ).scalar()
    if status == "receiving":
        raise InputLost(
            "the database restarted during the upload and lost part of what it had "
            "stored; send the input again",
            backfill_id=backfill_id,
        )
    raise ReceiveStopped(backfill_id)


def _insert_chunks(
    session: Session, backfill_id: str, last_seq: int, chunks: list[Chunk]
) -> list[Failure]:
    """Insert the chunks numbered after `last_seq` (the run's chunks before them); returns the
    elements PostgreSQL refused."""
    refused: list[Failure] = []
    seq = last_seq
    for kind, bucket, parts in chunks:
        seq += 1
        try:
            with session.begin_nested():
                _insert_chunk(session, backfill_id, seq, kind, bucket, parts)
        except (DataError, UnicodeDecodeError):
            parts, bad = _screen(session, kind, parts)
            refused += bad
            if parts:
                _insert_chunk(session, backfill_id, seq, kind, bucket, parts)
    return refused


def _insert_chunk(
    session: Session, backfill_id: str, seq: int, kind: str, bucket: int, parts: list[bytes]
) -> None:
    items = (b"[" + b",".join(parts) + b"]").decode()
    session.execute(
        _CHUNK,
        {
            "id": backfill_id,
            "seq": seq,
            "kind": kind,
            "bucket": bucket,
            "size": len(parts),
            "items": items,
        },
    )


def _insert_failures(session: Session, backfill_id: str, failures: list[Failure]) -> None:
    if failures:
        session.execute(
            _FAILURES,
            {
                "id": backfill_id,
                "lines": [f.line for f in failures],
                "kinds": [f.kind for f in failures],
                "keys": [f.key for f in failures],
                "errors": [json.dumps(f.error) for f in failures],
            },
        )


def _early_work(
    session: Session, backfill_id: str, claim: Row[Any], chunks: list[Chunk]
) -> list[Work]:
    """The chunks just stored that may be applied while the input is still arriving."""
    if claim.phase != "receiving" or not claim.apply_early:
        return []
    kinds = EARLY_KINDS
    if claim.early_agents and not users_pending(session, backfill_id):
        kinds += ("agent",)
    work: list[Work] = []
    for kind, bucket in sorted({(k, b) for k, b, _ in chunks if k in kinds}):
        work += heads(session, backfill_id, kind, bucket=bucket)
    return work


def _is_jsonb(session: Session, value: str | None) -> bool:
    """Whether PostgreSQL takes `value` as jsonb (a savepoint per value: this path is rare, and
    pg_input_is_valid needs PostgreSQL 16)."""
    if value is None:
        return False
    try:
        with session.begin_nested():
            session.execute(text("SELECT CAST(:value AS jsonb)"), {"value": value})
    except DBAPIError:
        return False
    return True


def _screen(session: Session, kind: str, parts: list[bytes]) -> tuple[list[bytes], list[Failure]]:
    """Split out the elements PostgreSQL refuses as jsonb that validation accepted."""
    good: list[bytes] = []
    texts: list[str | None] = []
    for part in parts:
        try:
            texts.append(part.decode())
        except UnicodeDecodeError:
            texts.append(None)
    invalid = {i for i, t in enumerate(texts, start=1) if not _is_jsonb(session, t)}
    failures = []
    for index, part in enumerate(parts, start=1):
        if index not in invalid:
            good.append(part)
            continue
        match = _LINE.match(part)
        line = int(match.group(1)) if match else 0
        try:
            key: str | None = str(stored_key(kind, json.loads(part.decode(errors="replace"))))
        except (ValueError, KeyError, TypeError, IdmirrorError):
            key = None
        error = ValidationFailed("the item holds text or numbers that cannot be stored as JSON")
        failures.append(Failure(line, kind, key, error.envelope()))
    return good, failures
