"""Chunked reading with carry-over, shared by the pcap and pcapng record walkers."""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from pcapsense.reader.source import DecompressionCapExceeded

# Errors a decompressing or failing stream raises on a damaged or cut input; they become capture faults.
# (bz2 reports damage as OSError, xz as LZMAError, gzip as BadGzipFile/OSError, zlib.error or EOFError.)
STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, DecompressionCapExceeded, ValueError)
PIECE_BYTES = 1 * 2**20  # a chunk is read in pieces, so a stream that fails keeps everything before its failure


class ChunkStream:
    """A growing window over the stream: `buf` holds unconsumed bytes, `base` is the offset of `buf[0]`.

    Offsets are absolute positions in the (decompressed) capture, so fault messages point at the right byte.
    A failure of the underlying stream (gzip CRC error, cut archive, decompression cap) is kept in `error`
    and behaves like end of stream; the walker reports it as a fault at the current offset.

    `buf` is a memoryview, so consuming is a slice of the view rather than a copy of the bytes.
    """

    def __init__(self, stream: BinaryIO, chunk_bytes: int, initial: bytes) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self.buf = memoryview(initial)
        self.base = 0
        self.eof = False
        self.error: str | None = None

    def fill(self, on_piece: Callable[[memoryview], None]) -> bool:
        """Append one more chunk; False when nothing more will come.

        `on_piece` is shown the buffer as read so far after every PIECE_BYTES or more, and once at the end
        (also when nothing came): a walker that follows along finds the bytes still in the CPU cache.

        Every chunk gets a buffer of its own, because the batches already yielded keep views of the previous
        ones. It is allocated uninitialised (zero-filling a fresh 16 MiB per chunk took a quarter of the
        reader's time); only the carried-over tail is copied, and the chunk is read straight behind it."""
        if self.eof:
            on_piece(self.buf)
            return False
        tail = len(self.buf)
        fresh = memoryview(np.empty(tail + self._chunk_bytes, dtype=np.uint8))
        fresh[:tail] = self.buf
        got = self._read_pieces(fresh, tail, on_piece)
        self.buf = fresh[: tail + got]
        on_piece(self.buf)
        return bool(got)

    def _read_pieces(self, fresh: memoryview, start: int, on_piece: Callable[[memoryview], None]) -> int:
        """Fill `fresh` from `start` on, up to end of stream; the number of bytes read."""
        got = shown = 0
        while start + got < len(fresh):
            n = self._read_piece(fresh[start + got : start + got + PIECE_BYTES])
            if not n:
                break
            got += n
            if got - shown >= PIECE_BYTES:
                on_piece(fresh[: start + got])
                shown = got
        return got

    def _read_piece(self, view: memoryview) -> int:
        """One read; 0 at end of stream. A stream failure ends the stream too, and what came before is kept."""
        try:
            n = self._read_into(view)
        except STREAM_ERRORS as exc:
            self.error = f"input stream failed: {type(exc).__name__}: {exc}"
            n = 0  # what was read before the failure is kept; the walker reports the fault after it
        if not n:
            self.eof = True
        return n

    def _read_into(self, view: memoryview) -> int:
        """Fill as much of `view` as one read gives."""
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return readinto(view) or 0
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def consume(self, n: int) -> None:
        if n:
            self.buf = self.buf[n:]
            self.base += n
