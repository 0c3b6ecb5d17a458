"""Receiving a backfill's input: lines in, chunks out, memory bounded by the open buffers.

Lines are split as bytes arrive and validated one by one. Valid items go to a buffer per (kind,
bucket); a full buffer becomes a chunk row in its own short transaction, with the run's counts,
so progress is visible while the upload goes on. An upstream pull instead writes every buffer
together with its cursor at checkpoints, so a pull resumed from its cursor stores nothing twice.
"""

import json
import re
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session

from identity import counters
from identity.backfill.flow import (
    EARLY_KINDS,
    Work,
    complete,
    finish_receiving,
    heads,
    users_pending,
)
from identity.backfill.items import Failure, ItemParser, Parsed, bucket_of
from identity.backfill.known import KnownLines
from identity.backfill.writer import StoreBehind
from identity.db import commit_without_waiting_for_disk
from identity.errors import ServiceUnavailable, ValidationFailed
from identity.settings import Settings

BOM = b"\xef\xbb\xbf"
_LINE = re.compile(rb'^\{"l":(\d+)')  # every stored element starts with its line number
Transaction = Callable[[], AbstractContextManager[Session]]


class ReceiveStopped(Exception):
    """The run stopped receiving (it was cancelled) while its input was still arriving."""


class InputLost(ServiceUnavailable):
    """What an upload stored earlier is gone: PostgreSQL lost its last commits in a crash
    (stores do not wait for the disk) and came back while the upload went on."""

    code = "backfill_input_lost"


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
            element = json.loads(part.decode(errors="replace"))
            name = element.get("id") or element["d"]["key"]
        except (ValueError, KeyError, TypeError):
            name = None
        error = ValidationFailed("the item holds text or numbers that cannot be stored as JSON")
        key = f"{kind}:{name}" if name else None
        failures.append(Failure(line, kind, key, error.envelope()))
    return good, failures


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


def _lines_in(
    chunks: list[tuple[str, int, list[bytes]]], failures: list[Failure], unchanged: Counter[str]
) -> int:
    """How many received lines a store counts."""
    return sum(len(parts) for _, _, parts in chunks) + len(failures) + unchanged.total()


def store(
    session: Session,
    backfill_id: str,
    chunks: list[tuple[str, int, list[bytes]]],
    failures: list[Failure],
    *,
    state: dict[str, Any] | None = None,
    order: "InputOrder | None" = None,
    unchanged: Counter[str] | None = None,
    before: tuple[int, int] = (0, 0),
) -> list[Work]:
    """Store chunks and failed lines, count them and the lines known to be unchanged, and queue
    the chunks that may run already. `before`: the run's chunks and received lines that the
    stores before this one counted; if the run holds fewer, some were lost (InputLost)."""
    order = order or InputOrder()
    unchanged = unchanged or Counter()
    if state is None:  # not a pull's checkpoint, where a pull resumes: that one stays durable
        commit_without_waiting_for_disk(session)
    claim = session.execute(
        _CLAIM,
        {
            "id": backfill_id,
            "chunks": len(chunks),
            "received": _lines_in(chunks, failures, unchanged),
            "failed": len(failures),
            "unchanged": unchanged.total(),
            "state": json.dumps(state) if state is not None else None,
            "agents": order.agents,
            "late_users": order.late_users,
            "chunks_before": before[0],
            "received_before": before[1],
        },
    ).one_or_none()
    if claim is None:
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
    seq = claim.chunks - len(chunks)
    refused: list[Failure] = []
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
    if refused:
        session.execute(
            text("UPDATE backfills SET failed = failed + :n WHERE id = :id"),
            {"id": backfill_id, "n": len(refused)},
        )
    _insert_failures(session, backfill_id, failures + refused)
    for kind, count in unchanged.items():  # chunks count their own items when applied
        counters.record_backfill_items(session, kind, {"unchanged": count})
    work: list[Work] = []
    if claim.phase != "receiving" or not claim.apply_early:
        return work
    kinds = EARLY_KINDS
    if claim.early_agents and not users_pending(session, backfill_id):
        kinds += ("agent",)
    for kind, bucket in sorted({(k, b) for k, b, _ in chunks if k in kinds}):
        work += heads(session, backfill_id, kind, bucket=bucket)
    return work


@dataclass
class InputOrder:
    """Where the input stands between users and agents, for applying agents early."""

    agents: bool = False  # an agent line has come, and every user line before it is stored
    late_users: bool = False  # a user line has come after an agent line


class Receiver:
    """Turns a stream of bytes (or of upstream records) into stored chunks."""

    def __init__(
        self,
        backfill_id: str,
        snapshot_version: int,
        settings: Settings,
        transaction: Transaction,
        *,
        first_line: int = 0,
        stored: tuple[int, int] = (0, 0),
        checkpoints: bool = False,
        known_lines: bool = False,
    ) -> None:
        self.backfill_id = backfill_id
        self.parser = ItemParser(
            snapshot_version, allow_private_webhooks=settings.allow_private_webhooks
        )
        self.chunk_size = settings.backfill_chunk_size
        self.buckets = settings.backfill_buckets
        self.max_line = settings.backfill_max_line_bytes
        self.transaction = transaction
        self.checkpoints = checkpoints
        self.line = first_line
        self.stored = stored  # chunks and received lines counted by the stores so far
        self.work: list[Work] = []
        self._partial = b""
        self._oversized = False
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._buffered = 0
        self._failures: list[Failure] = []
        self._order = InputOrder()
        # Lines an earlier backfill applied, recognised by their digest (backfill_known).
        self.known = (
            KnownLines(snapshot_version, allow_private_webhooks=settings.allow_private_webhooks)
            if known_lines
            else None
        )
        self._unchanged: Counter[str] = Counter()  # lines known unchanged, by kind
        self._records: list[bytes | None] = []  # a pull's records, read at its next page end
        # An upload stores behind its validation; a pull's checkpoint must be stored when it
        # returns, before the next page is asked for.
        self._behind = None if checkpoints else StoreBehind()

    # --- input ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take the next piece of an NDJSON stream; lines may span pieces."""
        if not data:
            return
        lines: list[bytes | None] = list(data.split(b"\n"))
        if self._oversized:
            if len(lines) == 1:
                return  # still inside the overlong line
            self._oversized = False
            lines[0] = None  # the end of the overlong line
        else:
            lines[0] = self._partial + (lines[0] or b"")
        self._partial = lines.pop() or b""
        self._read(lines)
        if len(self._partial) > self.max_line:
            self._partial, self._oversized = b"", True

    def add_record(self, record: Any, kind: str) -> None:
        """Take one upstream record of `kind` as if it were the next line (read at the next
        page end, checkpoint or finish)."""
        if isinstance(record, dict) and "type" not in record:
            record = {"type": kind, **record}
        self._records.append(json.dumps(record).encode())

    def _read(self, entries: list[bytes | None]) -> None:
        """Number the lines (None: an overlong line), then read them in order: those known
        unchanged are counted, the others validated and buffered."""
        lines = [numbered for raw in entries if (numbered := self._number(raw)) is not None]
        if self.known is None:
            for line, raw in lines:
                self._take(line, raw, None)
            return
        known = self.known
        found = known.look_up(self.transaction, [raw for _, raw in lines])
        for (line, raw), candidate in zip(lines, found, strict=True):
            if candidate is not None and known.take(candidate):
                self._unchanged[candidate.kind] += 1
                continue
            parsed = self._take(line, raw, candidate.digest if candidate else None)
            if parsed is not None:
                known.read(parsed.kind, parsed.key, parsed.slug, candidate)
        if self._unchanged.total() >= self.chunk_size and not self.checkpoints:
            self._write([])  # progress

    def _number(self, raw: bytes | None) -> tuple[int, bytes] | None:
        """The line's number and its text; None for a blank or overlong line."""
        if raw is None:
            self._too_long()
            return None
        self.line += 1
        raw = raw.strip()
        if not raw:
            return None
        if self.line == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :].strip()
        if len(raw) > self.max_line:
            self.line -= 1
            self._too_long()
            return None
        return self.line, raw

    def _too_long(self) -> None:
        self.line += 1
        error = ValidationFailed(f"the line is longer than {self.max_line} bytes")
        self._fail(Failure(self.line, None, None, error.envelope()))

    def _take(self, line: int, raw: bytes, digest: str | None) -> Parsed | None:
        """Validate a line and buffer what it stores; None if it failed."""
        parsed = self.parser.parse(line, raw, digest)
        if isinstance(parsed, Failure):
            self._fail(parsed)
            return None
        if parsed.kind == "agent" and not self._order.agents:
            self._reach_agents()
        elif parsed.kind == "user" and self._order.agents:
            self._order.late_users = True
        slot = (parsed.kind, bucket_of(parsed.key, self.buckets))
        buffer = self._buffers.get(slot)
        if buffer is None:
            buffer = self._buffers[slot] = []
        buffer.append(parsed.stored)
        self._buffered += 1
        if len(buffer) >= self.chunk_size and not self.checkpoints:
            self._write([(slot[0], slot[1], self._take_buffer(*slot))])
        return parsed

    def _reach_agents(self) -> None:
        """The first agent line: once every user line before it is stored (and applied),
        agent chunks may be applied while the rest arrives. A pull stores its users with its
        next checkpoint."""
        self._order.agents = True
        if not self.checkpoints:
            early = [(k, b) for k, b in self._buffers if k in EARLY_KINDS]
            self._write([(k, b, self._take_buffer(k, b)) for k, b in sorted(early)])

    def _take_buffer(self, kind: str, bucket: int) -> list[bytes]:
        buffer = self._buffers.pop((kind, bucket))
        self._buffered -= len(buffer)
        return buffer

    def _fail(self, failure: Failure) -> None:
        self._failures.append(failure)
        if len(self._failures) >= self.chunk_size and not self.checkpoints:
            self._write([])

    # --- output --------------------------------------------------------------------------

    def _write(
        self, chunks: list[tuple[str, int, list[bytes]]], state: dict[str, Any] | None = None
    ) -> None:
        failures, self._failures = self._failures, []
        unchanged, self._unchanged = self._unchanged, Counter()
        order = replace(self._order)
        before = self.stored
        self.stored = (before[0] + len(chunks), before[1] + _lines_in(chunks, failures, unchanged))

        def write() -> list[Work]:
            try:
                with self.transaction() as session:
                    return store(
                        session,
                        self.backfill_id,
                        chunks,
                        failures,
                        state=state,
                        order=order,
                        unchanged=unchanged,
                        before=before,
                    )
            except InputLost as lost:
                with self.transaction() as session:
                    complete(
                        session,
                        self.backfill_id,
                        status="failed",
                        error=lost.envelope(),
                        clean=False,
                    )
                raise

        self.work += write() if self._behind is None else self._behind.submit(write)

    def _drain_buffers(self) -> list[tuple[str, int, list[bytes]]]:
        chunks = [(kind, bucket, parts) for (kind, bucket), parts in sorted(self._buffers.items())]
        self._buffers, self._buffered = {}, 0
        return chunks

    def _read_records(self) -> None:
        records, self._records = self._records, []
        self._read(records)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Store everything buffered together with where the input stands."""
        self._read_records()
        self._write(self._drain_buffers(), {**state, "line": self.line})

    def page_done(self, state: dict[str, Any]) -> None:
        """After each upstream page: a checkpoint once the buffers hold about a chunk per
        bucket, else just a sign of life (which also notices a cancel)."""
        self._read_records()
        waiting = self._buffered + len(self._failures) + self._unchanged.total()
        if waiting >= self.chunk_size * self.buckets // 2:
            self.checkpoint(state)
            return
        with self.transaction() as session:
            alive = session.execute(
                text(
                    "UPDATE backfills SET touched_at = clock_timestamp() "
                    "WHERE id = :id AND status = 'receiving' RETURNING 1"
                ),
                {"id": self.backfill_id},
            ).scalar()
        if alive is None:
            raise ReceiveStopped(self.backfill_id)

    def finish(self) -> list[Work]:
        """The input ended: store what is left and start applying; returns what to queue."""
        last, self._records = self._records, []
        if self._oversized:
            last.append(None)
        elif self._partial:
            last.append(self._partial)
        self._partial, self._oversized = b"", False
        self._read(last)
        chunks = self._drain_buffers()
        if chunks or self._failures or self._unchanged:
            self._write(chunks)
        if self._behind is not None:
            self.work += self._behind.wait()
        with self.transaction() as session:
            self.work += finish_receiving(session, self.backfill_id)
        return self.take_work()

    def close(self) -> None:
        """Stop storing (the stores already queued finish): after finish, or on the way out."""
        if self._behind is not None:
            self._behind.close()

    def take_work(self) -> list[Work]:
        """Messages to send: what the stored chunks made runnable."""
        work, self.work = self.work, []
        return work
