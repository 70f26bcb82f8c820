"""Classic libpcap files: microsecond/nanosecond magic, either byte order, Kuznetsov's modified variant.

The record walk is the only per-packet Python loop in the hot path: it reads one caplen per record and checks
it, everything else is gathered with numpy afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pcapsense.errors import UnsupportedCaptureError
from pcapsense.reader.batch import CaptureFault, Interface, RawBatch
from pcapsense.reader.limits import MAX_CAPLEN
from pcapsense.reader.walker import Walker

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
        caplen_at = struct.Struct(self._order + "I").unpack_from
        rec = self._rec_size
        while True:
            more = self.chunks.fill()
            buf = self.chunks.buf
            starts: list[int] = []
            off, end = 0, len(buf)
            while off + rec <= end:
                caplen = caplen_at(buf, off + 8)[0]
                if caplen > MAX_CAPLEN:
                    self._set_fault(len(starts), off, f"caplen {caplen} exceeds maximum {MAX_CAPLEN}")
                    break
                nxt = off + rec + caplen
                if nxt > end:
                    break
                starts.append(off)
                off = nxt
            batch = self._to_batch(buf, starts) if starts else None
            if batch is not None:
                yield batch
            if self.fault is not None:
                return
            self.chunks.consume(off)
            if not more:
                self._end_of_stream()
                return

    def _to_batch(self, buf: bytes, starts: list[int]) -> RawBatch | None:
        data = np.frombuffer(buf, dtype=np.uint8)
        hdr_pos = np.asarray(starts, dtype=np.int64)
        raw_headers = data[hdr_pos[:, None] + np.arange(16)]
        fields = raw_headers.view(np.dtype(self._order + "u4")).astype(np.int64)
        sec, frac, caplen, wirelen = fields[:, 0], fields[:, 1], fields[:, 2], fields[:, 3]
        bad = np.flatnonzero(frac >= self._units)
        if len(bad):
            # a fraction of a second >= 1 s is impossible: the walk has desynchronised on a damaged caplen
            first = int(bad[0])
            self._set_fault(
                first, int(hdr_pos[first]), f"timestamp fraction {int(frac[first])} out of range (desynchronised)"
            )
            sec, frac, caplen, wirelen, hdr_pos = (a[:first] for a in (sec, frac, caplen, wirelen, hdr_pos))
            if not first:
                return None
        n = len(hdr_pos)
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
