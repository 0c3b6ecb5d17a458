"""Backfill input as a stream of NDJSON bytes, never held whole in memory: from a path, a file
object (text or binary) or an iterable of dicts (or of ready lines)."""

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import IO, Any, cast

CHUNK_BYTES = 256 * 1024

Source = str | os.PathLike[str] | IO[bytes] | IO[str] | Iterable[dict[str, Any] | str | bytes]


def replayable(source: Source) -> bool:
    """Whether the stream can be made again from the start (for a retry): a path can."""
    return isinstance(source, str | os.PathLike)


def chunks(source: Source, sent: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The source's lines, as NDJSON bytes in pieces of about CHUNK_BYTES; `sent(n)` is
    called as each piece of n bytes is taken."""
    for piece in _pieces(source):
        if sent is not None:
            sent(len(piece))
        yield piece


def _pieces(source: Source) -> Iterator[bytes]:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield from _read(file)
        return
    if isinstance(source, IO | io.IOBase) or hasattr(source, "read"):
        yield from _read(cast(IO[bytes] | IO[str], source))
        return
    yield from _items(source)


def _read(file: IO[bytes] | IO[str]) -> Iterator[bytes]:
    while piece := file.read(CHUNK_BYTES):
        yield piece.encode() if isinstance(piece, str) else piece


def _items(items: Iterable[dict[str, Any] | str | bytes]) -> Iterator[bytes]:
    buffer = bytearray()
    for item in items:
        if isinstance(item, dict):
            line = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
        else:
            line = (item.encode() if isinstance(item, str) else item).rstrip(b"\r\n")
        buffer += line + b"\n"
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def achunks(
    source: Source, sent: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """`chunks`, each piece made in a thread (reading a file blocks)."""
    pieces = chunks(source, sent)
    done = object()
    while (piece := await asyncio.to_thread(next, pieces, done)) is not done:
        yield piece  # type: ignore[misc]
