"""Receiving an NDJSON upload: bytes in, each full buffer stored as a chunk at once.

Stores run on a thread of their own behind the validation (`StoreBehind`), each in a short
transaction that also adds to the run's counts, so progress shows while the upload goes on.
"""

from identity.access import Actor
from identity.backfill.flow import EARLY_KINDS, Work
from identity.backfill.known import Transaction
from identity.backfill.receive import Receiver
from identity.backfill.writer import Store, StoreBehind
from identity.settings import Settings


class UploadReceiver(Receiver):
    """Turns an upload's stream of bytes into stored chunks."""

    def __init__(
        self,
        backfill_id: str,
        snapshot_version: int,
        settings: Settings,
        transaction: Transaction,
        *,
        known_lines: Actor | None = None,
    ) -> None:
        super().__init__(
            backfill_id, snapshot_version, settings, transaction, known_lines=known_lines
        )
        self._partial = b""
        self._oversized = False
        self._behind = StoreBehind()

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

    def finish(self) -> list[Work]:
        """The input ended: store what is left and start applying; returns what to queue."""
        last: list[bytes | None] = []
        if self._oversized:
            last.append(None)
        elif self._partial:
            last.append(self._partial)
        self._partial, self._oversized = b"", False
        self._read(last)
        self._store_rest()
        self.work += self._behind.wait()
        return self._finish_receiving()

    def close(self) -> None:
        """Stop storing (the stores already queued finish): after finish, or on the way out."""
        self._behind.close()

    def _buffer_full(self, kind: str, bucket: int) -> None:
        self._write([(kind, bucket, self._take_buffer(kind, bucket))])

    def _tally_full(self) -> None:
        self._write([])  # progress

    def _reached_agents(self) -> None:
        """Store every user and node type buffer now, so that the agent chunks behind them may
        be applied while the rest arrives."""
        early = [(k, b) for k, b in self._buffers if k in EARLY_KINDS]
        self._write([(k, b, self._take_buffer(k, b)) for k, b in sorted(early)])

    def _submit(self, write: Store) -> list[Work]:
        return self._behind.submit(write)
