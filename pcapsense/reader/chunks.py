"""Chunked reading with carry-over, shared by the pcap and pcapng record walkers."""

from __future__ import annotations

import lzma
import zlib
from typing import BinaryIO

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
        view = memoryview(fresh)[tail:]
        got = 0
        try:
            while got < len(view):
                n = self._read_into(view[got : got + PIECE_BYTES])
                if not n:
                    self.eof = True
                    break
                got += n
        except STREAM_ERRORS as exc:
            self.error = f"input stream failed: {type(exc).__name__}: {exc}"
            self.eof = True  # what was read before the failure is kept; the walker reports the fault after it
        view.release()
        if not got:
            self.eof = True
            return False
        del fresh[tail + got :]
        self.buf = fresh
        return True

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
