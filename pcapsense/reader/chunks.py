"""Chunked reading with carry-over, shared by the pcap and pcapng record walkers."""

from __future__ import annotations

import zlib
from typing import BinaryIO

from pcapsense.reader.source import DecompressionCapExceeded

# Errors a decompressing or failing stream raises on a damaged or cut input; they become capture faults.
STREAM_ERRORS = (OSError, EOFError, zlib.error, DecompressionCapExceeded, ValueError)


class ChunkStream:
    """A growing window over the stream: `buf` holds unconsumed bytes, `base` is the offset of `buf[0]`.

    Offsets are absolute positions in the (decompressed) capture, so fault messages point at the right byte.
    A failure of the underlying stream (gzip CRC error, cut archive, decompression cap) is kept in `error`
    and behaves like end of stream; the walker reports it as a fault at the current offset.
    """

    def __init__(self, stream: BinaryIO, chunk_bytes: int, initial: bytes) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self.buf = initial
        self.base = 0
        self.eof = False
        self.error: str | None = None

    def fill(self) -> bool:
        """Append one more chunk; False when nothing more will come.

        The chunk is read straight into a new buffer behind the carried-over tail (`readinto`), so each byte
        is copied once from the kernel instead of once more for concatenation."""
        if self.eof:
            return False
        tail = len(self.buf)
        fresh = bytearray(tail + self._chunk_bytes)
        fresh[:tail] = self.buf
        try:
            got = self._read_into(memoryview(fresh)[tail:])
        except STREAM_ERRORS as exc:
            self.error = f"input stream failed: {type(exc).__name__}: {exc}"
            got = 0
        if not got:
            self.eof = True
            return False
        del fresh[tail + got :]
        self.buf = fresh
        return True

    def _read_into(self, view: memoryview) -> int:
        """Fill as much of `view` as one read gives (a pipe may give less; the next fill continues)."""
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
