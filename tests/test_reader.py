"""The reader: formats and link types as the generator wrote them, and agreement with tshark's timestamps."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from pcapsense.reader import open_capture
from tests.conftest import TSHARK


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
