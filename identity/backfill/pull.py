"""Receiving an upstream pull: records in, stored together with the pull's cursor.

A pull stores nothing between checkpoints. At a checkpoint it stores every buffer with where the
input stands (stage, cursor, line), durably and before the next page is asked for, so a pull
resumed from its last checkpoint stores nothing twice.
"""

import json
from typing import Any

from sqlalchemy import text

from identity.access import Actor
from identity.backfill.flow import Work
from identity.backfill.known import Transaction
from identity.backfill.receive import Receiver
from identity.backfill.store import ReceiveStopped
from identity.backfill.writer import Store
from identity.settings import Settings

_TOUCH = text(
    "UPDATE backfills SET touched_at = clock_timestamp() "
    "WHERE id = :id AND status = 'receiving' RETURNING 1"
)


class PullReceiver(Receiver):
    """Turns the records of an upstream source's pages into stored chunks."""

    def __init__(
        self,
        backfill_id: str,
        snapshot_version: int,
        settings: Settings,
        transaction: Transaction,
        *,
        first_line: int,
        stored: tuple[int, int],
        known_lines: Actor | None = None,
    ) -> None:
        super().__init__(
            backfill_id,
            snapshot_version,
            settings,
            transaction,
            first_line=first_line,
            stored=stored,
            # Resumed from a checkpoint, the pull has forgotten the lines before it (the keys
            # seen, the slugs moved), which counting lines known keeps in order: it reads them.
            known_lines=known_lines if first_line == 0 else None,
        )
        self._records: list[bytes | None] = []  # read at the next page end

    def add_record(self, record: Any, kind: str) -> None:
        """Take one upstream record of `kind` as if it were the next line (read at the next
        page end, checkpoint or finish)."""
        if isinstance(record, dict) and "type" not in record:
            record = {"type": kind, **record}
        self._records.append(json.dumps(record).encode())

    def page_done(self, state: dict[str, Any]) -> None:
        """After each upstream page: a checkpoint once the buffers hold about a chunk per
        bucket, or half the bytes they may hold, else just a sign of life (which also notices
        a cancel)."""
        self._read_records()
        if (
            self._waiting() >= self.chunk_size * self.buckets // 2
            or self._held >= self.buffer_bytes // 2
        ):
            self.checkpoint(state)
            return
        with self.transaction() as session:
            alive = session.execute(_TOUCH, {"id": self.backfill_id}).scalar()
        if alive is None:
            raise ReceiveStopped(self.backfill_id)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Store everything buffered together with where the input stands."""
        self._read_records()
        self._write(self._drain_buffers(), {**state, "line": self.line})

    def finish(self) -> list[Work]:
        """The source is read to its end: store what is left and start applying; returns what
        to queue."""
        self._read_records()
        self._store_rest()
        return self._finish_receiving()

    def _read_records(self) -> None:
        records, self._records = self._records, []
        self._read(records)

    # A pull stores only at its checkpoints, where it can resume.

    def _buffer_full(self, kind: str, bucket: int) -> None:
        pass

    def _tally_full(self) -> None:
        pass

    def _reached_agents(self) -> None:
        pass  # its users are stored with the next checkpoint

    def _submit(self, write: Store) -> list[Work]:
        return write()  # a checkpoint is stored before the next page is asked for
