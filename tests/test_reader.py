"""The reader: formats and link types as the generator wrote them, and agreement with tshark's timestamps."""

from __future__ import annotations

import itertools
import struct
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import pcapsense.reader.chunks as reader_chunks
import pcapsense.reader.open as reader_open
from pcapsense.reader import open_capture
from pcapsense.reader.limits import MAX_CAPLEN
from tests.conftest import TSHARK, ethernet_udp


def read_all(path: Path) -> tuple[list[int], list[int], object]:
    opened = open_capture(str(path))
    ts: list[int] = []
    frames: list[int] = []
    for batch in opened.reader.batches():
        ts.extend(batch.ts_ns.tolist())
        frames.extend(batch.frame.tolist())
    opened.close()
    return ts, frames, opened.reader


def ns(text: str) -> int:
    return int(Decimal(text) * 1_000_000_000)


def test_every_sample_matches_the_generator(samples: Path, manifest: list[dict]) -> None:
    assert len(manifest) >= 20
    for entry in manifest:
        ts, _frames, reader = read_all(samples / entry["file"])
        assert reader.fault is None, entry["file"]
        assert len(ts) == entry["packets"], entry["file"]
        assert ts[0] == ns(entry["first_ts"]), entry["file"]
        assert ts[-1] == ns(entry["last_ts"]), entry["file"]
        assert sorted({i.linktype for i in reader.interfaces}) == sorted(set(entry["link_types"])), entry["file"]
        assert len(reader.interfaces) == entry["interfaces"], entry["file"]


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_frames_and_timestamps_agree_with_tshark(samples: Path, manifest: list[dict]) -> None:
    """Frame numbers are Wireshark's (custom blocks take one too); timestamps equal to the nanosecond."""
    for entry in manifest:
        path = samples / entry["file"]
        out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch",
                              "-e", "frame.len"], capture_output=True, text=True, check=True).stdout.splitlines()
        rows = [line.split("\t") for line in out]
        ts, frames, _ = read_all(path)
        by_frame = dict(zip(frames, ts, strict=True))
        packets = [r for r in rows if int(r[0]) in by_frame]
        assert len(packets) == len(ts), entry["file"]
        # a simple packet block has no timestamp: tshark prints nothing, we carry the previous packet's time
        for number, stamp, _length in packets:
            if stamp:
                assert by_frame[int(number)] == ns(stamp), (entry["file"], number)


def test_pcapng_interfaces_carry_their_own_link_type(samples: Path) -> None:
    opened = open_capture(str(samples / "fmt_pcapng_two_if.pcapng"))
    ifaces = set()
    for batch in opened.reader.batches():
        ifaces.update(batch.iface.tolist())
    assert ifaces == {0, 1}
    assert [i.linktype for i in opened.reader.interfaces] == [1, 228]
    assert opened.reader.counters.get("skipped_custom_blocks") == 1
    assert opened.reader.counters.get("skipped_unknown_blocks") == 1


def test_gzip_is_recognised_by_magic_not_name(samples: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "capture.bin"
    renamed.write_bytes((samples / "fmt_healthy.pcap.gz").read_bytes())
    ts, _, _ = read_all(renamed)
    plain, _, _ = read_all(samples / "healthy.pcap")
    assert ts == plain


# -- the record walk: chunk and piece boundaries, faults inside long runs, separate buffers ---------------------

SIZES = [(16 * 2**20, 2**20), (2**20, 8192), (256, 64), (1000, 100), (4096, 512)]  # (chunk bytes, piece bytes)


def _frame(i: int) -> bytes:
    return ethernet_udp(bytes([i % 251]) * (i * 37 % 300))


def _pcap(records: int = 400, order: str = "<", rec_extra: bytes = b"") -> bytes:
    magic = 0xA1B2CD34 if rec_extra else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for i in range(records):
        data = _frame(i)
        out.append(struct.pack(order + "IIII", 1_700_000_000 + i, i * 999 % 1_000_000, len(data), len(data) + i % 3))
        out.append(rec_extra + data)
    return b"".join(out)


def _ng_block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(order + "II", btype, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)


def _ng_idb(order: str, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    options = b""
    if tsresol is not None:
        options += struct.pack(order + "HHB3x", 9, 1, tsresol)
    if tsoffset:
        options += struct.pack(order + "HHq", 14, 8, tsoffset)
    return _ng_block(order, 1, struct.pack(order + "HHI", 1, 0, 0) + options + struct.pack(order + "HH", 0, 0))


def _ng_epb(order: str, iface: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data) + 4)
    return _ng_block(order, 6, head + data)


def _pcapng() -> bytes:
    """Long EPB runs across two interfaces with their own clocks, broken up by every other kind of block, a
    big-endian section, timestamps beyond 2262 (clamped) and simple packet blocks (no timestamp)."""
    le, be = "<", ">"
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    blocks = [_ng_block(le, 0x0A0D0D0A, shb), _ng_idb(le), _ng_idb(le, tsresol=0x80 | 20, tsoffset=-7)]
    blocks += [_ng_epb(le, i % 2, (1_700_000_000_000_000 + i) if i % 2 == 0 else (1_700_000_000 + i) << 20,
                       _frame(i)) for i in range(150)]
    blocks += [_ng_block(le, 0xBAD, b"\x00\x00\x7e\xd9opaque"), _ng_block(le, 3, struct.pack("<I", 60) + _frame(1))]
    blocks += [_ng_epb(le, 0, 2**64 - 1 - i, _frame(i)) for i in range(3)]
    blocks += [_ng_epb(le, 1, (1_700_000_000 + i) << 20, _frame(i)) for i in range(40)]
    blocks += [_ng_block(be, 0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1)), _ng_idb(be, tsresol=9)]
    blocks += [_ng_epb(be, 0, 1_700_000_000_000_000_000 + i, _frame(i)) for i in range(60)]
    return b"".join(blocks)


def _epb_offsets(data: bytes) -> list[int]:
    """Byte offsets of the EPBs of the little-endian part of `_pcapng()`."""
    offsets, off = [], 0
    while True:
        btype, blen = struct.unpack_from("<II", data, off)
        if btype == 0x0A0D0D0A and off:
            return offsets
        if btype == 6:
            offsets.append(off)
        off += blen


def _read_with(path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, piece: int) -> tuple:
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(reader_chunks, "PIECE_BYTES", piece)
    opened = open_capture(str(path))
    rows = []
    for batch in opened.reader.batches():
        for row in range(len(batch)):
            rows.append((int(batch.frame[row]), int(batch.ts_ns[row]), int(batch.wirelen[row]),
                         int(batch.iface[row]), batch.packet_bytes(row)))
    opened.close()
    reader = opened.reader
    return rows, reader.fault, reader.counters, reader.records


def _damaged(data: bytes, offset: int, value: int, order: str = "<") -> bytes:
    return data[:offset] + struct.pack(order + "I", value) + data[offset + 4 :]


PCAP_OFFSETS = list(itertools.accumulate((16 + len(_frame(i)) for i in range(399)), initial=24))  # of `_pcap()`

NG_EPBS = _epb_offsets(_pcapng())


def _pcap_fault(index: int) -> tuple[int, int, int]:
    """(record number, byte offset, packets kept) of a fault at the pcap record with 0-based `index`."""
    return index + 1, PCAP_OFFSETS[index], index


def _ng_fault(index: int) -> tuple[int, int, int]:
    """The same for the EPB with 0-based `index`: blocks are counted, the section header and two IDBs first."""
    return index + 4, NG_EPBS[index], index


CAPTURES: dict[str, tuple[Callable[[], bytes], tuple[int, int, int] | None]] = {
    "pcap": (_pcap, None),
    "pcap-be": (lambda: _pcap(order=">"), None),
    "pcap-modified": (lambda: _pcap(rec_extra=b"\x02\x00\x00\x00\x00\x08\x00\x00"), None),
    "pcap-caplen-mid-run": (lambda: _damaged(_pcap(), PCAP_OFFSETS[250] + 8, MAX_CAPLEN + 1), _pcap_fault(250)),
    "pcap-fraction-mid-run": (lambda: _damaged(_pcap(), PCAP_OFFSETS[300] + 4, 1_000_000), _pcap_fault(300)),
    "pcap-cut-mid-run": (lambda: _pcap()[: PCAP_OFFSETS[333] + 20], _pcap_fault(333)),
    "pcapng": (_pcapng, None),
    "pcapng-trailer-mid-run": (lambda: _damaged(_pcapng(), NG_EPBS[121] - 4, 0), _ng_fault(120)),
    "pcapng-iface-mid-run": (lambda: _damaged(_pcapng(), NG_EPBS[99] + 8, 2), _ng_fault(99)),
    "pcapng-caplen-mid-run": (lambda: _damaged(_pcapng(), NG_EPBS[77] + 20, 0xFFFF), _ng_fault(77)),
    "pcapng-length-mid-run": (lambda: _damaged(_pcapng(), NG_EPBS[130] + 4, 0x7FFFFFFF), _ng_fault(130)),
}


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_chunk_and_piece_boundaries_do_not_change_what_is_read(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks and pieces take the per-record paths at every boundary, the default ones walk long runs
    vectorised: packets, timestamps, frame numbers, faults and counters must not depend on which."""
    build, fault_at = CAPTURES[name]  # fault_at: (record number, byte offset, packets kept)
    path = tmp_path / name
    path.write_bytes(build())
    results = [_read_with(path, monkeypatch, chunk, piece) for chunk, piece in SIZES]
    assert all(result == results[0] for result in results[1:])
    rows, fault, _counters, records = results[0]
    assert records == len(rows) > 50
    if fault_at is None:
        assert fault is None
    else:
        assert fault is not None
        assert (fault.record, fault.offset, len(rows)) == fault_at


def test_pcapng_timestamps_per_interface_clock(tmp_path: Path) -> None:
    """Microseconds, 2^-20 s with a negative offset, beyond 2262 (clamped and counted), nanoseconds in a
    big-endian section, and a simple packet block taking the previous packet's time."""
    path = tmp_path / "clocks.pcapng"
    path.write_bytes(_pcapng())
    opened = open_capture(str(path))
    ts = [t for batch in opened.reader.batches() for t in batch.ts_ns.tolist()]
    opened.close()
    assert ts[0] == 1_700_000_000_000_000_000
    assert ts[1] == ((1_700_000_000 + 1) << 20) * 1_000_000_000 // 2**20 - 7_000_000_000
    assert ts[150] == ts[149]  # the SPB
    assert ts[151:154] == [2**63 - 1] * 3
    assert opened.reader.counters["timestamps_out_of_range_clamped"] == 3
    assert ts[-1] == 1_700_000_000_000_000_000 + 59


def test_batches_keep_their_own_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch may outlive the next read (or go to another process): no later chunk may overwrite its buffer."""
    path = tmp_path / "many.pcap"
    path.write_bytes(_pcap())
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 4096)
    opened = open_capture(str(path))
    batches = list(opened.reader.batches())
    opened.close()
    assert len(batches) > 10
    assert not any(np.shares_memory(a.data, b.data) for a, b in itertools.pairwise(batches))
    frames = [batch.packet_bytes(row) for batch in batches for row in range(len(batch))]
    assert frames == [_frame(i) for i in range(400)]


@pytest.mark.parametrize("interfaces", [6, 100])
def test_pcapng_timestamps_equal_exact_arithmetic(interfaces: int, tmp_path: Path) -> None:
    """Every kind of tsresol and offset, on 6 interfaces (converted per clock) and on 100 (more clocks in one
    batch than are converted vectorised): the nanoseconds of exact integer arithmetic, clamped where they leave
    64 bits."""
    resolutions = [(6, 0), (9, -3), (0x80 | 20, 5), (12, 0), (0x80 | 40, 0), (3, 10**12)]
    blocks = [_ng_block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    blocks += [_ng_idb("<", *resolutions[i % 6]) for i in range(interfaces)]
    ticks = [2**64 - 1 - i if i % 6 == 1 else (1_700_000_000 + i) << 20 for i in range(300)]
    blocks += [_ng_epb("<", i % interfaces, ticks[i], _frame(i)) for i in range(300)]
    path = tmp_path / "ifaces.pcapng"
    path.write_bytes(b"".join(blocks))
    opened = open_capture(str(path))
    ts = [t for batch in opened.reader.batches() for t in batch.ts_ns.tolist()]
    opened.close()
    expected = []
    for i, t in enumerate(ticks):
        tsresol, offset = resolutions[i % interfaces % 6]
        units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
        expected.append(t * 1_000_000_000 // units + offset * 1_000_000_000)
    assert ts == [min(max(t, 0), 2**63 - 1) for t in expected]
    assert opened.reader.counters["timestamps_out_of_range_clamped"] == sum(not 0 <= t < 2**63 for t in expected)
