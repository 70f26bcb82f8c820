"""Chunked reading with carry-over, shared by the pcap and pcapng record walkers.

A regular, uncompressed file is mapped rather than read (MappedChunks): its chunks are views of the page cache,
so no byte of it is copied on the way to the walker, nor (see readahead.py) on the way to the engine.
"""

from __future__ import annotations

import lzma
import mmap
import os
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


class MappedChunks(ChunkStream):
    """A ChunkStream whose chunks are read-only views of mappings of a regular file instead of copies.

    Why: read() copies every byte from the page cache into a fresh buffer, about twice what faulting the same
    pages into a mapping costs, and a batch that views a mapping can reach another process as a file range.

    Each fill maps a window from the page-aligned start of the unconsumed tail to one chunk past its end, so a
    record straddling the previous window's end is seen whole without copying it. The window ends at the file
    size fstat tells at fill time: a file still being written is read as far as it exists, as read() would.
    Batches keep views of a window, so it is never closed: it is unmapped when its last view goes. A file cut
    shorter under a live mapping makes touching the lost pages raise SIGBUS (see readahead.py).
    """

    def __init__(self, stream: BinaryIO, chunk_bytes: int, initial: bytes) -> None:
        super().__init__(stream, chunk_bytes, initial)
        self._fd = stream.fileno()
        self._window_start = 0  # file offset of the mapping `buf` views, once it views one
        _raise_malloc_threshold(chunk_bytes)

    def fill(self, on_piece: Callable[[memoryview], None]) -> bool:
        """Map the unconsumed tail and one more chunk; False when nothing more came.

        `on_piece` is shown growing prefixes of the window, PIECE_BYTES more each time and then the whole, each
        new piece loaded into the CPU cache first: the walker finds it there, as it does behind read()."""
        if self.eof:
            on_piece(self.buf)
            return False
        tail = len(self.buf)
        want = self.base + tail + self._chunk_bytes
        try:
            end = min(want, os.fstat(self._fd).st_size)
            window = map_file(self._fd, self.base, end - self.base) if end > self.base + tail else None
        except (OSError, ValueError) as exc:  # ValueError: the file shrank between fstat and mmap
            self.error = f"input stream failed: {type(exc).__name__}: {exc}"
            window = None
        self.eof = window is None or end < want
        if window is None:
            on_piece(self.buf)
            return False
        for start in range(tail, len(window), PIECE_BYTES):
            stop = min(start + PIECE_BYTES, len(window))
            _load(window[start:stop])
            if stop < len(window):
                on_piece(window[:stop])
        self.buf = window
        self._window_start = self.base - self.base % mmap.ALLOCATIONGRANULARITY
        on_piece(self.buf)
        return True

    def file_size(self) -> int:
        return os.fstat(self._fd).st_size

    def file_range(self, data: np.ndarray) -> tuple[int, int] | None:
        """(file offset, length) of `data` when it is a non-empty contiguous view of the current window, so that
        another process can map the same bytes; None otherwise."""
        window = self.buf.obj
        if not isinstance(window, mmap.mmap) or not data.nbytes or not data.flags.c_contiguous:
            return None
        at = data.ctypes.data - np.frombuffer(window, dtype=np.uint8).ctypes.data
        if at < 0 or at + data.nbytes > len(window):
            return None
        return self._window_start + at, data.nbytes

    def file_bytes(self, offset: int, length: int) -> np.ndarray:
        """File bytes [offset, offset + length) as a read-only array over a mapping of their own: only the pages
        that are touched are faulted in, and the mapping goes with the array."""
        return np.frombuffer(map_file(self._fd, offset, length), dtype=np.uint8)


def _raise_malloc_threshold(size: int) -> None:
    """Allocate and free one block of `size` bytes, untouched, as reading chunks did in passing.

    Why: glibc serves a block above its mmap threshold (128 KiB at first) with fresh pages, and freeing such a
    block raises the threshold, and the heap's trim threshold, to its size. Freed read chunks did that at the
    second chunk, so from then on the decoder's and the engine's temporaries (up to a few MiB each) were recycled
    from the heap; a mapped stream frees no such block, and without this they came as fresh pages, faulted in
    again every batch: on the 2M-packet benchmark, 0.3 s more CPU in the read-ahead child and about 0.1 s in the
    engine. Where malloc works otherwise, it costs one allocation."""
    np.empty(size, dtype=np.uint8)


def _load(piece: memoryview) -> None:
    """Read one byte per cache line of `piece`, in order, so the hardware prefetcher streams it into the CPU cache.

    Why: the walk is a chain of dependent reads (each record header tells where the next one is); over pages that
    nothing has read yet, each would wait for memory, which cost more than this pass at memory bandwidth (read()
    did the same as part of its copy)."""
    np.frombuffer(piece, dtype=np.uint8)[::64].max()


def map_file(fd: int, offset: int, length: int) -> memoryview:
    """A read-only view of file bytes [offset, offset + length) (length > 0), over a new mapping that starts at
    the allocation granularity at or before `offset` (mmap offsets must be multiples of it)."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    return memoryview(mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_READ, offset=start))[offset - start :]


def can_map(fd: int) -> bool:
    """Whether the file can be mapped: an empty file cannot, nor can some (procfs, FUSE direct I/O); they are read."""
    try:
        with mmap.mmap(fd, min(os.fstat(fd).st_size, mmap.ALLOCATIONGRANULARITY), access=mmap.ACCESS_READ):
            return True
    except (OSError, ValueError):
        return False
