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
        """Append one more chunk; False when nothing more will come."""
        if self.eof:
            return False
        try:
            fresh = self._stream.read(self._chunk_bytes)
        except STREAM_ERRORS as exc:
            self.error = f"input stream failed: {type(exc).__name__}: {exc}"
            fresh = b""
        if not fresh:
            self.eof = True
            return False
        self.buf = self.buf + fresh if self.buf else fresh
        return True

    def consume(self, n: int) -> None:
        if n:
            self.buf = self.buf[n:]
            self.base += n
