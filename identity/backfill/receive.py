"""Receiving a backfill's input: lines in, chunks out, memory bounded by the open buffers.

Lines are numbered and read one by one: those an earlier run applied unchanged are only counted,
the others validated, and valid items go to a buffer per (kind, bucket). What an upload and an
upstream pull share is here; they differ in when they store. An upload (`upload.py`) stores a full
buffer as a chunk at once, on a thread behind its validation, so progress is visible while it goes
on. A pull (`pull.py`) stores every buffer together with its cursor at checkpoints, so a pull
resumed from its cursor stores nothing twice.
"""

import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from dataclasses import replace
from typing import Any, NamedTuple

from identity.access import Actor
from identity.backfill.flow import Work, complete, finish_receiving
from identity.backfill.items import Failure, ItemParser, Parsed, bucket_of
from identity.backfill.known import LANES, KnownLines, Lookup, Transaction, asking
from identity.backfill.store import Batch, Chunk, InputLost, InputOrder, store
from identity.backfill.writer import Store
from identity.errors import ValidationFailed
from identity.settings import Settings

BOM = b"\xef\xbb\xbf"
# Lines known unchanged wait for the next store this long at most (while lines come): a store
# costs more than reading a piece of known lines, and progress needs no finer grain.
TALLY_SECONDS = 0.5
# Lines looked up in one statement. A piece of an upload (512 KiB, some 3,000 lines, growing to
# 4 MiB) makes a few parts, and the next parts are looked up while one is read.
LOOKUP_LINES = 1_000


class _Part(NamedTuple):
    """Up to LOOKUP_LINES lines of a piece, read in turn: their numbers in the input, their
    bytes, and the lookup of those that name their key plainly."""

    numbers: list[int]
    lines: list[bytes]
    lookup: Lookup


class Receiver(ABC):
    """Turns lines into stored chunks; subclasses say when to store and how."""

    def __init__(
        self,
        backfill_id: str,
        snapshot_version: int,
        settings: Settings,
        transaction: Transaction,
        *,
        first_line: int = 0,
        stored: tuple[int, int] = (0, 0),
        known_lines: Actor | None = None,
    ) -> None:
        """`known_lines`: the run's writer, if lines it applied before may be counted unchanged
        without reading them (known.py); None reads every line."""
        self.backfill_id = backfill_id
        self.parser = ItemParser(
            snapshot_version, allow_private_webhooks=settings.allow_private_webhooks
        )
        self.chunk_size = settings.backfill_chunk_size
        self.buckets = settings.backfill_buckets
        self.max_line = settings.backfill_max_line_bytes
        self.transaction = transaction
        self.line = first_line
        self.stored = stored  # chunks and received lines counted by the stores so far
        self.work: list[Work] = []
        self.chunk_bytes = settings.backfill_chunk_bytes
        self.buffer_bytes = settings.backfill_buffer_bytes
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._buffered = 0
        self._held = 0  # bytes in all buffers: what _sizes totals, kept as lines come
        # Bytes held, by buffer and in all: items range from tens of bytes to a megabyte, so a
        # count of items alone would not bound memory.
        self._sizes: Counter[tuple[str, int]] = Counter()
        self._failures: list[Failure] = []
        self._order = InputOrder()
        # Lines an earlier backfill applied, recognised by their digest (known.py).
        self.known = (
            KnownLines(
                snapshot_version,
                writer=known_lines,
                allow_private_webhooks=settings.allow_private_webhooks,
            )
            if known_lines is not None
            else None
        )
        self._unchanged: Counter[str] = Counter()  # lines known unchanged, by kind
        self._stored_at = 0.0  # time.monotonic() of the last store

    def take_work(self) -> list[Work]:
        """Messages to send: what the stored chunks made runnable."""
        work, self.work = self.work, []
        return work

    # --- when and how to store, the receivers' own ------------------------------------------

    @abstractmethod
    def _buffer_full(self, kind: str, bucket: int) -> None:
        """The buffer of (kind, bucket) holds a chunk."""

    @abstractmethod
    def _tally_full(self) -> None:
        """The failed lines, or the lines known unchanged, waiting to be counted make a chunk."""

    @abstractmethod
    def _reached_agents(self) -> None:
        """The first valid agent line has come."""

    @abstractmethod
    def _submit(self, write: Store) -> list[Work]:
        """Run a store transaction; returns the work of the stores finished so far."""

    # --- reading ------------------------------------------------------------------------------

    def _read(self, entries: list[bytes | None]) -> None:
        """Number the lines (None: an overlong line), then read them in order: those known
        unchanged are counted, the others validated and buffered."""
        numbers, lines = self._number(entries)
        if self.known is None:
            for line, raw in zip(numbers, lines, strict=True):
                self._take(line, raw)
            return
        if not lines:
            return
        # In parts, the lookups of the next parts (up to LANES) on their way while one is read.
        known, flight = self.known, deque[_Part]()
        with asking(self.transaction, known) as asker:
            for start in range(0, len(lines), LOOKUP_LINES):
                end = start + LOOKUP_LINES
                part = _Part(numbers[start:end], lines[start:end], known.ask(lines[start:end]))
                before = flight.popleft() if len(flight) == LANES else None
                if before is not None:
                    asker.receive(before.lookup)  # frees its lane for this part
                asker.send(part.lookup)
                flight.append(part)
                if before is not None:
                    self._read_known(before)
            for part in flight:
                asker.receive(part.lookup)
        for before in flight:
            self._read_known(before)
        if (
            self._unchanged.total() >= self.chunk_size
            and time.monotonic() - self._stored_at >= TALLY_SECONDS
        ):
            self._tally_full()

    def _read_known(self, part: _Part) -> None:
        """Count the part's known lines, validate and buffer the others, in order."""
        known, (numbers, lines, lookup) = self.known, part
        assert known is not None
        known.settle(lookup)
        index, end = 0, len(lines)
        while (index := known.take_run(lookup, index, self._unchanged)) < end:
            parsed = self._take(numbers[index], lines[index])
            if parsed is not None:
                known.read(parsed.kind, parsed.key, parsed.slug, lookup, index)
            index += 1

    def _number(self, entries: list[bytes | None]) -> tuple[list[int], list[bytes]]:
        """The lines' numbers and texts, blank and overlong lines left out (the latter failed).
        Two lists rather than a pair per line: every line of an upload passes here."""
        numbers: list[int] = []
        lines: list[bytes] = []
        line, max_line = self.line, self.max_line
        for raw in entries:
            line += 1
            if raw is None:
                self.line = line
                self._too_long()
                continue
            raw = raw.strip()
            if not raw:
                continue
            if line == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :].strip()
            if len(raw) > max_line:
                self.line = line
                self._too_long()
                continue
            numbers.append(line)
            lines.append(raw)
        self.line = line
        return numbers, lines

    def _too_long(self) -> None:
        """Line `self.line` is longer than allowed."""
        error = ValidationFailed(f"the line is longer than {self.max_line} bytes")
        self._fail(Failure(self.line, None, None, error.envelope()))

    def _take(self, line: int, raw: bytes) -> Parsed | None:
        """Validate a line and buffer what it stores; None if it failed."""
        parsed = self.parser.parse(line, raw)
        if isinstance(parsed, Failure):
            self._fail(parsed)
            return None
        if parsed.kind == "agent" and not self._order.agents:
            # Once every user line before it is stored (and applied), agent chunks may be
            # applied while the rest arrives.
            self._order.agents = True
            self._reached_agents()
        elif parsed.kind == "user" and self._order.agents:
            self._order.late_users = True
        slot = (parsed.kind, bucket_of(parsed.key, self.buckets))
        buffer = self._buffers.get(slot)
        if buffer is None:
            buffer = self._buffers[slot] = []
        buffer.append(parsed.stored)
        self._buffered += 1
        size = len(parsed.stored)
        self._held += size
        self._sizes[slot] += size
        if len(buffer) >= self.chunk_size or self._sizes[slot] >= self.chunk_bytes:
            self._buffer_full(*slot)
        elif self._held >= self.buffer_bytes:
            self._buffer_full(*max(self._sizes, key=self._sizes.__getitem__))
        return parsed

    def _fail(self, failure: Failure) -> None:
        self._failures.append(failure)
        if len(self._failures) >= self.chunk_size:
            self._tally_full()

    def _waiting(self) -> int:
        """Lines read and not stored yet."""
        return self._buffered + len(self._failures) + self._unchanged.total()

    # --- storing ------------------------------------------------------------------------------

    def _take_buffer(self, kind: str, bucket: int) -> list[bytes]:
        buffer = self._buffers.pop((kind, bucket))
        self._buffered -= len(buffer)
        self._held -= self._sizes.pop((kind, bucket))
        return buffer

    def _drain_buffers(self) -> list[Chunk]:
        chunks = [(kind, bucket, parts) for (kind, bucket), parts in sorted(self._buffers.items())]
        self._buffers, self._buffered, self._held = {}, 0, 0
        self._sizes.clear()
        return chunks

    def _write(self, chunks: list[Chunk], state: dict[str, Any] | None = None) -> None:
        """Store the chunks with the failed and unchanged lines read so far (and `state`)."""
        batch = Batch(chunks, self._failures, self._unchanged, replace(self._order), state)
        self._stored_at = time.monotonic()
        self._failures, self._unchanged = [], Counter()
        before = self.stored
        self.stored = (before[0] + len(chunks), before[1] + batch.lines)

        def write() -> list[Work]:
            try:
                with self.transaction() as session:
                    return store(session, self.backfill_id, batch, before=before)
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

        self.work += self._submit(write)

    def _store_rest(self) -> None:
        """The input ended: store every buffer and whatever lines are not counted yet."""
        chunks = self._drain_buffers()
        if chunks or self._failures or self._unchanged:
            self._write(chunks)

    def _finish_receiving(self) -> list[Work]:
        """Everything is stored: start applying; returns what to queue."""
        with self.transaction() as session:
            self.work += finish_receiving(session, self.backfill_id)
        return self.take_work()
