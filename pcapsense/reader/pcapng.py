"""pcapng: several sections (each with its own byte order), several interfaces per section, EPB/SPB/PB.

Interface ids are per section; they are renumbered into one global list so every packet knows its link type
and timestamp resolution. Unknown, custom and statistics blocks are skipped and counted.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pcapsense.reader.batch import CaptureFault, Interface, RawBatch
from pcapsense.reader.limits import MAX_BLOCK_LEN, MAX_CAPLEN
from pcapsense.reader.walker import Walker

SHB = 0x0A0D0D0A
IDB, PB, SPB, EPB = 1, 2, 3, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_IF_TSRESOL, OPT_IF_TSOFFSET, OPT_IF_NAME = 9, 14, 2
SKIPPED_BLOCK_NAMES = {4: "name_resolution", 5: "interface_statistics", 0xA: "decryption_secrets",
                       0xBAD: "custom", 0x40000BAD: "custom", 9: "systemd_journal"}
# Blocks Wireshark shows as frames of their own (custom blocks, systemd journal entries): they are not packets,
# but they take a frame number, so packet frame numbers stay equal to Wireshark's.
FRAME_LIKE_BLOCKS = frozenset({0xBAD, 0x40000BAD, 9})
MAX_NS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Clock:
    """Converts an interface's timestamp ticks to nanoseconds: ns = ticks * mul // div + offset."""

    mul: int
    div: int
    offset_ns: int

    @classmethod
    def from_tsresol(cls, tsresol: int, offset_s: int) -> _Clock:
        exponent = tsresol & 0x7F
        if tsresol & 0x80:
            return cls(1_000_000_000, 2**exponent, offset_s * 1_000_000_000)
        if exponent <= 9:
            return cls(10 ** (9 - exponent), 1, offset_s * 1_000_000_000)
        return cls(1, 10 ** (exponent - 9), offset_s * 1_000_000_000)


@dataclass
class PcapngReader(Walker):
    """Walks pcapng blocks, validating every length against the block that encloses it."""

    format: str = "pcapng"
    blocks: int = 0  # blocks walked (fault messages count blocks, like Wireshark's "block")
    frames: int = 0  # frame numbers handed out (packets plus frame-like blocks)

    sections: int = 0

    def __post_init__(self) -> None:
        self._last_ns = 0
        self._order = "<"
        self._section_ifaces: list[int] = []  # section-local id -> global interface index
        self._clocks: list[_Clock] = []  # per global interface

    def batches(self) -> Iterator[RawBatch]:
        while True:
            more = self.chunks.fill()
            # data offset, caplen, wirelen, ticks, iface, frame number
            cols: tuple[list[int], ...] = ([], [], [], [], [], [])
            off = self._walk(self.chunks.buf, cols)
            if cols[0]:
                yield self._to_batch(cols)
            if self.fault is not None:
                return
            self.chunks.consume(off)
            if not more:
                self._end_of_stream()
                return

    # -- block walk -----------------------------------------------------------------------------------------

    def _walk(self, buf: bytes, cols: tuple[list[int], ...]) -> int:
        off, end = 0, len(buf)
        data_off, caps, wires, ticks, ifaces, frames = cols
        frame_no = self.frames
        while off + 12 <= end:
            btype = struct.unpack_from(self._order + "I", buf, off)[0]
            order = self._order
            if btype == SHB:  # a palindrome: recognisable before the section's byte order is known
                if off + 16 > end:
                    break
                order = self._section_order(buf, off)
                if order is None:
                    return off
            blen = struct.unpack_from(order + "I", buf, off + 4)[0]
            problem = self._check_length(blen)
            if problem:
                self._set_fault(off, problem)
                return off
            if off + blen > end:
                break
            trailer = struct.unpack_from(order + "I", buf, off + blen - 4)[0]
            if trailer != blen:
                self._set_fault(off, f"block trailer length {trailer} does not match header length {blen}")
                return off
            body = off + 8
            if btype == SHB:
                self._start_section(order)
            elif btype in (EPB, PB):
                fmt = "IIIII" if btype == EPB else "HHIIII"
                iface, *rest = struct.unpack_from(self._order + fmt, buf, body)
                hi, lo, caplen, wirelen = rest[-4:]
                if not self._packet_ok(off, iface, caplen, blen - 32):
                    return off
                data_off.append(body + 20)
                caps.append(caplen)
                wires.append(wirelen)
                ticks.append((hi << 32) | lo)
                ifaces.append(self._section_ifaces[iface])
                frame_no += 1
                frames.append(frame_no)
            elif btype == SPB:
                if not self._section_ifaces:
                    self._set_fault(off, "simple packet block before any interface description block")
                    return off
                (wirelen,) = struct.unpack_from(self._order + "I", buf, body)
                snap = self.interfaces[self._section_ifaces[0]].snaplen or MAX_CAPLEN
                data_off.append(body + 4)
                caps.append(min(wirelen, snap, blen - 16))
                wires.append(wirelen)
                ticks.append(-1)  # SPBs carry no timestamp
                ifaces.append(self._section_ifaces[0])
                frame_no += 1
                frames.append(frame_no)
            elif btype == IDB:
                self._add_interface(buf, body, off + blen - 4)
            else:
                key = f"skipped_{SKIPPED_BLOCK_NAMES.get(btype, 'unknown')}_blocks"
                self.count(key)
                frame_no += btype in FRAME_LIKE_BLOCKS
            self.blocks += 1
            self.frames = frame_no
            off += blen
        return off

    def _section_order(self, buf: bytes, off: int) -> str | None:
        """Byte order of the section whose header starts at `off`, or None (fault set) if it is unusable."""
        bom = buf[off + 8 : off + 12]
        if bom == BYTE_ORDER_MAGIC.to_bytes(4, "little"):
            order = "<"
        elif bom == BYTE_ORDER_MAGIC.to_bytes(4, "big"):
            order = ">"
        else:
            self._set_fault(off, f"section header with invalid byte-order magic 0x{bom.hex()}")
            return None
        major, minor = struct.unpack_from(order + "HH", buf, off + 12)
        if major != 1:
            self._set_fault(off, f"section header version {major}.{minor} is not supported (expected 1.x)")
            return None
        return order

    def _start_section(self, order: str) -> None:
        self._order = order
        self._section_ifaces = []
        self.sections += 1
        if order == ">":
            self.count("big_endian_sections")

    def _check_length(self, blen: int) -> str | None:
        if blen < 12:
            return f"block total length {blen} is less than the minimum of 12"
        if blen % 4:
            return f"block total length {blen} is not a multiple of 4"
        if blen > MAX_BLOCK_LEN:
            return f"block total length {blen} exceeds maximum {MAX_BLOCK_LEN}"
        return None

    def _packet_ok(self, off: int, iface: int, caplen: int, room: int) -> bool:
        if iface >= len(self._section_ifaces):
            self._set_fault(off, f"packet for interface {iface}, but the section declares {len(self._section_ifaces)}")
            return False
        if caplen > MAX_CAPLEN:
            self._set_fault(off, f"caplen {caplen} exceeds maximum {MAX_CAPLEN}")
            return False
        if caplen > room:
            self._set_fault(off, f"caplen {caplen} exceeds the {room} bytes its block can hold")
            return False
        return True

    def _add_interface(self, buf: bytes, body: int, opt_end: int) -> None:
        linktype, _reserved, snaplen = struct.unpack_from(self._order + "HHI", buf, body)
        tsresol, tsoffset, name = 6, 0, ""
        pos = body + 8
        while pos + 4 <= opt_end:
            code, length = struct.unpack_from(self._order + "HH", buf, pos)
            if code == 0:
                break
            value = buf[pos + 4 : min(pos + 4 + length, opt_end)]
            if code == OPT_IF_TSRESOL and value:
                tsresol = value[0]
            elif code == OPT_IF_TSOFFSET and len(value) == 8:
                tsoffset = struct.unpack(self._order + "q", value)[0]
            elif code == OPT_IF_NAME:
                name = value.decode("utf-8", "replace")
            pos += 4 + ((length + 3) & ~3)
        index = len(self.interfaces)
        self.interfaces.append(Interface(index, linktype, snaplen, name))
        self._clocks.append(_Clock.from_tsresol(tsresol, tsoffset))
        self._section_ifaces.append(index)

    # -- batch assembly -------------------------------------------------------------------------------------

    def _to_batch(self, cols: tuple[list[int], ...]) -> RawBatch:
        data_off, caps, wires, ticks, ifaces, frames = cols
        caplen = np.asarray(caps, dtype=np.int64)
        wirelen = np.asarray(wires, dtype=np.int64)
        ts_ns = np.fromiter((self._to_ns(t, i) for t, i in zip(ticks, ifaces, strict=True)), np.int64, len(ticks))
        n = len(data_off)
        self.count("truncated_by_snaplen", int(np.count_nonzero(caplen < wirelen)))
        frame = np.asarray(frames, dtype=np.int64)
        self.records += n
        data = np.frombuffer(self.chunks.buf, dtype=np.uint8)
        return RawBatch(data, np.asarray(data_off, dtype=np.int64), caplen, wirelen, ts_ns, frame,
                        np.asarray(ifaces, dtype=np.int64))

    def _to_ns(self, ticks: int, iface: int) -> int:
        """Nanoseconds for one packet; an SPB (no timestamp) inherits the previous packet's time.

        A timestamp beyond what 64-bit nanoseconds hold (after the year 2262: a damaged or forged field) is
        clamped and counted rather than allowed to stop the analysis."""
        if ticks >= 0:
            clock = self._clocks[iface]
            ns = ticks * clock.mul // clock.div + clock.offset_ns
            if not 0 <= ns <= MAX_NS:
                self.count("timestamps_out_of_range_clamped")
                ns = min(max(ns, 0), MAX_NS)
            self._last_ns = ns
        return self._last_ns

    def _set_fault(self, off_in_chunk: int, message: str) -> None:
        self.fault = CaptureFault(self.blocks + 1, self.chunks.base + off_in_chunk, message)

    def _end_of_stream(self) -> None:
        left = len(self.chunks.buf)
        if self.chunks.error:
            self._set_fault(0, self.chunks.error)
        elif left:
            self._set_fault(0, f"truncated block: {left} bytes at end of file")
