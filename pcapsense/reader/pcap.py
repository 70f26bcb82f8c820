"""Classic libpcap files: microsecond/nanosecond magic, either byte order, Kuznetsov's modified variant.

The record walk is the only per-packet Python loop in the hot path: it reads one caplen per record and nothing
else; the checks and everything else are done with numpy afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pcapsense.errors import UnsupportedCaptureError
from pcapsense.reader.batch import CaptureFault, Interface, RawBatch
from pcapsense.reader.limits import MAX_CAPLEN
from pcapsense.reader.walker import NATIVE_ORDER, Walker

# magic as read little-endian -> (byte order, fraction units per second, record header size)
PCAP_MAGICS: dict[int, tuple[str, int, int]] = {
    0xA1B2C3D4: ("<", 1_000_000, 16),
    0xA1B23C4D: ("<", 1_000_000_000, 16),
    0xA1B2CD34: ("<", 1_000_000, 24),  # Kuznetsov "modified" pcap: 8 extra bytes per record header
    0xD4C3B2A1: (">", 1_000_000, 16),
    0x4D3CB2A1: (">", 1_000_000_000, 16),
    0x34CDB2A1: (">", 1_000_000, 24),
}
FILE_HEADER = 24
RESERVED_BITS = 0x03FF0000  # pcap-linktype(7): bits 16-25 must be zero; bits 26-28 carry the FCS length


@dataclass
class PcapReader(Walker):
    """Walks the records of a classic pcap stream."""

    def __post_init__(self) -> None:
        header = self.chunks.buf[:FILE_HEADER]
        magic = int.from_bytes(header[:4], "little")
        self._order, self._units, self._rec_size = PCAP_MAGICS[magic]
        major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(self._order + "HHiIII", header, 4)
        if major != 2:
            raise UnsupportedCaptureError(f"pcap major version {major}.{minor} is not supported (expected 2.x)")
        if network & RESERVED_BITS:
            self.warnings.append(f"link-type field 0x{network:08x} has reserved bits set; using its low 16 bits")
        linktype = network & 0xFFFF
        self.format = "pcap-nsec" if self._units == 1_000_000_000 else "pcap"
        if self._rec_size == 24:
            self.format = "pcap-modified"
        self.snaplen = snaplen
        self.interfaces.append(Interface(0, linktype, snaplen))
        self.chunks.consume(FILE_HEADER)

    def batches(self) -> Iterator[RawBatch]:
        while True:
            walk = _RecordWalk(self._order, self._rec_size)
            more = self.chunks.fill(walk.advance)
            batch, off = self._take(self.chunks.buf, walk)
            if batch is not None:
                yield batch
            if self.fault is not None:
                return
            self.chunks.consume(off)
            if not more:
                self._end_of_stream()
                return

    def _take(self, buf: memoryview, walk: _RecordWalk) -> tuple[RawBatch | None, int]:
        """The batch of intact records the walk found, and the offset up to which the chunk is used up.

        The walk checked nothing, so the checks happen here, vectorised, in the order the records come: a
        caplen above the maximum is a fault; a record whose data is not all in `buf` yet (only the last walked
        one can be: every other one is followed by a header) waits for the next chunk."""
        hdr_pos, fields = walk.records()
        if not len(hdr_pos):
            return None, 0
        caplen = fields[2]
        nxt = hdr_pos + self._rec_size + caplen
        too_long = np.flatnonzero(caplen > MAX_CAPLEN)
        if len(too_long):
            n = int(too_long[0])
            self._set_fault(n, int(hdr_pos[n]), f"caplen {int(caplen[n])} exceeds maximum {MAX_CAPLEN}")
        else:
            n = len(hdr_pos) - (int(nxt[-1]) > len(buf))
        off = int(nxt[n - 1]) if n else 0
        return self._to_batch(np.frombuffer(buf, dtype=np.uint8), hdr_pos[:n], fields[:, :n]), off

    def _to_batch(self, data: np.ndarray, hdr_pos: np.ndarray, fields: np.ndarray) -> RawBatch | None:
        sec, frac, caplen, wirelen = fields
        bad = np.flatnonzero(frac >= self._units)
        if len(bad):
            # a fraction of a second >= 1 s is impossible: the walk has desynchronised on a damaged caplen
            first = int(bad[0])
            self._set_fault(
                first, int(hdr_pos[first]), f"timestamp fraction {int(frac[first])} out of range (desynchronised)"
            )
            sec, frac, caplen, wirelen, hdr_pos = (a[:first] for a in (sec, frac, caplen, wirelen, hdr_pos))
        n = len(hdr_pos)
        if not n:
            return None
        self.count("caplen_above_snaplen", int(np.count_nonzero(caplen > self.snaplen)) if self.snaplen else 0)
        self.count("caplen_above_wirelen", int(np.count_nonzero(caplen > wirelen)))
        self.count("truncated_by_snaplen", int(np.count_nonzero(caplen < wirelen)))
        ts_ns = sec * 1_000_000_000 + frac * (1_000_000_000 // self._units)
        frame = np.arange(self.records + 1, self.records + n + 1, dtype=np.int64)
        self.records += n
        return RawBatch(
            data=data,
            offset=hdr_pos + self._rec_size,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts_ns,
            frame=frame,
            iface=np.zeros(n, dtype=np.int64),
        )

    def _set_fault(self, index_in_chunk: int, off_in_chunk: int, message: str) -> None:
        self.fault = CaptureFault(self.records + index_in_chunk + 1, self.chunks.base + off_in_chunk, message)

    def _end_of_stream(self) -> None:
        left = len(self.chunks.buf)
        if self.chunks.error:
            self._set_fault(0, 0, self.chunks.error)
        elif left:
            self._set_fault(0, 0, self._truncation_message(left))

    def _truncation_message(self, left: int) -> str:
        if left < self._rec_size:
            return f"truncated record header: {left} of {self._rec_size} bytes"
        caplen = struct.unpack_from(self._order + "I", self.chunks.buf, 8)[0]
        return f"truncated record: {left - self._rec_size} of {caplen} bytes of packet data"


class _RecordWalk:
    """The record walk over one chunk, advanced each time a piece of it has been read.

    Walking a piece right after it arrives finds its record headers still in the CPU cache; walking the whole
    16 MiB chunk afterwards costs a cache miss per record, more than the walk itself. For the same reason the
    headers of the records found are copied out (vectorised) piece by piece.
    """

    def __init__(self, order: str, rec_size: int) -> None:
        self._field = np.dtype(order + "u4")
        self._rec_size = rec_size
        self._walk = _walk_native if order == NATIVE_ORDER else _walk_swapped
        self._next = 8  # position of the caplen field (bytes 8-11 of a header) of the first record not walked
        self._hdr_pos: list[np.ndarray] = []  # per piece: header offsets of the records found in it
        self._headers: list[np.ndarray] = []  # per piece: their first 16 bytes, as 4 uint32 fields

    def advance(self, buf: memoryview) -> None:
        """Walk on through `buf` (the chunk as read so far) and copy out the headers found."""
        # a caplen field is readable exactly when its whole record header is in `buf`
        fields = buf[: max(len(buf) - (self._rec_size - 12), 0)]
        found: list[int] = []
        self._next = self._walk(fields, self._next, found, self._rec_size)
        if found:
            hdr_pos = np.asarray(found, dtype=np.int64) - 8
            # the 16 bytes at every byte offset, as one item each (numpy gathers items faster than rows)
            at_every_byte = np.ndarray((len(buf) - 15,), np.dtype("V16"), buffer=buf, strides=(1,))
            self._hdr_pos.append(hdr_pos)
            self._headers.append(at_every_byte[hdr_pos].view(self._field).reshape(-1, 4))

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """Header offsets and header fields of every record walked: int64 rows sec, frac, caplen, wirelen (one
        contiguous row per field: faster to compute on than columns of a row per record)."""
        if not self._hdr_pos:
            return np.empty(0, dtype=np.int64), np.empty((4, 0), dtype=np.int64)
        return np.concatenate(self._hdr_pos), np.concatenate(self._headers).T.astype(np.int64, order="C")


def _walk_native(fields: memoryview, pos: int, caplen_pos: list[int], rec_size: int) -> int:
    """Append the caplen positions of consecutive records from `pos` on, in the machine's byte order; return
    the position of the first caplen field that is not in `fields` yet.

    This is the only per-record Python loop of the reader, so it reads one caplen per record and checks
    nothing (an absurd caplen walks on into garbage or past the end; the caller cuts at the first bad record).
    views[s][j] is the uint32 at byte s + 4j, so the field at byte p is views[p & 3][p >> 2]: indexing a cast
    memoryview costs a fraction of a struct call, and the end of the view raises the IndexError that ends
    the walk."""
    views = [fields[s : s + max(len(fields) - s, 0) // 4 * 4].cast("I") for s in range(4)]
    append = caplen_pos.append
    try:
        while True:
            append(pos)
            pos += views[pos & 3][pos >> 2] + rec_size
    except IndexError:
        caplen_pos.pop()
        return pos


def _walk_swapped(fields: memoryview, pos: int, caplen_pos: list[int], rec_size: int) -> int:
    """`_walk_native` for a file in the other byte order (rare), with struct calls."""
    caplen_at = struct.Struct(">I" if NATIVE_ORDER == "<" else "<I").unpack_from
    append = caplen_pos.append
    try:
        while True:
            append(pos)
            pos += caplen_at(fields, pos)[0] + rec_size
    except struct.error:
        caplen_pos.pop()
        return pos
