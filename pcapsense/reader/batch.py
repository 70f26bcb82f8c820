"""What a reader hands to the decoder: a chunk of bytes plus columnar record metadata."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Interface:
    """A capture interface. Classic pcap has exactly one; pcapng declares one per IDB, per section."""

    index: int
    linktype: int
    snaplen: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class CaptureFault:
    """A framing fault: reading stopped here, everything before it was analysed."""

    record: int  # 1-based number of the record (packet or block) that is bad
    offset: int  # byte offset of that record in the (decompressed) capture stream
    message: str

    def describe(self, name: str) -> str:
        return f"{name}: record #{self.record} at byte offset {self.offset}: {self.message}"


@dataclass(slots=True)
class RawBatch:
    """Records of one read chunk, as columns. `data` holds the packet bytes; `offset` points into it.

    Columns are parallel numpy arrays, one row per packet, in file order. `iface` indexes the reader's global
    interface list (pcapng interface ids are per section; the reader renumbers them globally).
    """

    data: np.ndarray  # uint8 view of the chunk
    offset: np.ndarray  # int64: start of each packet's bytes in `data`
    caplen: np.ndarray  # int64: bytes captured
    wirelen: np.ndarray  # int64: bytes on the wire
    ts_ns: np.ndarray  # int64: nanoseconds since the epoch
    frame: np.ndarray  # int64: Wireshark frame number (1-based, file order)
    iface: np.ndarray  # int64: global interface index

    def __len__(self) -> int:
        return len(self.offset)

    def packet_bytes(self, row: int) -> bytes:
        start = int(self.offset[row])
        return self.data[start : start + int(self.caplen[row])].tobytes()
