"""Bad input: one clear line naming the file (and record/offset), exit 2 or a partial result; no traceback."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    ethernet_udp,
    pcap_header,
    pcap_record,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
)

RECORD = pcap_record(ethernet_udp())
RECORD_LEN = len(RECORD)


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapsense", *args], input=stdin.decode("latin-1") if stdin else None,
                          capture_output=True, text=True, timeout=120)


def analyze_json(path: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_cli("analyze", str(path), "--format", "json", "--no-report", "-q")
    return proc, json.loads(proc.stdout) if proc.stdout else {}


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "not a pcap or pcapng file (empty)"),
    (b"hello, this is a text file\n", "not a pcap or pcapng file (magic 0x68656c6c)"),
    (pcap_header()[:23], "truncated pcap file header: 23 of 24 bytes"),
    (struct.pack("<IHH", 0xA1B2C3D4, 1, 4) + b"\x00" * 16, "pcap major version 1.4 is not supported (expected 2.x)"),
])
def test_not_a_capture_is_one_line_exit_2(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "input.pcap"
    path.write_bytes(content)
    proc = run_cli("analyze", str(path), "--no-report")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{path}: {expected}"
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    proc = run_cli("analyze", str(tmp_path / "nope.pcap"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"{tmp_path / 'nope.pcap'}: cannot open")


@pytest.mark.parametrize(("tail", "message"), [
    (pcap_record(ethernet_udp())[:10], "truncated record header: 10 of 16 bytes"),
    (pcap_record(ethernet_udp())[:40], "truncated record: 24 of 60 bytes of packet data"),
    (struct.pack("<IIII", 1700000000, 0, 0xFFFFFFFF, 60) + b"x" * 60, "caplen 4294967295 exceeds maximum 262144"),
    (struct.pack("<IIII", 1700000000, 0, 0x40001, 60) + b"x" * 60, "caplen 262145 exceeds maximum 262144"),
    (struct.pack("<IIII", 1700000000, 2_000_000, 60, 60) + ethernet_udp(), "timestamp fraction 2000000 out of range"),
])
def test_fault_mid_file_keeps_earlier_records(tmp_path: Path, tail: bytes, message: str) -> None:
    good = 3
    path = tmp_path / "damaged.pcap"
    path.write_bytes(pcap_header() + RECORD * good + tail)
    proc, doc = analyze_json(path)
    assert proc.returncode == 0
    assert doc["capture"]["partial"] is True
    assert doc["capture"]["packets"] == good
    fault = doc["capture"]["fault"]
    assert fault["record"] == good + 1
    assert fault["offset"] == 24 + good * RECORD_LEN
    assert message in fault["message"]
    assert f"record #{good + 1} at byte offset {24 + good * RECORD_LEN}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("block", "message"), [
    (struct.pack("<II", 6, 7) + b"\x00" * 8, "block total length 7 is less than the minimum of 12"),
    (struct.pack("<II", 6, 13) + b"\x00" * 16, "block total length 13 is not a multiple of 4"),
    (struct.pack("<II", 6, 0xFFFFFFF0) + b"\x00" * 16, "exceeds maximum"),
    (pcapng_epb(ethernet_udp(), iface=7), "packet for interface 7, but the section declares 1"),
    (pcapng_block(6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + b"x" * 20), "caplen 500 exceeds the 20 bytes"),
])
def test_pcapng_framing_faults(tmp_path: Path, block: bytes, message: str) -> None:
    head = pcapng_shb() + pcapng_idb()
    body = pcapng_epb(ethernet_udp()) * 2
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(head + body + block)
    proc, doc = analyze_json(path)
    assert proc.returncode == 0
    assert doc["capture"]["partial"] is True
    assert doc["capture"]["packets"] == 2
    assert doc["capture"]["fault"]["offset"] == len(head + body)
    assert doc["capture"]["fault"]["record"] == 5  # SHB, IDB, two EPBs, then the bad block
    assert message in doc["capture"]["fault"]["message"]


def test_pcapng_unknown_and_custom_blocks_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(pcapng_shb() + pcapng_idb() + pcapng_epb(ethernet_udp()) + pcapng_block(0x0BADBEEF, b"abcd")
                     + pcapng_block(0xBAD, b"\x00\x00\x00\x01data") + pcapng_epb(ethernet_udp()))
    _, doc = analyze_json(path)
    assert doc["capture"]["packets"] == 2 and not doc["capture"]["partial"]
    warnings = " | ".join(doc["capture"]["warnings"])
    assert "skipped unknown blocks: 1" in warnings and "skipped custom blocks: 1" in warnings


def test_truncated_gzip_is_partial_with_file_name(tmp_path: Path) -> None:
    data = gzip.compress(pcap_header() + RECORD * 200, mtime=0)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(data[: len(data) // 2])
    proc, doc = analyze_json(path)
    assert proc.returncode == 0
    assert doc["capture"]["partial"] is True
    assert doc["capture"]["compression"] == "gzip"
    assert "input stream failed" in doc["capture"]["fault"]["message"]


def test_stdin(tmp_path: Path) -> None:
    data = pcap_header() + RECORD * 5
    proc = subprocess.run([sys.executable, "-m", "pcapsense", "analyze", "-", "--format", "json", "-q", "--no-report"],
                          input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["capture"]["path"] == "<stdin>" and doc["capture"]["packets"] == 5


def test_unknown_link_type_is_counted_not_decoded(samples: Path) -> None:
    proc, doc = analyze_json(samples / "fmt_unknown_linktype.pcap")
    assert proc.returncode == 0
    assert doc["stats"]["protocols"]["unknown_link_type"] == doc["capture"]["packets"] > 0
    assert doc["stats"]["protocols"]["ipv4"] == 0
    assert any("unsupported link type 147" in w for w in doc["capture"]["warnings"])


def test_deep_nesting_is_one_malformed_packet(tmp_path: Path) -> None:
    inner = ethernet_udp()[14:]
    for _ in range(300):  # 300 nested IP-in-IP headers
        inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), 0, 0, 64, 4, 0, b"\x01" * 4, b"\x02" * 4) + inner
    vlan = b"\x00" * 12 + b"\x81\x00\x00\x01" * 10_000 + b"\x08\x00" + ethernet_udp()[14:]
    path = tmp_path / "nested.pcap"
    path.write_bytes(pcap_header(snaplen=262144) + pcap_record(b"\x00" * 12 + b"\x08\x00" + inner) + pcap_record(vlan)
                     + RECORD)
    proc, doc = analyze_json(path)
    assert proc.returncode == 0, proc.stderr
    assert doc["stats"]["malformed"] == {"too-many-layers": 1, "too-many-vlan-tags": 1}
    assert doc["stats"]["protocols"]["udp"] == 1
