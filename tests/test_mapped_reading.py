"""Regular uncompressed files are read through mappings of the file, not read() into buffers: the same batches,
bytes, offsets and faults, mappings let go as batches are dropped, and (forked) packet bytes sent as file ranges.

Tiny chunks and pieces put records across window ends (a window then starts at the page holding the carried
tail), and the forked tests read in 4 KiB chunks from the first batch on, as tests/test_readahead.py does.
"""

from __future__ import annotations

import faulthandler
import gc
import gzip
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pcapsense.readahead as readahead
import pcapsense.reader.chunks as reader_chunks
import pcapsense.reader.open as reader_open
from pcapsense.decode.columns import POSITION_COLUMNS, Packets
from pcapsense.reader import open_capture
from pcapsense.reader.batch import RawBatch
from pcapsense.reader.chunks import ChunkStream, MappedChunks, can_map
from tests.conftest import ethernet_udp, pcap_header, pcap_record
from tests.test_reader import CAPTURES, SIZES, _pcap

RECORDS = [pcap_record(ethernet_udp(bytes([i % 251]) * (i * 53 % 700), src=i % 200 + 1), ts=1_700_000_000 + i)
           for i in range(300)]


def _batches(path: Path, mapped: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[type, list[tuple], tuple]:
    """Every batch as plain values (its bytes too), and what the reader learned, from a mapped or a read stream."""
    with monkeypatch.context() as patch:
        if not mapped:
            patch.setattr(reader_open, "can_map", lambda fd: False)
        opened = open_capture(str(path))
    kind = type(opened.reader.chunks)
    batches = [(batch.data.tobytes(), *(column.tolist() for column in (batch.offset, batch.caplen, batch.wirelen,
                                                                     batch.ts_ns, batch.frame, batch.iface)))
               for batch in opened.reader.batches()]
    opened.close()
    reader = opened.reader
    return kind, batches, (reader.fault, reader.counters, reader.records, reader.warnings, reader.interfaces,
                           reader.chunks.base, reader.chunks.error)


def _assert_same_reading(path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, piece: int) -> list[tuple]:
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(reader_chunks, "PIECE_BYTES", piece)
    mapped_kind, mapped, mapped_state = _batches(path, True, monkeypatch)
    read_kind, read, read_state = _batches(path, False, monkeypatch)
    assert (mapped_kind, read_kind) == (MappedChunks, ChunkStream)
    assert mapped == read, path.name
    assert mapped_state == read_state, path.name
    return mapped


@pytest.mark.parametrize("name", sorted(CAPTURES))
@pytest.mark.parametrize(("chunk", "piece"), SIZES)
def test_mapped_and_read_streams_give_the_same_batches(name: str, chunk: int, piece: int, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """pcap and pcapng, intact and with faults mid-run (caplen, cut record, bad lengths): identical batch bytes,
    offsets, timestamps, frame numbers, faults (record, offset, message) and counters."""
    path = tmp_path / name
    path.write_bytes(CAPTURES[name][0]())
    batches = _assert_same_reading(path, monkeypatch, chunk, piece)
    assert sum(len(batch[1]) for batch in batches) > 50


def test_every_sample_reads_the_same_mapped(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captures = sorted(p for p in samples.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert len(captures) >= 40
    for path in captures:
        for chunk, piece in ((16 * 2**20, 2**20), (1000, 100), (4096, 4096)):
            _assert_same_reading(path, monkeypatch, chunk, piece)


@pytest.mark.parametrize("cut", [24 + 7, 24 + 16 + 5, 5000, 9001, -1])
def test_captures_cut_mid_record_fault_alike(cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut inside a record header, inside packet data, and one byte short of the end."""
    data = pcap_header() + b"".join(RECORDS)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    for chunk, piece in ((1000, 100), (4096, 512), (16 * 2**20, 2**20)):
        _assert_same_reading(path, monkeypatch, chunk, piece)
    _, _, (fault, *_rest) = _batches(path, True, monkeypatch)
    assert fault is not None and "truncated record" in fault.message


@pytest.mark.parametrize("record", [0, 1, 77, 299])
def test_a_bad_caplen_faults_alike(record: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = 24 + sum(len(r) for r in RECORDS[:record]) + 8
    data = bytearray(pcap_header() + b"".join(RECORDS))
    data[at : at + 4] = (2**31 + 5).to_bytes(4, "little")
    path = tmp_path / "caplen.pcap"
    path.write_bytes(bytes(data))
    for chunk, piece in ((1000, 100), (4096, 512), (16 * 2**20, 2**20)):
        batches = _assert_same_reading(path, monkeypatch, chunk, piece)
        assert sum(len(batch[1]) for batch in batches) == record
    _, _, (fault, *_rest) = _batches(path, True, monkeypatch)
    assert (fault.record, fault.offset) == (record + 1, at - 8)


def test_a_file_still_being_written_is_read_as_far_as_it_exists(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fill maps up to the size the file has then, so records appended meanwhile are read, like read()."""
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 2000)
    path = tmp_path / "growing.pcap"
    path.write_bytes(pcap_header() + b"".join(RECORDS[:100]))
    opened = open_capture(str(path))
    assert isinstance(opened.reader.chunks, MappedChunks)
    batches = opened.reader.batches()
    frames = next(batches).frame.tolist()
    with path.open("ab") as out:
        out.write(b"".join(RECORDS[100:]))
    frames += [frame for batch in batches for frame in batch.frame.tolist()]
    opened.close()
    assert frames == list(range(1, 301))
    assert opened.reader.fault is None


def test_only_regular_uncompressed_files_opened_by_path_are_mapped(samples: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plain = samples / "healthy.pcap"
    gz = tmp_path / "healthy.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    kinds = {}
    for name, path in (("file", plain), ("gzip", gz)):
        opened = open_capture(str(path))
        kinds[name] = type(opened.reader.chunks)
        opened.close()
    with plain.open("rb") as raw:  # stdin redirected from a regular file is still read
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
        opened = open_capture("-")
        kinds["stdin"] = type(opened.reader.chunks)
        frames = sum(len(batch) for batch in opened.reader.batches())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(plain.read_bytes(),))
    writer.start()
    opened = open_capture(str(fifo))
    kinds["fifo"] = type(opened.reader.chunks)
    fifo_frames = sum(len(batch) for batch in opened.reader.batches())
    opened.close()
    writer.join()
    assert kinds == {"file": MappedChunks, "gzip": ChunkStream, "stdin": ChunkStream, "fifo": ChunkStream}
    assert frames == fifo_frames > 0


def test_an_empty_file_cannot_be_mapped(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.write_bytes(b"")
    full.write_bytes(b"x" * 10)
    with empty.open("rb") as a, full.open("rb") as b:
        assert (can_map(a.fileno()), can_map(b.fileno())) == (False, True)


def _mappings_of(path: Path) -> int:
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip().endswith(str(path)) for line in maps)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_windows_are_unmapped_as_batches_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat in capture length: only the window being walked and the batch in hand stay mapped."""
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 4096)
    path = tmp_path / "long.pcap"
    path.write_bytes(_pcap(records=2000))
    opened = open_capture(str(path))
    live = []
    count = 0
    for batch in opened.reader.batches():
        count += 1
        live.append(_mappings_of(path))
        del batch
    opened.close()
    del opened
    gc.collect()
    assert count > 100
    assert max(live) <= 2
    assert _mappings_of(path) == 0


# -- forked read-ahead: packet bytes travel as file ranges ---------------------------------------------------

needs_fork = pytest.mark.skipif(not readahead.can_fork(), reason="needs os.fork, two CPUs and a single thread")


@pytest.fixture
def forked_small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Fork from the first batch, read 4 KiB chunks joined into engine batches of ENGINE_BATCH_ROWS = 100
    packets, and record the file ranges mapped for joined batches (in the parent, or in-process)."""
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", 0)
    monkeypatch.setattr(readahead, "ENGINE_BATCH_ROWS", 100)
    ranges: list[tuple[int, int]] = []
    real = MappedChunks.file_bytes

    def recording(self: MappedChunks, offset: int, length: int) -> np.ndarray:
        ranges.append((offset, length))
        return real(self, offset, length)

    monkeypatch.setattr(MappedChunks, "file_bytes", recording)
    return ranges


def _messages(batch: readahead.Decoded) -> list[tuple]:
    """The batch's DNS messages by frame number (rows are batch positions, frames are not)."""
    frames = batch.packets.frame[batch.dns.rows].tolist()
    columns = [list(np.asarray(values).tolist()) for values in batch.dns.columns.values()]
    return [*zip(frames, *columns, strict=True), sorted(batch.dns.malformed.items())]


def _packets(path: Path, parallel: bool) -> Iterator[list]:
    """Every decoded column of every batch, the bytes that the positions into `data` point at, and the batch's
    DNS messages."""
    opened = open_capture(str(path))
    try:
        for batch in readahead.decoded_batches(opened.reader, parallel=parallel):
            pk = batch.packets
            columns = [getattr(pk, name).tolist() for name in readahead.PACKET_FIELDS if name != "data"]
            frames = [pk.data[s:e].tobytes() for s, e in zip(pk.start.tolist(), pk.end.tolist(), strict=True)]
            payloads = [pk.payload(row) for row in range(len(pk))]
            yield [*columns, frames, payloads, _messages(batch)]
    finally:
        opened.close()


@needs_fork
def test_forked_batches_view_the_same_bytes_as_in_process(samples: Path, tmp_path: Path,
                                                          forked_small_chunks: list[tuple[int, int]]) -> None:
    """The parent maps the range the child sent: positions into `data` must point at the very same bytes."""
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap_header() + b"".join(RECORDS)[:-9])
    for path in (samples / "tls_healthy.pcap", samples / "asym_routing_ifaces.pcapng", samples / "syn_flood.pcap",
                 cut):
        shipped = len(forked_small_chunks)
        assert list(_packets(path, parallel=True)) == list(_packets(path, parallel=False)), path.name
        assert len(forked_small_chunks) > shipped, f"{path.name}: no batch travelled as a file range"
    assert len(forked_small_chunks) > 50
    assert all(length > 0 for _, length in forked_small_chunks)


def _rows(path: Path, parallel: bool) -> tuple[list[list], list[tuple]]:
    """Every packet's values, positions into `data` replaced by the bytes they point at (and l3, l4 by their
    distance from the frame's start), and every DNS message: what must not change when batches are joined."""
    opened = open_capture(str(path))
    rows: list[list] = []
    messages: list[tuple] = []
    try:
        for batch in readahead.decoded_batches(opened.reader, parallel=parallel):
            pk = batch.packets
            messages.extend(_messages(batch)[:-1])
            values = [getattr(pk, name).tolist() for name in readahead.PACKET_FIELDS
                      if name != "data" and name not in POSITION_COLUMNS]
            inner = [np.where(pk.l3 >= 0, pk.l3 - pk.start, -1).tolist(),
                     np.where(pk.l4 >= 0, pk.l4 - pk.start, -1).tolist()]
            frames = [pk.data[s:e].tobytes() for s, e in zip(pk.start.tolist(), pk.end.tolist(), strict=True)]
            payloads = [pk.payload(row) for row in range(len(pk))]
            rows.extend(map(list, zip(*values, *inner, frames, payloads, strict=True)))
    finally:
        opened.close()
    return rows, messages


@needs_fork
def test_joined_batches_hold_the_same_packets_as_the_chunks_they_join(
        samples: Path, forked_small_chunks: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FORK_AFTER_BYTES consecutive chunks of a mapped file travel as one batch over one file range; each
    part's positions move by where its bytes start in that range. Forked or not, every packet must be the same
    as when each chunk is its own batch."""
    for path in (samples / "tls_healthy.pcap", samples / "asym_routing_ifaces.pcapng", samples / "syn_flood.pcap"):
        with monkeypatch.context() as patch:
            patch.setattr(readahead, "FORK_AFTER_BYTES", 2**62)
            alone = _rows(path, parallel=False)
        joined = len(forked_small_chunks)
        assert _rows(path, parallel=True) == alone, path.name
        assert _rows(path, parallel=False) == alone, path.name
        assert len(forked_small_chunks) > joined, f"{path.name}: no batches were joined"


@needs_fork
def test_engine_batches_join_chunks_up_to_the_row_target(
        samples: Path, forked_small_chunks: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of at least FORK_AFTER_BYTES joins its chunks from the first on until ENGINE_BATCH_ROWS packets,
    never beyond MAX_BATCH_ROWS (a chunk that would overflow it starts the next batch); only the last batch may
    fall short. A smaller file keeps its chunks as they are."""
    monkeypatch.setattr(readahead, "ENGINE_BATCH_ROWS", 200)
    monkeypatch.setattr(readahead, "MAX_BATCH_ROWS", 230)
    path = samples / "syn_flood.pcap"
    opened = open_capture(str(path))
    chunk_rows = [len(batch) for batch in opened.reader.batches()]
    opened.close()

    def sizes(parallel: bool) -> list[int]:
        opened = open_capture(str(path))
        try:
            return [len(batch.packets) for batch in readahead.decoded_batches(opened.reader, parallel=parallel)]
        finally:
            opened.close()

    for parallel in (True, False):
        joined = sizes(parallel)
        assert sum(joined) == sum(chunk_rows) and max(joined) <= 230 and len(joined) < len(chunk_rows) / 3
        assert all(173 < n <= 230 for n in joined[:-1])
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", path.stat().st_size + 1)
    assert sizes(True) == sizes(False) == chunk_rows


@needs_fork
def test_a_gzip_capture_still_ships_its_bytes_in_the_slot(samples: Path,
                                                          forked_small_chunks: list[tuple[int, int]]) -> None:
    path = samples / "fmt_healthy.pcap.gz"
    assert list(_packets(path, parallel=True)) == list(_packets(path, parallel=False))
    assert forked_small_chunks == []


@needs_fork
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_the_parent_unmaps_each_batch_when_it_is_dropped(tmp_path: Path,
                                                          forked_small_chunks: list[tuple[int, int]]) -> None:
    path = tmp_path / "long.pcap"
    path.write_bytes(_pcap(records=2000))
    opened = open_capture(str(path))
    live = []
    for batch in readahead.decoded_batches(opened.reader):
        live.append(_mappings_of(path))
        del batch
    opened.close()
    assert len(forked_small_chunks) > 10
    assert max(live) <= 3


@needs_fork
def test_a_capture_cut_under_the_childs_mapping_is_a_reader_process_error(
        tmp_path: Path, forked_small_chunks: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Touching a mapped page the file no longer has raises SIGBUS: the child dies and the parent says so.

    The child cuts the file at the first page boundary inside the batch it is decoding, so that every page of the
    batches the parent already holds stays in the file."""
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 3 * 4096)
    path = tmp_path / "cut-later.pcap"
    path.write_bytes(_pcap(records=2000))
    calls = {"n": 0}
    real_decode = readahead.decode_batch
    page = os.sysconf("SC_PAGE_SIZE")

    def cutting_decode(batch: RawBatch, linktypes: np.ndarray, space: object = None) -> Packets:
        calls["n"] += 1
        if calls["n"] > 3:  # in the child, after the fork
            faulthandler.disable()  # the child's death is expected: no traceback on the test's stderr
            offset, _ = opened.reader.chunks.file_range(batch.data)
            os.truncate(path, -(-offset // page) * page + page)
        return real_decode(batch, linktypes, space)

    monkeypatch.setattr(readahead, "decode_batch", cutting_decode)
    opened = open_capture(str(path))
    try:
        with pytest.raises(readahead.ReaderProcessError, match=f"signal {signal.SIGBUS}"):
            for _ in readahead.decoded_batches(opened.reader):
                pass
    finally:
        opened.close()
