"""Corruption tests: whatever the file, a documented exit code, never a traceback, faults named, results kept.

Promises checked on every input (see `tests.corrupt.check_promises`): exit 0 or 2 and never a signal; no
"Traceback"; every stderr line names the input; exit 2 exactly when an input gave no result, and then a line says
why; `capture.partial` is true exactly when `capture.fault` is set, and the fault is printed as
`NAME: record #N at byte offset O: ...`. The CLI runs under RLIMIT_AS = 1.5 GiB so an unchecked allocation from a
4 GiB length field fails here instead of being hidden by overcommit.

Where the mutation leaves the ground truth known (truncation, a length field set to a boundary value) the test
also checks the fault's record number and byte offset and how many packets survive (P2, P3).

Quick tier (every run, about 80 s on 2 cores once the open core bugs are fixed): truncation at every byte offset
of a 1.5 KB seed pcap and of a compact two-section pcapng (in-process `analyze()`, catching only PcapsenseError);
cut and byte-flipped gzip/bzip2/xz captures; length fields at boundary values; odd whole files and random bytes
behind every magic; unknown and custom pcapng blocks; packets for undeclared interfaces; timestamps out of range;
deep encapsulation; hostile DNS; the decompression cap; a million empty records; `editcap -E` over every sample
capture as pcap and as pcapng; random container mutations; `randpkt`; the regression captures in `tests/regress/`.

Soak tier (`-m soak`, about 4 minutes at PCAPSENSE_SOAK_SCALE=1, longer parts scaled by it): every offset of the
full pcapng seed and of the nanosecond big-endian and modified pcap variants; every byte of the compressed seeds
cut and flipped; `editcap -E` at 2 % and 10 % with 4N seeds per sample; 1000N container mutations; `randpkt` at
Wireshark CI's parameters for 3N passes.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pcapsense.detector import Detector, load_detectors
from pcapsense.engine import AnalysisOptions, AnalysisResult, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.reader.limits import MAX_CAPLEN
from sample_pcaps import build as b
from tests.conftest import ethernet_udp, pcap_header, pcap_record, pcapng_block, pcapng_epb, pcapng_idb, pcapng_shb
from tests.corrupt import (
    BOUNDARY_VALUES,
    EDITCAP,
    RANDPKT,
    RANDPKT_TYPES,
    analyze_all,
    check_promises,
    container_mutant,
    editcap_mutant,
    pcap_records,
    pcapng_blocks,
    put_u32,
    randpkt_capture,
    run_cli,
    seed_pcap,
    seed_pcap_modified,
    seed_pcapng,
    seed_records,
    soak_scale,
    soak_tier,
    write_all,
)

REGRESS = Path(__file__).resolve().parent / "regress"
SEED_PACKETS = len(seed_records())
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}

OUT_OF_RANGE = "timestamps out of range"

needs_editcap = pytest.mark.skipif(EDITCAP is None, reason="editcap not installed")
needs_randpkt = pytest.mark.skipif(RANDPKT is None, reason="randpkt not installed")


@pytest.fixture(scope="module")
def detectors() -> dict[str, type[Detector]]:
    return load_detectors()


# ------------------------------------------------------------------------------------------ ground truth


@dataclass(frozen=True)
class Expect:
    """What a mutant must produce; None leaves a value open where the mutation does not determine it."""

    unusable: bool | None = False  # exit 2 and no document; None: either outcome is right
    partial: bool | None = None
    packets: int | None = None
    min_packets: int = 0
    fault_record: int | None = None
    fault_offset: int | None = None
    min_fault_record: int = 0
    message: str = ""
    warning: str = ""  # a capture warning that must be present (damage that is survived is still named, P7)


def verify(docs: dict[str, dict], path: Path, expect: Expect) -> None:
    """Check one input's document against its ground truth (the promises were checked by `check_promises`)."""
    doc = docs.get(str(path))
    if expect.unusable is not None:
        assert (doc is None) is expect.unusable, f"{path.name}: expected unusable={expect.unusable}"
    if doc is None:
        return
    capture, fault = doc["capture"], doc["capture"]["fault"]
    where = f"{path.name}: {capture['packets']} packets, fault {fault}"
    if expect.partial is not None:
        assert capture["partial"] is expect.partial, where
    if expect.packets is not None:
        assert capture["packets"] == expect.packets, where
    assert capture["packets"] >= expect.min_packets, where
    if fault is not None:
        assert fault["record"] >= expect.min_fault_record, where
        assert expect.fault_record in (None, fault["record"]), where
        assert expect.fault_offset in (None, fault["offset"]), where
        assert expect.message in fault["message"], where
    assert not expect.warning or any(expect.warning in w for w in capture["warnings"]), (where, capture["warnings"])


def run_batch(tmp_path: Path, cases: Sequence[tuple[str, bytes, Expect]]) -> None:
    """Write the cases, analyse them in one CLI process under the limits, check promises and ground truth."""
    paths = write_all(tmp_path, [(name, data) for name, data, _ in cases])
    docs = analyze_all(paths, batch=len(paths))
    for path, (_, _, expect) in zip(paths, cases, strict=True):
        verify(docs, path, expect)


# ----------------------------------------------------------------------------- truncation at every offset


@dataclass(frozen=True)
class Unit:
    """A record (pcap) or block (pcapng): where it ends and whether it carries a packet."""

    end: int
    packet: bool


def pcap_units(data: bytes) -> list[Unit]:
    offsets = pcap_records(data)
    return [Unit(end, True) for end in [*offsets[1:], len(data)]]


def pcapng_units(data: bytes) -> list[Unit]:
    return [Unit(blk.offset + blk.length, blk.type in (2, 3, 6)) for blk in pcapng_blocks(data)]


def analyze_prefix(path: Path, data: bytes, length: int, registry: dict[str, type[Detector]]) -> AnalysisResult | None:
    """Analyse the first `length` bytes in-process: the result, or None when the input is rejected as unusable.

    Only PcapsenseError is an accepted refusal; any other exception fails the test with the cut named."""
    path.write_bytes(data[:length])
    try:
        return analyze(str(path), AnalysisOptions(registry=registry))
    except PcapsenseError:
        return None
    except Exception as exc:
        exc.add_note(f"input: the first {length} of {len(data)} bytes of the seed (kept in {path})")
        raise


def sweep_truncations(tmp_path: Path, data: bytes, units: list[Unit], header: int,
                      detectors: dict[str, type[Detector]]) -> None:
    """Cut `data` at every length and check the ground truth: the complete records before the cut are analysed,
    the fault sits at the first incomplete one (record number and byte offset), and an exact boundary is clean.

    Detectors run once per distinct packet prefix (one byte into each record); the other cuts of the same
    record only differ in framing, so they run without detectors to keep 1,500 analyses cheap."""
    path = tmp_path / "cut"
    full_prefixes = {unit.end + 1 for unit in units} | {header + 1}
    for length in range(len(data) + 1):
        registry = detectors if length in full_prefixes else {}
        result = analyze_prefix(path, data, length, registry)
        if length < max(header, 4):
            assert result is None, f"{length} bytes: a cut file header must be refused"
            continue
        assert result is not None, f"{length} bytes: refused although the file header is complete"
        complete = [unit for unit in units if unit.end <= length]
        boundary = complete[-1].end if complete else header
        capture = result.capture
        where = f"cut at {length}: {capture['packets']} packets, fault {capture['fault']}"
        assert capture["packets"] == sum(unit.packet for unit in complete), where
        assert capture["partial"] is (length != boundary), where
        if length != boundary:
            assert (capture["fault"]["record"], capture["fault"]["offset"]) == (len(complete) + 1, boundary), where


def test_truncation_at_every_offset_pcap(tmp_path: Path, detectors: dict[str, type[Detector]]) -> None:
    data = seed_pcap()
    sweep_truncations(tmp_path, data, pcap_units(data), 24, detectors)


def test_truncation_at_every_offset_pcapng(tmp_path: Path, detectors: dict[str, type[Detector]]) -> None:
    """A compact pcapng with every kind of block boundary: two sections (the second big-endian), two IDBs, EPBs,
    a custom and an unknown block. The full seed is swept in the soak tier."""
    data = seed_pcapng(packets=5)
    sweep_truncations(tmp_path, data, pcapng_units(data), 0, detectors)


SOAK_SWEEPS: dict[str, Callable[[], bytes]] = {
    "pcapng-full": seed_pcapng,
    "pcap-nsec-big-endian": lambda: seed_pcap(big_endian=True, nsec=True),
    "pcap-modified": seed_pcap_modified,
}


@soak_tier
@pytest.mark.parametrize("kind", list(SOAK_SWEEPS))
def test_truncation_sweep_soak(tmp_path: Path, detectors: dict[str, type[Detector]], kind: str) -> None:
    """Every offset of the full pcapng seed, and of the pcap seed in the variants with other header layouts."""
    data = SOAK_SWEEPS[kind]()
    units, header = (pcapng_units(data), 0) if kind.startswith("pcapng") else (pcap_units(data), 24)
    sweep_truncations(tmp_path, data, units, header, detectors)


# ------------------------------------------------------------------------------------ compressed captures


def sweep_compressed(tmp_path: Path, codec: str, stride: int) -> None:
    """Cut the compressed seed, and flip one of its bytes, at every `stride`-th offset: each damaged stream must
    end as a refusal (PcapsenseError) or a result; a cut stream is always partial."""
    packed = COMPRESSORS[codec](seed_pcap())
    path = tmp_path / f"damaged.{codec}"
    for pos in range(0, len(packed), stride):
        cut = analyze_prefix(path, packed, pos, {})
        if cut is not None:
            assert cut.capture["partial"], f"{codec} cut at {pos} of {len(packed)} is not marked partial"
        flipped = packed[:pos] + bytes([packed[pos] ^ 0xFF]) + packed[pos + 1 :]
        result = analyze_prefix(path, flipped, len(flipped), {})
        if result is not None:
            assert result.capture["packets"] <= SEED_PACKETS


@pytest.mark.parametrize("codec", list(COMPRESSORS))
def test_damaged_compressed_capture(tmp_path: Path, codec: str) -> None:
    sweep_compressed(tmp_path, codec, stride=13)


@soak_tier
@pytest.mark.parametrize("codec", list(COMPRESSORS))
def test_damaged_compressed_capture_soak(tmp_path: Path, codec: str) -> None:
    sweep_compressed(tmp_path, codec, stride=1)


@pytest.mark.parametrize("codec", list(COMPRESSORS))
def test_cut_compressed_capture_keeps_what_was_decompressed(tmp_path: Path, codec: str) -> None:
    """P3 for compressed input: the records that decompress completely before the cut are analysed.

    The ground truth is what an incremental decompressor yields from the cut stream (what `zcat` prints); a cut
    in the last bytes (the gzip CRC trailer, the xz index) loses no packet at all."""
    raw = seed_pcap()
    packed = COMPRESSORS[codec](raw)
    units = pcap_units(raw)
    decompressor = {"gzip": lambda: zlib.decompressobj(31), "bzip2": bz2.BZ2Decompressor,
                    "xz": lzma.LZMADecompressor}[codec]
    path = tmp_path / f"cut.{codec}"
    for cut in (len(packed) - 4, len(packed) * 3 // 4):
        available = len(decompressor().decompress(packed[:cut]))
        result = analyze_prefix(path, packed, cut, {})
        if available < 24:  # not even the file header decompresses (bzip2 works in whole blocks): refused
            assert result is None, (codec, cut, available)
            continue
        assert result is not None, (codec, cut, available)
        survivors = sum(unit.end <= available for unit in units)
        assert result.capture["packets"] == survivors, (codec, cut, available, result.capture["fault"])


# -------------------------------------------------------------------------- length fields at boundaries


def pcap_boundary_cases() -> list[tuple[str, bytes, Expect]]:
    """caplen of the first, a middle and the last record; wirelen; the file header's snaplen and link type."""
    data = seed_pcap()
    offsets = pcap_records(data)
    cases = []
    for k in (1, SEED_PACKETS // 2, SEED_PACKETS):
        off = offsets[k - 1]
        original = struct.unpack_from("<I", data, off + 8)[0]
        for value in BOUNDARY_VALUES:
            if value > MAX_CAPLEN:
                expect = Expect(partial=True, packets=k - 1, fault_record=k, fault_offset=off,
                                message=f"caplen {value} exceeds maximum {MAX_CAPLEN}")
            elif value > len(data) - off - 16:
                expect = Expect(partial=True, packets=k - 1, fault_record=k, fault_offset=off, message="truncated")
            else:  # shorter than the real record: the walk desynchronises and must notice (P7)
                assert value < original
                expect = Expect(partial=True, min_packets=k, min_fault_record=k + 1)
            cases.append((f"caplen-r{k}-{value:#x}.pcap", put_u32(data, off + 8, value), expect))
    middle = offsets[SEED_PACKETS // 2]
    for value in BOUNDARY_VALUES:
        whole = Expect(partial=False, packets=SEED_PACKETS)
        cases.append((f"wirelen-{value:#x}.pcap", put_u32(data, middle + 12, value), whole))
        cases.append((f"snaplen-{value:#x}.pcap", put_u32(data, 16, value), whole))
        cases.append((f"linktype-{value:#x}.pcap", put_u32(data, 20, value), whole))
    return cases


def pcapng_boundary_cases() -> list[tuple[str, bytes, Expect]]:
    """Block total length (header and trailer) of every kind of block, and an EPB's caplen and interface id."""
    data = seed_pcapng()
    blocks = pcapng_blocks(data)
    epbs = [i for i, blk in enumerate(blocks) if blk.type == 6]
    cases = []
    for i, blk in enumerate(blocks):
        before = sum(other.type == 6 for other in blocks[:i])
        exact = {"partial": True, "packets": before, "fault_record": i + 1, "fault_offset": blk.offset}
        for value in BOUNDARY_VALUES:
            cases.append((f"blocklen-b{i}-{value:#x}.pcapng", put_u32(data, blk.offset + 4, value, blk.order),
                          Expect(**exact, message="block total length")))
            if i == epbs[1]:
                trailer = put_u32(data, blk.offset + blk.length - 4, value, blk.order)
                cases.append((f"trailer-b{i}-{value:#x}.pcapng", trailer, Expect(**exact, message="trailer")))
                room = blk.length - 32
                if value > MAX_CAPLEN or value > room:
                    caplen = Expect(**exact, message=f"caplen {value} exceeds")
                else:
                    caplen = Expect(partial=False, packets=SEED_PACKETS)
                cases.append((f"epbcaplen-b{i}-{value:#x}.pcapng", put_u32(data, blk.offset + 20, value, blk.order),
                              caplen))
                if value >= 2:  # 0 and 1 are declared; 0 is test_pcapng_timestamp_at_boundary_values' business
                    iface = Expect(**exact, message=f"packet for interface {value}, but the section declares 2")
                    cases.append((f"iface-b{i}-{value:#x}.pcapng", put_u32(data, blk.offset + 8, value, blk.order),
                                  iface))
    return cases


def test_pcap_length_fields_at_boundary_values(tmp_path: Path) -> None:
    run_batch(tmp_path, pcap_boundary_cases())


def test_pcapng_length_fields_at_boundary_values(tmp_path: Path) -> None:
    run_batch(tmp_path, pcapng_boundary_cases())


@pytest.mark.parametrize("value", [0, 0xFFFFFFFF])
def test_pcapng_bad_block_length_on_stdin(value: int) -> None:
    """T-14: a block length read from a pipe (1 MiB chunks, no file size) faults at the same place as from a file,
    and never swallows the rest of the stream."""
    data = seed_pcapng()
    blk = pcapng_blocks(data)[4]
    run = run_cli(["-"], stdin=put_u32(data, blk.offset + 4, value, blk.order), timeout=120)
    doc = check_promises(run)["<stdin>"]
    assert (doc["capture"]["fault"]["record"], doc["capture"]["fault"]["offset"]) == (5, blk.offset)
    assert doc["capture"]["packets"] == 1


def test_truncated_record_on_stdin() -> None:
    """A pipe delivers the cut record in pieces: the fault is still the cut record, at its byte offset."""
    data = seed_pcap()
    offsets = pcap_records(data)
    run = run_cli(["-"], stdin=data[: offsets[10] + 30], timeout=120)
    doc = check_promises(run)["<stdin>"]
    assert (doc["capture"]["fault"]["record"], doc["capture"]["fault"]["offset"]) == (11, offsets[10])
    assert doc["capture"]["packets"] == 10


def test_decompression_cap_is_a_fault(tmp_path: Path) -> None:
    """`--max-decompressed` ends a compression bomb (256 MiB of zero-length records in about 1 MB of gzip) as a named
    fault with a partial result, not an endless analysis."""
    bomb = tmp_path / "bomb.pcap.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(pcap_header())
        zeros = bytes(2**20)
        for _ in range(256):
            out.write(zeros)
    run = run_cli([bomb], timeout=120, extra=["--max-decompressed", "1000000"])
    doc = check_promises(run)[str(bomb)]
    assert doc["capture"]["partial"] and "exceeds the cap of 1000000 bytes" in doc["capture"]["fault"]["message"]


def test_million_empty_records_in_bounded_time(tmp_path: Path) -> None:
    """T-08: one million zero-length records (16 MB) cost CPU only: counted as malformed frames, done in seconds."""
    path = tmp_path / "empty-records.pcap"
    path.write_bytes(pcap_header() + pcap_record(b"") * 1_000_000)
    run = run_cli([path], timeout=60)
    doc = check_promises(run)[str(path)]
    assert doc["capture"]["packets"] == 1_000_000 and not doc["capture"]["partial"]
    assert doc["stats"]["malformed"] == {"truncated-link-header": 1_000_000}


def _idb_with(option: int, value: bytes) -> bytes:
    """An Ethernet IDB carrying one option (if_tsresol = 9, if_tsoffset = 14) and the end-of-options marker."""
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", option, len(value)) + value
    return pcapng_block(1, body + b"\x00" * (-len(value) % 4) + b"\x00\x00\x00\x00")


def test_pcapng_timestamp_at_boundary_values(tmp_path: Path) -> None:
    """Timestamps whose nanoseconds do not fit in 64 bits are survived and named, never a crash: an EPB's high word
    at boundary values on the microsecond and on the nanosecond interface, a nanosecond EPB re-pointed at the
    microsecond interface, and interfaces whose if_tsresol (1 s, 10^-127 s, 2^-127 s) or if_tsoffset (+-2^62 s)
    scale ordinary timestamps out of range."""
    data = seed_pcapng()
    blocks = pcapng_blocks(data)
    whole = Expect(partial=False, packets=SEED_PACKETS)
    clamped = Expect(partial=False, packets=SEED_PACKETS, warning=OUT_OF_RANGE)
    cases = []
    for i, overflowing in ((3, (0x7FFFFFFF, 0xFFFFFFFF)), (4, (0xFFFFFFFF,))):  # microsecond, nanosecond EPB
        for value in BOUNDARY_VALUES:
            mutant = put_u32(data, blocks[i].offset + 12, value, blocks[i].order)
            cases.append((f"ts-b{i}-{value:#x}.pcapng", mutant, clamped if value in overflowing else whole))
    cases.append(("ns-epb-on-us-iface.pcapng", put_u32(data, blocks[4].offset + 8, 0), clamped))
    frame = ethernet_udp()
    idbs = {"tsresol-1s": (_idb_with(9, b"\x00"), OUT_OF_RANGE), "tsresol-1e-127": (_idb_with(9, b"\x7f"), ""),
            "tsresol-2e-127": (_idb_with(9, b"\xff"), ""),
            "tsoffset-plus": (_idb_with(14, struct.pack("<q", 2**62)), OUT_OF_RANGE),
            "tsoffset-minus": (_idb_with(14, struct.pack("<q", -(2**62))), OUT_OF_RANGE)}
    cases += [(f"{name}.pcapng", pcapng_shb() + idb + pcapng_epb(frame) * 2,
               Expect(partial=False, packets=2, warning=warning)) for name, (idb, warning) in idbs.items()]
    run_batch(tmp_path, cases)


# -------------------------------------------------------------------------------------------- whole files


def test_odd_whole_files(tmp_path: Path) -> None:
    """Empty, header-only, text, random bytes, a capture header followed by random bytes, compressed garbage."""
    rng = random.Random(3)
    noise = rng.randbytes(4096)
    ng_header = pcapng_shb() + pcapng_idb()
    cases = [
        ("empty.pcap", b"", Expect(unusable=True)),
        ("text.pcap", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" * 20, Expect(unusable=True)),
        ("random.bin", noise, Expect(unusable=True)),
        ("zip.pcap", b"PK\x03\x04" + noise[:200], Expect(unusable=True)),
        ("header-only.pcap", pcap_header(), Expect(partial=False, packets=0)),
        ("header-only-nsec-be.pcap", struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1),
         Expect(partial=False, packets=0)),
        ("header-only-modified.pcap", pcap_header(magic=0xA1B2CD34), Expect(partial=False, packets=0)),
        ("shb-only.pcapng", pcapng_shb(), Expect(partial=False, packets=0)),
        ("shb-idb-only.pcapng", ng_header, Expect(partial=False, packets=0)),
        ("header-then-noise.pcap", pcap_header() + noise, Expect(partial=True, fault_record=1, fault_offset=24)),
        ("shb-idb-then-noise.pcapng", ng_header + noise,
         Expect(partial=True, packets=0, fault_record=3, fault_offset=len(ng_header))),
        ("gzip-of-noise.gz", gzip.compress(noise, mtime=0), Expect(unusable=True)),
        ("gzip-of-nothing.gz", gzip.compress(b"", mtime=0), Expect(unusable=True)),
        ("bad-gzip-header.gz", b"\x1f\x8b" + noise[:100], Expect(unusable=True)),
        ("xz-of-text.xz", lzma.compress(b"hello\n" * 100), Expect(unusable=True)),
        ("bzip2-then-noise.bz2", b"BZh9" + noise[:100], Expect(unusable=True)),
        ("zero-records.pcap", pcap_header() + pcap_record(b"") * 1000, Expect(partial=False, packets=1000)),
    ]
    run_batch(tmp_path, cases)


MAGICS = {
    "pcap": [struct.pack("<I", 0xA1B2C3D4), struct.pack("<I", 0xA1B23C4D), struct.pack(">I", 0xA1B2C3D4),
             struct.pack("<I", 0xA1B2CD34)],
    "pcapng": [b"\x0a\x0d\x0d\x0a"],
    "gzip-bzip2": [b"\x1f\x8b", b"BZh"],
    "xz": [b"\xfd7zXZ\x00"],
}


@pytest.mark.parametrize("family", list(MAGICS))
def test_random_bytes_after_every_magic(tmp_path: Path, family: str) -> None:
    """Random bytes behind each magic the reader recognises (pcap in four variants, pcapng, the compressions)."""
    rng = random.Random(11)
    cases = [(f"noise-{i}-{seed}.bin", head + rng.randbytes(rng.choice((20, 500, 5000))), Expect(unusable=None))
             for i, head in enumerate(MAGICS[family]) for seed in range(4)]
    run_batch(tmp_path, cases)


# -------------------------------------------------------------------------------------------------- pcapng


def test_unknown_custom_and_skipped_blocks(tmp_path: Path) -> None:
    """T-13 at scale: 100,000 unknown blocks plus one of every skipped block kind between packets; all skipped,
    counted by kind, every packet kept."""
    frame = ethernet_udp()
    skipped = (pcapng_block(4, b"\x00\x00\x00\x00") + pcapng_block(5, struct.pack("<IIII", 0, 0, 0, 0))
               + pcapng_block(0xA, struct.pack("<II", 0x544C534B, 0)) + pcapng_block(0xBAD, b"\x00\x00\x7e\xd9abc")
               + pcapng_block(0x40000BAD, b"\x00\x00\x7e\xd9") + pcapng_block(9, b"MESSAGE=x")
               + pcapng_block(0x80000001, b"local use"))
    data = (pcapng_shb() + pcapng_idb() + pcapng_epb(frame) + pcapng_block(0x0BADBEEF, b"") * 100_000
            + pcapng_epb(frame) + skipped + pcapng_epb(frame))
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(data)
    doc = check_promises(run_cli([path], timeout=120))[str(path)]
    assert doc["capture"]["packets"] == 3 and not doc["capture"]["partial"]
    warnings = set(doc["capture"]["warnings"])
    for expected in ("skipped unknown blocks: 100001", "skipped name resolution blocks: 1",
                     "skipped interface statistics blocks: 1", "skipped decryption secrets blocks: 1",
                     "skipped custom blocks: 2", "skipped systemd journal blocks: 1"):
        assert expected in warnings, warnings


def test_packets_for_undeclared_interfaces(tmp_path: Path) -> None:
    """An interface id is only valid within its section: each of these is a fault at the offending block."""
    frame = ethernet_udp()
    shb, idb = pcapng_shb(), pcapng_idb()
    pb = pcapng_block(2, struct.pack("<HHIIII", 3, 0, 0, 0, len(frame), len(frame)) + frame)
    spb = pcapng_block(3, struct.pack("<I", len(frame)) + frame)
    two_ifaces = shb + idb + idb + pcapng_epb(frame, iface=1)
    cases = [
        ("epb-before-idb.pcapng", shb + pcapng_epb(frame),
         Expect(partial=True, packets=0, fault_record=2, fault_offset=len(shb), message="section declares 0")),
        ("spb-before-idb.pcapng", shb + spb,
         Expect(partial=True, packets=0, fault_record=2, fault_offset=len(shb), message="simple packet block")),
        ("pb-bad-iface.pcapng", shb + idb + pcapng_epb(frame) + pb,
         Expect(partial=True, packets=1, fault_record=4, fault_offset=len(shb + idb) + len(pcapng_epb(frame)),
                message="packet for interface 3")),
        ("iface-of-previous-section.pcapng", two_ifaces + shb + idb + pcapng_epb(frame, iface=1),
         Expect(partial=True, packets=1, fault_record=7, fault_offset=len(two_ifaces + shb + idb),
                message="packet for interface 1, but the section declares 1")),
        ("idb-after-packets.pcapng", shb + idb + pcapng_epb(frame) + idb + pcapng_epb(frame, iface=1),
         Expect(partial=False, packets=2)),
    ]
    run_batch(tmp_path, cases)


# ------------------------------------------------------------------------------------------ packet content


def _nested(depth: int, wrap: Callable[[bytes, int], bytes]) -> bytes:
    inner = b.udp("10.9.9.1", "10.9.9.2", 1, 2, b"deep")
    inner = b.ipv4("10.9.9.1", "10.9.9.2", b.PROTO_UDP, inner)
    for level in range(depth):
        inner = wrap(inner, level)
    return inner


def _gre(inner: bytes, level: int) -> bytes:
    ethertype = 0x0800 if inner[0] >> 4 == 4 else 0x86DD
    return b.ipv4("10.8.0.1", "10.8.0.2", 47, struct.pack("!HH", 0, ethertype) + inner)


def _six_in_four(inner: bytes, level: int) -> bytes:
    if level % 2:
        return b.ipv4("10.7.0.1", "10.7.0.2", 41, inner)
    return b.ipv6("2001:db8::1", "2001:db8::2", 4, inner)


def test_deep_encapsulation(tmp_path: Path) -> None:
    """Beyond test_bad_input's IP-in-IP and VLAN stacks: GRE-in-GRE, alternating 4in6/6in4, 5,000 IPv6 extension
    headers, 10,000 QinQ tags and a 262,144-byte frame of VLAN tags. Each is one counted malformed packet (or a
    decoded one); the good packet after them is decoded."""
    mac_pair = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    ext_chain = b"".join(struct.pack("!BB6x", 60, 0) for _ in range(4999)) + struct.pack("!BB6x", 17, 0)
    udp6 = b.udp("2001:db8::1", "2001:db8::2", 1, 2, b"x")
    frames = [
        mac_pair + b"\x08\x00" + _nested(300, _gre),
        mac_pair + b"\x86\xdd" + _nested(301, _six_in_four),
        mac_pair + b"\x86\xdd" + b.ipv6("2001:db8::1", "2001:db8::2", 60, ext_chain + udp6),
        mac_pair + b"\x88\xa8\x00\x01" * 10_000 + b"\x08\x00" + ethernet_udp()[14:],
        (mac_pair + b"\x81\x00\x00\x01" * (MAX_CAPLEN // 4))[:MAX_CAPLEN],
        ethernet_udp(),
    ]
    path = tmp_path / "nested.pcap"
    path.write_bytes(pcap_header(snaplen=MAX_CAPLEN) + b"".join(pcap_record(f) for f in frames))
    doc = check_promises(run_cli([path], timeout=120))[str(path)]
    assert doc["capture"]["packets"] == len(frames) and not doc["capture"]["partial"]
    malformed = doc["stats"]["malformed"]
    assert malformed.get("too-many-layers", 0) >= 2 and malformed.get("too-many-vlan-tags", 0) == 2, malformed
    assert doc["stats"]["protocols"]["udp"] >= 1


def _dns_header(flags: int = 0x0100, qd: int = 1, an: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x4242, flags, qd, an, 0, 0)


HOSTILE_DNS = {
    "pointer-to-itself": _dns_header() + b"\xc0\x0c\x00\x01\x00\x01",
    "two-pointer-loop": _dns_header(0x8180, an=1) + b"\xc0\x12\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01",
    "loop-through-label": _dns_header() + b"\x01a\xc0\x0c\x00\x01\x00\x01",
    "forward-pointer": _dns_header() + b"\xc0\x40\x00\x01\x00\x01" + bytes(60),
    "label-type-0x40": _dns_header() + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01",
    "label-type-0x80": _dns_header() + b"\x81" + b"a" * 1 + b"\x00\x00\x01\x00\x01",
    "name-over-255": _dns_header() + (b"\x3f" + b"n" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    "cut-in-label": _dns_header() + b"\x3fabc",
    "qdcount-65535": _dns_header(qd=0xFFFF) + b"\x01a\x00\x00\x01\x00\x01",
    "ancount-65535": _dns_header(0x8180, an=0xFFFF) + b"\x01a\x00\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01"
    + struct.pack("!IH", 60, 4) + b"\x01\x02\x03\x04",
    "rdlength-past-end": _dns_header(0x8180, an=1) + b"\x01a\x00\x00\x01\x00\x01" + b"\xc0\x0c\x00\x05\x00\x01"
    + struct.pack("!IH", 60, 0xFFFF) + b"\x01",
    "non-utf8-label": _dns_header() + b"\x04\xff\xfe\xc0\x80\x00\x00\x01\x00\x01",
    "header-only": _dns_header(qd=0),
    "short-header": b"\x42\x42\x01",
    "empty": b"",
}


def test_hostile_dns_end_to_end(tmp_path: Path) -> None:
    """DNS compression loops, forward pointers, reserved label types, oversized names and counts, over UDP and
    TCP (with a length prefix that lies), through the whole pipeline: counted as malformed kinds, never fatal."""
    client, server = "10.0.0.1", "10.0.0.53"
    frames = []
    for i, message in enumerate(HOSTILE_DNS.values()):
        udp = b.udp(client, server, 40000 + i, 53, message)
        frames.append(b.ethernet(b"\x02" * 6, b"\x04" * 6, b.ETH_IPV4, b.ipv4(client, server, b.PROTO_UDP, udp)))
        prefix = struct.pack("!H", 0xFFFF if i % 2 else len(message))
        tcp = b.tcp(client, server, 50000 + i, 53, 1, 1, b.PSH | b.ACK, prefix + message)
        frames.append(b.ethernet(b"\x02" * 6, b"\x04" * 6, b.ETH_IPV4, b.ipv4(client, server, b.PROTO_TCP, tcp)))
    path = tmp_path / "dns.pcap"
    path.write_bytes(pcap_header() + b"".join(pcap_record(f, ts=1700000000 + i / 10) for i, f in enumerate(frames)))
    doc = check_promises(run_cli([path], timeout=120))[str(path)]
    malformed = doc["stats"]["malformed"]
    for kind in ("dns-pointer-loop", "dns-forward-pointer", "dns-label-too-long", "dns-name-too-long",
                 "dns-truncated"):
        assert malformed.get(kind, 0) >= 1, (kind, malformed)


# ----------------------------------------------------------------------------------- mutation corpora


def editcap_corpus(samples: Path, out: Path, seeds: range, rates: Sequence[float]) -> list[Path]:
    """`editcap -E` of every sample capture, as pcap (`-F pcap`) and as pcapng, for each seed and rate."""
    paths = []
    for i, src in enumerate(sorted(p for p in samples.iterdir() if ".pcap" in p.name)):
        for seed in seeds:
            for rate in rates:
                for pcapng in (False, True):
                    name = f"{src.name}-s{seed + i}-e{rate}.{'pcapng' if pcapng else 'pcap'}"
                    paths.append(editcap_mutant(src, out / name, seed=seed + i, rate=rate, pcapng=pcapng))
    return paths


@needs_editcap
def test_editcap_byte_errors(samples: Path, tmp_path: Path) -> None:
    """Every sample capture with 2% of its packet bytes randomised, as pcap and as pcapng (seed differs per file)."""
    analyze_all(editcap_corpus(samples, tmp_path, range(1, 2), [0.02]))


@soak_tier
@needs_editcap
def test_editcap_byte_errors_soak(samples: Path, tmp_path: Path) -> None:
    """Wireshark's nightly parameters, scaled: seeds 1..4N at 2% and 10% byte errors over every sample."""
    analyze_all(editcap_corpus(samples, tmp_path, range(1, 1 + 4 * soak_scale()), [0.02, 0.1]), batch=100)


def container_corpus(samples: Path, out: Path, count: int, seed: int) -> list[Path]:
    """Set D of the research note: bit flips, random cuts and length fields set to boundary values, over the two
    seeds and the small sample captures. Each file name says which mutation made it."""
    rng = random.Random(seed)
    bases = [("seed.pcap", seed_pcap()), ("seed.pcapng", seed_pcapng())]
    bases += [(p.name, p.read_bytes()) for p in sorted(samples.iterdir())
              if p.suffix in (".pcap", ".pcapng") and p.stat().st_size < 50_000]
    named = []
    for i in range(count):
        name, data = rng.choice(bases)
        label, mutant = container_mutant(data, rng)
        named.append((f"d{i}-{label}-{name}", mutant))
    return write_all(out, named)


def test_container_mutations(samples: Path, tmp_path: Path) -> None:
    analyze_all(container_corpus(samples, tmp_path, 120, seed=7))


@soak_tier
def test_container_mutations_soak(samples: Path, tmp_path: Path) -> None:
    """A fixed seed, so a larger scale extends the same sequence of mutants: what a bounded run found, a longer
    one finds again (mutant d25 flipped a pcapng timestamp past int64 nanoseconds)."""
    analyze_all(container_corpus(samples, tmp_path, 1000 * soak_scale(), seed=1001), batch=100)


@needs_randpkt
def test_randpkt(tmp_path: Path) -> None:
    """Random packets of every protocol randpkt knows (link types from Token Ring to USB), 100 each."""
    analyze_all([randpkt_capture(tmp_path / f"{t}.pcap", t, count=100, max_bytes=1500) for t in RANDPKT_TYPES])


@soak_tier
@needs_randpkt
def test_randpkt_soak(tmp_path: Path) -> None:
    """Wireshark CI's randpkt parameters (2000 bytes, 5000 packets per type) for 3N passes."""
    paths = [randpkt_capture(tmp_path / f"{t}-{n}.pcap", t, count=5000, max_bytes=2000)
             for n in range(3 * soak_scale()) for t in RANDPKT_TYPES]
    analyze_all(paths, batch=25)


# -------------------------------------------------------------------------------------------- regressions


REGRESSIONS: dict[str, Expect] = {
    "xz-corrupt-block.pcap.xz": Expect(unusable=None, partial=True),
    "gzip-cut-in-trailer.pcap.gz": Expect(partial=True, packets=SEED_PACKETS),
    "pcapng-timestamp-overflow.pcapng": Expect(partial=False, packets=3, warning=OUT_OF_RANGE),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_captures(name: str) -> None:
    """Every crasher found by these tests, kept as a capture (described in tests/regress/README.md)."""
    path = REGRESS / name
    docs = check_promises(run_cli([path], timeout=120))
    verify(docs, path, REGRESSIONS[name])


def test_every_regression_capture_is_listed() -> None:
    on_disk = {p.name for p in REGRESS.iterdir() if p.name != "README.md"}
    assert on_disk == set(REGRESSIONS)
    readme = (REGRESS / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in on_disk)
