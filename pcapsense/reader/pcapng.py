"""pcapng: several sections (each with its own byte order), several interfaces per section, EPB/SPB/PB.

Interface ids are per section; they are renumbered into one global list so every packet knows its link type
and timestamp resolution. Unknown, custom and statistics blocks are skipped and counted.

Runs of EPBs (nearly every block of a real capture) are found by a minimal Python loop and checked and decoded
with numpy; every other block, and any EPB such a check does not vouch for, goes through the per-block path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pcapsense.reader.batch import CaptureFault, Interface, RawBatch
from pcapsense.reader.limits import MAX_BLOCK_LEN, MAX_CAPLEN
from pcapsense.reader.walker import NATIVE_ORDER, Walker

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
EPB_HEADER_WORDS = 7  # type, length, interface id, timestamp high and low, caplen, wirelen
EPB_OVERHEAD = 32  # header words plus the trailing length
# A run of EPBs shorter than this is left to the per-block path (which then walks it again from its next
# block): checking a run with numpy has a fixed cost of some tens of microseconds, about 16 blocks' worth.
MIN_RUN = 16
# Timestamps are converted vectorised per interface clock, one pass over the batch each; a batch with packets
# on more interfaces than this (a forged file can declare thousands) is converted packet by packet instead.
MAX_CLOCKS_PER_BATCH = 64


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

    def ns(self, ticks: int) -> int:
        return ticks * self.mul // self.div + self.offset_ns

    def ns_array(self, ticks: np.ndarray) -> np.ndarray | None:
        """`ns` of non-empty uint64 ticks, or None when a value needs clamping or 64 bits would not be exact.

        ns grows with ticks, so the smallest and largest ticks bound every result. With ticks = q * div + r,
        ns = q * mul + r * mul // div + offset, where r * mul < div * mul: when that fits in 64 bits the
        division is exact, and the products and sums, computed modulo 2**64, give the exact result because it
        is known to lie in [0, 2**63)."""
        lowest, highest = self.ns(int(ticks.min())), self.ns(int(ticks.max()))
        if lowest < 0 or highest > MAX_NS or self.mul * self.div > 2**64:
            return None
        mul, div = np.uint64(self.mul), np.uint64(self.div)
        if self.div == 1:
            ns = ticks * mul
        else:
            q, r = np.divmod(ticks, div)
            ns = q * mul + r * mul // div
        return (ns + np.uint64(self.offset_ns % 2**64)).view(np.int64)


class _Columns(NamedTuple):
    """Packet columns, one row per packet in file order."""

    data_off: np.ndarray  # int64: start of the packet bytes in the chunk
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    ticks: np.ndarray  # uint64: timestamp in the interface's units (0 where there is none)
    stamped: np.ndarray  # bool: False for simple packet blocks, which carry no timestamp
    iface: np.ndarray  # int64: global interface index
    frame: np.ndarray  # int64


COLUMN_TYPES = _Columns(np.int64, np.int64, np.int64, np.uint64, np.bool_, np.int64, np.int64)


class _EpbRun(NamedTuple):
    """EPBs taken in one go: where they are, their first seven words, how they are numbered."""

    at: np.ndarray  # int64: word index of each block in the chunk
    head: np.ndarray  # (n, 7) uint32: type, length, interface id, timestamp high and low, caplen, wirelen
    iface_base: int  # global index of the section's interface 0 (a section's interfaces are numbered in a row)
    first_frame: int


class _Packets:
    """The packets of one chunk: EPB runs (turned into columns once per chunk, not once per piece) and, one
    row each, the packets the per-block path took. Frame numbers grow in file order, so they restore it."""

    def __init__(self) -> None:
        self._runs: list[_EpbRun] = []
        self._rows: list[tuple[int, int, int, int, bool, int, int]] = []

    def add_run(self, run: _EpbRun) -> None:
        self._runs.append(run)

    def add_row(self, data_off: int, caplen: int, wirelen: int, ticks: int, stamped: bool, iface: int,
                frame: int) -> None:
        self._rows.append((data_off, caplen, wirelen, ticks, stamped, iface, frame))

    def columns(self) -> _Columns | None:
        runs, rows = self._run_columns(), self._row_columns()
        if runs is None or rows is None:
            return runs or rows
        merged = _Columns(*(np.concatenate(pair) for pair in zip(runs, rows, strict=True)))
        order = np.argsort(merged.frame, kind="stable")
        return _Columns(*(column[order] for column in merged))

    def _run_columns(self) -> _Columns | None:
        if not self._runs:
            return None
        at = np.concatenate([run.at for run in self._runs])
        head = np.concatenate([run.head for run in self._runs])
        lengths = [len(run.at) for run in self._runs]
        starts = np.cumsum([0, *lengths[:-1]])
        frame = np.arange(len(at)) + np.repeat([run.first_frame for run in self._runs] - starts, lengths)
        iface = head[:, 2] + np.repeat([run.iface_base for run in self._runs], lengths)
        ticks = (head[:, 3].astype(np.uint64) << np.uint64(32)) | head[:, 4]
        return _Columns(4 * at + 4 * EPB_HEADER_WORDS, head[:, 5].astype(np.int64), head[:, 6].astype(np.int64),
                        ticks, np.ones(len(at), dtype=np.bool_), iface, frame)

    def _row_columns(self) -> _Columns | None:
        if not self._rows:
            return None
        rows = zip(*self._rows, strict=True)
        return _Columns(*(np.array(column, dtype=t) for column, t in zip(rows, COLUMN_TYPES, strict=True)))


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
        self._packets = _Packets()  # of the chunk being walked
        self._off = 0  # where the walk of that chunk stands

    def batches(self) -> Iterator[RawBatch]:
        while True:
            self._packets, self._off = _Packets(), 0
            more = self.chunks.fill(self._advance)
            columns = self._packets.columns()
            if columns is not None:
                yield self._to_batch(columns)
            if self.fault is not None:
                return
            self.chunks.consume(self._off)
            if not more:
                self._end_of_stream()
                return

    # -- block walk -----------------------------------------------------------------------------------------

    def _advance(self, buf: memoryview) -> None:
        """Walk on through `buf`, the chunk as read so far (called piece by piece, while the bytes are still in
        the CPU cache): runs of EPBs vectorised, every other block (and any a run cannot vouch for) one by one.

        Every block starts at a multiple of 4 in `buf`: the stream's first block starts at 0, every length is
        checked to be a multiple of 4, and the chunk starts where a block does."""
        if self.fault is not None:
            return
        native = buf[: len(buf) // 4 * 4].cast("I")
        off = self._off
        while True:
            if self._order == NATIVE_ORDER:
                off = self._take_epbs(buf, native, off)
            nxt = self._block(buf, off)
            if nxt is None:
                break
            off = nxt
        self._off = off

    def _take_epbs(self, buf: memoryview, native: memoryview, off: int) -> int:
        """Take the run of intact EPBs at `off` in one go; the offset after them.

        A Python loop finds the run, reading two words per block; numpy then checks the blocks as the per-block
        path would and takes them up to the first it would not take as they are (which that path then reports,
        or leaves for the next piece)."""
        run = _epb_run(native, off >> 2)
        if len(run) < MIN_RUN:
            return off
        if run[-1] + (native[run[-1] + 1] >> 2) > len(native):
            del run[-1]  # not all read yet; every other block of the run is followed by the next one's header
        at = np.asarray(run, dtype=np.int64)
        # numpy views are made over `buf` (bytes) rather than `native`: parsing a buffer's 'I' format costs more
        words = np.frombuffer(buf, dtype=np.uint32, count=len(native))
        head = _heads(buf, at)
        n = _intact_prefix(words, at, head, len(self._section_ifaces))
        if not n:
            return off
        self._packets.add_run(_EpbRun(at[:n], head[:n], self._section_ifaces[0], self.frames + 1))
        self.blocks += n
        self.frames += n
        return 4 * (run[n - 1] + (int(head[n - 1, 1]) >> 2))

    def _block(self, buf: memoryview, off: int) -> int | None:
        """Walk the block at `off`; the offset after it, or None when the walk stops there: the block is not
        all in `buf` yet, or it is faulty (the fault is set)."""
        end = len(buf)
        if off + 12 > end:
            return None
        btype = struct.unpack_from(self._order + "I", buf, off)[0]
        order = self._order
        if btype == SHB:  # a palindrome: recognisable before the section's byte order is known
            if off + 16 > end:
                return None
            order = self._section_order(buf, off)
            if order is None:
                return None
        blen = struct.unpack_from(order + "I", buf, off + 4)[0]
        problem = self._check_length(blen)
        if problem:
            self._set_fault(off, problem)
            return None
        if off + blen > end:
            return None
        trailer = struct.unpack_from(order + "I", buf, off + blen - 4)[0]
        if trailer != blen:
            self._set_fault(off, f"block trailer length {trailer} does not match header length {blen}")
            return None
        if not self._block_body(buf, off, btype, blen, order):
            return None
        self.blocks += 1
        return off + blen

    def _block_body(self, buf: memoryview, off: int, btype: int, blen: int, order: str) -> bool:
        """Act on one well-framed block; False when it is faulty (the fault is set)."""
        body = off + 8
        if btype == SHB:
            self._start_section(order)
        elif btype in (EPB, PB):
            return self._packet_block(buf, off, btype, blen)
        elif btype == SPB:
            return self._simple_packet_block(buf, off, blen)
        elif btype == IDB:
            self._add_interface(buf, body, off + blen - 4)
        else:
            key = f"skipped_{SKIPPED_BLOCK_NAMES.get(btype, 'unknown')}_blocks"
            self.count(key)
            self.frames += btype in FRAME_LIKE_BLOCKS
        return True

    def _packet_block(self, buf: memoryview, off: int, btype: int, blen: int) -> bool:
        fmt = "IIIII" if btype == EPB else "HHIIII"
        iface, *rest = struct.unpack_from(self._order + fmt, buf, off + 8)
        hi, lo, caplen, wirelen = rest[-4:]
        if not self._packet_ok(off, iface, caplen, blen - EPB_OVERHEAD):
            return False
        self.frames += 1
        self._packets.add_row(off + 28, caplen, wirelen, (hi << 32) | lo, True, self._section_ifaces[iface],
                              self.frames)
        return True

    def _simple_packet_block(self, buf: memoryview, off: int, blen: int) -> bool:
        if not self._section_ifaces:
            self._set_fault(off, "simple packet block before any interface description block")
            return False
        (wirelen,) = struct.unpack_from(self._order + "I", buf, off + 8)
        snap = self.interfaces[self._section_ifaces[0]].snaplen or MAX_CAPLEN
        self.frames += 1
        # SPBs carry no timestamp: the packet gets the previous packet's
        self._packets.add_row(off + 12, min(wirelen, snap, blen - 16), wirelen, 0, False, self._section_ifaces[0],
                              self.frames)
        return True

    def _section_order(self, buf: memoryview, off: int) -> str | None:
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

    def _add_interface(self, buf: memoryview, body: int, opt_end: int) -> None:
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
                name = bytes(value).decode("utf-8", "replace")
            pos += 4 + ((length + 3) & ~3)
        index = len(self.interfaces)
        self.interfaces.append(Interface(index, linktype, snaplen, name))
        self._clocks.append(_Clock.from_tsresol(tsresol, tsoffset))
        self._section_ifaces.append(index)

    # -- batch assembly -------------------------------------------------------------------------------------

    def _to_batch(self, columns: _Columns) -> RawBatch:
        n = len(columns.frame)
        self.count("truncated_by_snaplen", int(np.count_nonzero(columns.caplen < columns.wirelen)))
        self.records += n
        data = np.frombuffer(self.chunks.buf, dtype=np.uint8)
        ts_ns = self._timestamps(columns.ticks, columns.stamped, columns.iface)
        return RawBatch(data, columns.data_off, columns.caplen, columns.wirelen, ts_ns, columns.frame, columns.iface)

    def _timestamps(self, ticks: np.ndarray, stamped: np.ndarray, iface: np.ndarray) -> np.ndarray:
        """Nanoseconds per packet, vectorised per interface clock; a packet without a timestamp (SPB) has the
        previous packet's, across batches too."""
        ns = np.zeros(len(ticks), dtype=np.int64)
        rows = np.flatnonzero(stamped)
        clocks = np.flatnonzero(np.bincount(iface[rows]))
        if len(clocks) <= MAX_CLOCKS_PER_BATCH:
            for index in clocks.tolist():
                same = rows[iface[rows] == index]
                clock = self._clocks[index]
                vectorised = clock.ns_array(ticks[same])
                ns[same] = vectorised if vectorised is not None else self._exact_ns(ticks[same], [clock] * len(same))
        else:
            ns[rows] = self._exact_ns(ticks[rows], [self._clocks[index] for index in iface[rows].tolist()])
        if len(rows) < len(ns):
            last = np.maximum.accumulate(np.where(stamped, np.arange(len(ns)), -1))
            ns = np.where(last >= 0, ns[last], self._last_ns)
        self._last_ns = int(ns[-1])
        return ns

    def _exact_ns(self, ticks: np.ndarray, clocks: list[_Clock]) -> np.ndarray:
        """Nanoseconds packet by packet, in Python integers.

        A timestamp beyond what 64-bit nanoseconds hold (after the year 2262: a damaged or forged field) is
        clamped and counted rather than allowed to stop the analysis."""
        exact = [clock.ns(t) for t, clock in zip(ticks.tolist(), clocks, strict=True)]
        self.count("timestamps_out_of_range_clamped", sum(not 0 <= t <= MAX_NS for t in exact))
        return np.array([min(max(t, 0), MAX_NS) for t in exact], dtype=np.int64)

    def _set_fault(self, off_in_chunk: int, message: str) -> None:
        self.fault = CaptureFault(self.blocks + 1, self.chunks.base + off_in_chunk, message)

    def _end_of_stream(self) -> None:
        left = len(self.chunks.buf)
        if self.chunks.error:
            self._set_fault(0, self.chunks.error)
        elif left:
            self._set_fault(0, f"truncated block: {left} bytes at end of file")


def _epb_run(native: memoryview, index: int) -> list[int]:
    """Word indices of the consecutive EPBs from word `index` on (native byte order), as far as their first two
    words are in `native`.

    The only per-packet Python loop of the pcapng reader, so it checks only what keeps it moving forward (a
    length under an EPB's minimum ends the run); everything else is checked vectorised by the caller."""
    run: list[int] = []
    append = run.append
    try:
        while native[index] == EPB:
            blen = native[index + 1]
            if blen < EPB_OVERHEAD:
                break
            append(index)
            index += blen >> 2
    except IndexError:
        pass
    return run


def _heads(buf: memoryview, at: np.ndarray) -> np.ndarray:
    """The first seven words of the blocks at word indices `at`, one row per block (copied as one 28-byte item
    each, which numpy gathers several times faster than rows of a 2-D view)."""
    items = np.ndarray((len(buf) // 4 - EPB_HEADER_WORDS + 1,), np.dtype(("V", 4 * EPB_HEADER_WORDS)), buffer=buf,
                       strides=(4,))
    return items[at].view(np.uint32).reshape(-1, EPB_HEADER_WORDS)


def _intact_prefix(words: np.ndarray, at: np.ndarray, head: np.ndarray, n_ifaces: int) -> int:
    """How many leading blocks of a run pass every check the per-block path makes on an EPB.

    Each block must lie wholly in `words` (the caller drops a last one that does not)."""
    blen, iface, caplen = head[:, 1], head[:, 2], head[:, 5]
    trailer = words[at + (blen >> 2) - 1]
    bad = ((trailer != blen) | (blen % 4 != 0) | (blen > MAX_BLOCK_LEN) | (iface >= n_ifaces)
           | (caplen > np.minimum(blen - EPB_OVERHEAD, MAX_CAPLEN)))
    first = int(bad.argmax())
    return first if bad[first] else len(bad)
