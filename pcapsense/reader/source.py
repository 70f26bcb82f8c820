"""Byte sources: a file, stdin, or a compressed stream, recognised by magic rather than by name.

Decompression is capped (a gzip bomb must not turn a 1 MB file into an endless analysis); hitting the cap is a
capture fault like any other: what was read before it is kept and the result is marked partial.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pcapsense.errors import NotACaptureError

DEFAULT_MAX_DECOMPRESSED = 64 * 2**30  # 64 GiB: far above any real capture, far below "forever"

# magic prefix -> (compression name, opener over a binary stream)
COMPRESSIONS: dict[bytes, tuple[str, Callable[[BinaryIO], BinaryIO]]] = {
    b"\x1f\x8b": ("gzip", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    b"BZh": ("bzip2", lambda raw: bz2.BZ2File(raw, mode="rb")),
    b"\xfd7zXZ\x00": ("xz", lambda raw: lzma.LZMAFile(raw, mode="rb")),  # noqa: SIM115 - the Source owns it
}


class DecompressionCapExceeded(Exception):
    """The decompressed stream grew past the configured cap."""


class _Prefixed:
    """A read-only stream that first replays bytes already sniffed from the underlying stream."""

    def __init__(self, prefix: bytes, raw: BinaryIO) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n < 0:
                head, self._prefix = self._prefix, b""
                return head + self._raw.read()
            head, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(head) == n:
                return head
            return head + self._raw.read(n - len(head))
        return self._raw.read(n)

    def readinto(self, view: memoryview) -> int:
        if self._prefix:
            n = min(len(self._prefix), len(view))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._raw.readinto(view)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


class _Capped:
    """Counts bytes delivered by a decompressor and stops at the cap."""

    def __init__(self, stream: BinaryIO, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self.delivered = 0

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self._count(len(data))
        return data

    def readinto(self, view: memoryview) -> int:
        """One decompressor step (`read1`): when the archive turns out damaged, the step that fails has
        returned nothing yet, so every byte decompressed before the damage reaches the walker."""
        data = self._stream.read1(len(view))
        view[: len(data)] = data
        self._count(len(data))
        return len(data)

    def _count(self, got: int) -> None:
        self.delivered += got
        if self.delivered > self._cap:
            raise DecompressionCapExceeded(f"decompressed size exceeds the cap of {self._cap} bytes")

    def close(self) -> None:
        self._stream.close()


@dataclass
class Source:
    """An open capture byte stream and what we know about where it came from."""

    name: str  # what the analyst typed ("-" is shown as "<stdin>")
    stream: BinaryIO
    compression: str | None
    size: int | None  # size on disk when known (for progress), None for pipes
    is_pipe: bool
    underlying: BinaryIO | None = None  # the file under a decompressor (which does not close what it wraps)

    @property
    def mappable(self) -> bool:
        """A regular file opened by path and not compressed: its bytes are the capture's, at the same offsets."""
        return self.size is not None and self.compression is None

    def close(self) -> None:
        self.stream.close()
        if self.underlying is not None:
            self.underlying.close()


def _read_exact_prefix(raw: BinaryIO, n: int) -> bytes:
    """Read up to n bytes, looping because a pipe may deliver fewer bytes than asked."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = raw.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def open_source(path: str, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Source:
    """Open `path` ("-" for stdin), transparently decompressing gzip/bzip2/xz recognised by magic."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        name, size, is_pipe = "<stdin>", None, True
    else:
        name = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise NotACaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode):
            raise NotACaptureError(f"{path}: not a regular file")
        try:
            raw = open(path, "rb")  # noqa: SIM115 - ownership passes to the Source
        except OSError as exc:
            raise NotACaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
        size, is_pipe = (st.st_size if stat.S_ISREG(st.st_mode) else None), stat.S_ISFIFO(st.st_mode)
    head = _read_exact_prefix(raw, 6)
    stream: BinaryIO = _Prefixed(head, raw)  # type: ignore[assignment]
    for magic, (compression, opener) in COMPRESSIONS.items():
        if head.startswith(magic):
            capped = _Capped(opener(stream), max_decompressed)
            return Source(name, capped, compression, size, is_pipe, underlying=stream)  # type: ignore[arg-type]
    return Source(name, stream, None, size, is_pipe)
