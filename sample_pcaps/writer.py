"""Capture-file writers (classic pcap and pcapng) built on `struct`.

dpkt's writers only emit the common case (one byte order, one interface, microseconds). The reader under
test has to cope with every container variant a real capture tool produces, so these writers expose them
all: pcap in both byte orders with microsecond or nanosecond magic and any snaplen, and pcapng with several
sections of either byte order, several interfaces with their own link type and `if_tsresol`, EPB, SPB,
the obsolete PB, custom blocks and block types no reader knows.

Timestamps are integer nanoseconds everywhere. A writer refuses a timestamp its resolution cannot store
exactly, so the manifest (computed from the same integers) is exact by construction.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000
DEFAULT_SNAPLEN = 262_144

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BT_CUSTOM = 0x00000BAD
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_END = 0
OPT_COMMENT = 1
OPT_SHB_HARDWARE = 2
OPT_SHB_OS = 3
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_EPB_FLAGS = 2

TSRESOL_USEC = 6
TSRESOL_NSEC = 9


@dataclass(frozen=True)
class Record:
    """One packet as it was on the wire; writers cut `data` to the snaplen and keep `len(data)` as the
    original length."""

    ts_ns: int
    data: bytes
    iface: int = 0


@dataclass(frozen=True)
class Summary:
    """What the manifest says about one file; computed from the records, never by re-reading the output."""

    format: str
    link_types: tuple[int, ...]
    packets: int
    first_ts_ns: int
    last_ts_ns: int
    interfaces: int


def ts_string(ts_ns: int) -> str:
    """Render integer nanoseconds as the manifest's exact `seconds.nnnnnnnnn` string."""
    return f"{ts_ns // NS_PER_S}.{ts_ns % NS_PER_S:09d}"


def _units(ts_ns: int, units_per_second: int) -> int:
    """Convert to timestamp units, failing loudly when the resolution would silently round."""
    scaled = ts_ns * units_per_second
    if scaled % NS_PER_S:
        raise ValueError(f"timestamp {ts_string(ts_ns)} is not representable at {units_per_second} units/s")
    return scaled // NS_PER_S


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _bounds(records: list[Record]) -> tuple[int, int]:
    """Timestamps of the first and last timestamped record in file order (what a reader sees first/last)."""
    return records[0].ts_ns, records[-1].ts_ns


# --------------------------------------------------------------------------------------------- classic pcap


@dataclass
class PcapFile:
    """A classic pcap file: one link type, one byte order, one timestamp resolution, one snaplen."""

    linktype: int
    records: list[Record]
    nsec: bool = False
    big_endian: bool = False
    snaplen: int = DEFAULT_SNAPLEN

    def to_bytes(self) -> bytes:
        order = ">" if self.big_endian else "<"
        magic = PCAP_MAGIC_NSEC if self.nsec else PCAP_MAGIC_USEC
        units = NS_PER_S if self.nsec else 1_000_000
        out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, self.snaplen, self.linktype)]
        for rec in self.records:
            ticks = _units(rec.ts_ns, units)
            data = rec.data[: self.snaplen]
            sec, frac = divmod(ticks, units)
            out.append(struct.pack(order + "IIII", sec, frac, len(data), len(rec.data)))
            out.append(data)
        return b"".join(out)

    def summary(self) -> Summary:
        first, last = _bounds(self.records)
        return Summary("pcap", (self.linktype,), len(self.records), first, last, 1)


# --------------------------------------------------------------------------------------------------- pcapng


@dataclass(frozen=True)
class Interface:
    """An IDB. `tsresol` is the raw `if_tsresol` byte (0x80|n means 2^-n); None leaves the option out."""

    linktype: int
    name: str
    snaplen: int = DEFAULT_SNAPLEN
    tsresol: int | None = None

    @property
    def units_per_second(self) -> int:
        resol = TSRESOL_USEC if self.tsresol is None else self.tsresol
        return 1 << (resol & 0x7F) if resol & 0x80 else 10**resol


@dataclass(frozen=True)
class Epb:
    """Enhanced Packet Block; `flags` becomes an `epb_flags` option (bits 0-1 = inbound/outbound)."""

    record: Record
    flags: int | None = None


@dataclass(frozen=True)
class Spb:
    """Simple Packet Block: no interface id (always interface 0) and no timestamp."""

    data: bytes


@dataclass(frozen=True)
class Pb:
    """Obsolete Packet Block (type 2), still written by old tools; carries a 16-bit interface id."""

    record: Record


@dataclass(frozen=True)
class CustomBlock:
    """Custom block 0x00000BAD (copyable): a Private Enterprise Number then opaque bytes."""

    pen: int
    payload: bytes


@dataclass(frozen=True)
class UnknownBlock:
    """A block type no reader knows: a reader must skip it by its length and carry on."""

    block_type: int
    body: bytes


Block = Interface | Epb | Spb | Pb | CustomBlock | UnknownBlock


@dataclass
class Section:
    """One SHB and the blocks after it, in file order; IDBs may appear after packets of other interfaces."""

    blocks: list[Block]
    big_endian: bool = False
    write_length: bool = False
    options: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def interfaces(self) -> list[Interface]:
        return [b for b in self.blocks if isinstance(b, Interface)]


def _options(order: str, options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    parts = [struct.pack(order + "HH", code, len(value)) + _pad4(value) for code, value in options]
    return b"".join(parts) + struct.pack(order + "HH", OPT_END, 0)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = len(body) + 12
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def _timestamp(order: str, ts_ns: int, iface: Interface) -> bytes:
    units = _units(ts_ns, iface.units_per_second)
    return struct.pack(order + "II", units >> 32, units & 0xFFFFFFFF)


def _captured(data: bytes, iface: Interface) -> bytes:
    return data[: iface.snaplen] if iface.snaplen else data


class _SectionWriter:
    """Serialises one section; keeps the interface table so packet blocks can be checked against it."""

    def __init__(self, section: Section) -> None:
        self.section = section
        self.order = ">" if section.big_endian else "<"
        self.ifaces: list[Interface] = []

    def iface(self, index: int) -> Interface:
        if index >= len(self.ifaces):
            raise ValueError(f"packet on interface {index} before its IDB")
        return self.ifaces[index]

    def block(self, blk: Block) -> bytes:
        o = self.order
        if isinstance(blk, Interface):
            self.ifaces.append(blk)
            opts = [(OPT_IF_NAME, blk.name.encode())]
            if blk.tsresol is not None:
                opts.append((OPT_IF_TSRESOL, bytes([blk.tsresol])))
            body = struct.pack(o + "HHI", blk.linktype, 0, blk.snaplen) + _options(o, opts)
            return _block(o, BT_IDB, body)
        if isinstance(blk, Epb):
            rec, iface = blk.record, self.iface(blk.record.iface)
            data = _captured(rec.data, iface)
            opts = [] if blk.flags is None else [(OPT_EPB_FLAGS, struct.pack(o + "I", blk.flags))]
            head = struct.pack(o + "I", rec.iface) + _timestamp(o, rec.ts_ns, iface)
            body = head + struct.pack(o + "II", len(data), len(rec.data)) + _pad4(data) + _options(o, opts)
            return _block(o, BT_EPB, body)
        if isinstance(blk, Spb):
            data = _captured(blk.data, self.iface(0))
            return _block(o, BT_SPB, struct.pack(o + "I", len(blk.data)) + data)
        if isinstance(blk, Pb):
            rec, iface = blk.record, self.iface(blk.record.iface)
            data = _captured(rec.data, iface)
            head = struct.pack(o + "HH", rec.iface, 0) + _timestamp(o, rec.ts_ns, iface)
            return _block(o, BT_PB, head + struct.pack(o + "II", len(data), len(rec.data)) + data)
        if isinstance(blk, CustomBlock):
            return _block(o, BT_CUSTOM, struct.pack(o + "I", blk.pen) + blk.payload)
        return _block(o, blk.block_type, blk.body)

    def to_bytes(self) -> bytes:
        body = b"".join(self.block(b) for b in self.section.blocks)
        length = len(body) if self.section.write_length else -1
        o = self.order
        shb = struct.pack(o + "IHHq", BYTE_ORDER_MAGIC, 1, 0, length) + _options(o, self.section.options)
        return _block(o, BT_SHB, shb) + body


@dataclass
class PcapngFile:
    """A pcapng file made of one or more sections."""

    sections: list[Section]

    def to_bytes(self) -> bytes:
        return b"".join(_SectionWriter(s).to_bytes() for s in self.sections)

    def summary(self) -> Summary:
        blocks = [b for s in self.sections for b in s.blocks]
        ifaces = [b for b in blocks if isinstance(b, Interface)]
        timed = [b.record for b in blocks if isinstance(b, Epb | Pb)]
        packets = len(timed) + sum(isinstance(b, Spb) for b in blocks)
        first, last = _bounds(timed)
        link_types = tuple(sorted({i.linktype for i in ifaces}))
        return Summary("pcapng", link_types, packets, first, last, len(ifaces))


CaptureFile = PcapFile | PcapngFile
