"""Mutators, a small seed capture and a hardened CLI runner for the robustness tests.

Why a separate module: the corruption, scale and real-capture tests all need the same two things — a way to
damage a capture at a known place (so the test knows the ground truth: how many records survive, where the
fault must be reported) and a way to run the CLI so that a violation of the promises cannot hide:

- the child runs under an address-space limit (RLIMIT_AS, 1.5 GiB): on a large-RAM host Linux overcommit lets an
  unchecked 4 GiB `read()` succeed lazily, so a missing size check would pass unnoticed without the limit;
- many captures go through one CLI process (`pcapsense analyze A B C ...`): interpreter start-up costs about a
  second, analysing a small capture about 0.05 s, so batching is what keeps hundreds of mutants affordable;
- a batch that breaks a promise is bisected, so the failure names the crashing inputs.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from sample_pcaps import build as b
from sample_pcaps.writer import CustomBlock, Epb, Interface, PcapFile, PcapngFile, Record, Section, UnknownBlock

AS_LIMIT = 1_610_612_736  # 1.5 GiB: enough for numpy + pandas + a 16 MiB chunk, far below a 4 GiB allocation
CPU_LIMIT_S = 300  # Wireshark's test-common.sh per-file CPU limit
BOUNDARY_VALUES = (0, 1, 7, 0xFFFF, 0x40001, 0x7FFFFFFF, 0xFFFFFFFF)
EDITCAP = shutil.which("editcap")
RANDPKT = shutil.which("randpkt")
CLI_ARGS = ("--format", "json", "--no-report", "-q")
BASE_NS = 1_700_000_000 * 1_000_000_000
T = TypeVar("T")


def soak_tier(test: T) -> T:
    """Put a test in the soak tier: marked `soak`, and skipped unless the run selects it (`-m soak`).

    Skipping here, not only deselecting in the pytest configuration, keeps the README's plain `python -m pytest`
    within its time budget whatever `addopts` says; `.ci/run` selects the tier explicitly."""
    selected = pytest.mark.skipif("'soak' not in (config.option.markexpr or '')", reason="soak tier: run with -m soak")
    return selected(pytest.mark.soak(test))


def soak_scale() -> int:
    """How much of the soak tier to run: `PCAPSENSE_SOAK_SCALE` (default 1; `.ci/run` sets its bounded value)."""
    return max(1, int(os.environ.get("PCAPSENSE_SOAK_SCALE", "1")))


def limits(as_bytes: int = AS_LIMIT) -> Callable[[], None]:
    """A `preexec_fn` capping address space and CPU time and disabling core dumps in the child only."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# ---------------------------------------------------------------------------------------------- CLI runs


@dataclass
class CliRun:
    """One `pcapsense analyze` process over one or more inputs."""

    inputs: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def names(self) -> list[str]:
        """The names the CLI uses for the inputs in messages and in `capture.path` (stdin is `<stdin>`)."""
        return ["<stdin>" if p == "-" else p for p in self.inputs]


def run_cli(inputs: Sequence[str | Path], *, stdin: bytes | None = None, timeout: float = 300,
            as_bytes: int = AS_LIMIT, extra: Sequence[str] = ()) -> CliRun:
    """Run `pcapsense analyze INPUTS --format json --no-report -q` under the resource limits."""
    paths = [str(p) for p in inputs]
    proc = subprocess.run([sys.executable, "-m", "pcapsense", "analyze", *paths, *CLI_ARGS, *extra], input=stdin,
                          capture_output=True, timeout=timeout, preexec_fn=limits(as_bytes))
    return CliRun(paths, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"))


def check_promises(run: CliRun) -> dict[str, dict]:
    """Assert the robustness promises on one CLI run and return the JSON document of each analysed input.

    P1: exit 0 or 2, never a signal, never a traceback. P2: every stderr line names one of the inputs; an input
    without a result has a line saying why; a fault is reported as `NAME: record #N at byte offset O: ...`.
    Consistency: `capture.partial` is true exactly when `capture.fault` is set; exit 2 exactly when an input
    produced no result.
    """
    tail = run.stderr[-3000:]
    inputs = run.inputs[0] if len(run.inputs) == 1 else f"{len(run.inputs)} inputs from {run.inputs[0]}"
    assert run.returncode in (0, 2), f"exit {run.returncode} on {inputs}:\n{tail}"
    assert "Traceback" not in run.stderr, f"traceback on {inputs}:\n{tail}"
    names = run.names
    for line in run.stderr.splitlines():
        assert any(line.startswith(f"{name}: ") for name in names), f"stderr line names no input: {line!r}"
    parsed = json.loads(run.stdout) if run.stdout.strip() else []
    docs = {doc["capture"]["path"]: doc for doc in ([parsed] if isinstance(parsed, dict) else parsed)}
    for name in names:
        doc = docs.get(name)
        if doc is None:
            reasons = [line for line in run.stderr.splitlines() if line.startswith(f"{name}: ")]
            assert reasons, f"{name}: no result and no reason on stderr"
            continue
        capture = doc["capture"]
        fault = capture["fault"]
        assert capture["partial"] is (fault is not None), f"{name}: partial={capture['partial']} but fault={fault}"
        if fault is not None:
            assert f"{name}: record #{fault['record']} at byte offset {fault['offset']}: {fault['message']}" in (
                run.stderr), f"{name}: fault {fault} not reported on stderr"
    assert (run.returncode == 2) is (len(docs) < len(names)), f"exit {run.returncode} with {len(docs)}/{len(names)}"
    return docs


def analyze_all(paths: Sequence[Path], *, batch: int = 60, timeout: float = 600) -> dict[str, dict]:
    """Analyse `paths` in batches, checking the promises; a failing batch is bisected to name the culprits."""
    docs: dict[str, dict] = {}
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        try:
            docs |= check_promises(run_cli(chunk, timeout=timeout))
        except AssertionError as exc:
            culprits = [f"{chunk[0]}: {exc}"] if len(chunk) == 1 else _culprits(chunk, timeout)
            raise AssertionError("\n".join(culprits)) from None
    return docs


def _culprits(failing: Sequence[Path], timeout: float) -> list[str]:
    """The inputs of a failing batch that break a promise on their own, with the reason, found by halving."""
    found = []
    half = len(failing) // 2
    for part in (failing[:half], failing[half:]):
        try:
            check_promises(run_cli(part, timeout=timeout))
        except AssertionError as exc:
            found += [f"{part[0]}: {exc}"] if len(part) == 1 else _culprits(part, timeout)
    return found


# -------------------------------------------------------------------------------------- container layout


MODIFIED_MAGIC = 0xA1B2CD34  # Kuznetsov's modified pcap: 24-byte record headers


def pcap_records(data: bytes) -> list[int]:
    """Byte offset of every record header of an intact classic pcap (either byte order, any of the variants)."""
    magic = int.from_bytes(data[:4], "little")
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D, MODIFIED_MAGIC) else ">"
    header = 24 if MODIFIED_MAGIC in (magic, int.from_bytes(data[:4], "big")) else 16
    offsets, off = [], 24
    while off + header <= len(data):
        offsets.append(off)
        off += header + struct.unpack_from(order + "I", data, off + 8)[0]
    return offsets


@dataclass(frozen=True)
class Block:
    """One pcapng block of an intact file."""

    offset: int
    type: int
    length: int
    order: str


def pcapng_blocks(data: bytes) -> list[Block]:
    """Every block of an intact pcapng file, with the byte order of its section."""
    blocks, off, order = [], 0, "<"
    while off + 12 <= len(data):
        btype = struct.unpack_from("<I", data, off)[0]
        if btype == 0x0A0D0D0A:
            order = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype = 0x0A0D0D0A
        else:
            btype = struct.unpack_from(order + "I", data, off)[0]
        length = struct.unpack_from(order + "I", data, off + 4)[0]
        blocks.append(Block(off, btype, length, order))
        off += length
    return blocks


def put_u32(data: bytes, offset: int, value: int, order: str = "<") -> bytes:
    """`data` with the 32-bit field at `offset` replaced by `value`."""
    return data[:offset] + struct.pack(order + "I", value) + data[offset + 4 :]


def flip_bits(data: bytes, rng: random.Random, flips: int) -> bytes:
    """`data` with `flips` random single-bit flips anywhere (header, record headers, packet bytes)."""
    out = bytearray(data)
    for _ in range(flips):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def length_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, byte order) of every 32-bit length field of a capture: pcap caplen/wirelen, pcapng block lengths."""
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        fields = []
        for blk in pcapng_blocks(data):
            fields += [(blk.offset + 4, blk.order), (blk.offset + blk.length - 4, blk.order)]
            if blk.type == 6:
                fields += [(blk.offset + 20, blk.order), (blk.offset + 24, blk.order)]
        return fields
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    return [(off + k, order) for off in pcap_records(data) for k in (8, 12)]


def container_mutant(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of the research note's set D: bit flips, a cut at a random offset, or a length field set to
    a boundary value. Returns a label (for the failure message) and the mutated bytes."""
    kind = rng.randrange(3)
    if kind == 0:
        flips = rng.randint(1, 8)
        return f"flip{flips}", flip_bits(data, rng, flips)
    if kind == 1:
        cut = rng.randrange(len(data))
        return f"cut{cut}", data[:cut]
    offset, order = rng.choice(length_fields(data))
    value = rng.choice((*BOUNDARY_VALUES, 4, 8, 11, 12, 0x7F, 0xFF, 0x10000, 0x40000, 0xFFFFFFF0))
    return f"len{offset}={value:#x}", put_u32(data, offset, value, order)


def editcap_mutant(src: Path, dst: Path, *, seed: int, rate: float, pcapng: bool) -> Path:
    """`editcap -E RATE --seed SEED` (random byte errors in packet data, as Wireshark's fuzz CI does).

    editcap itself sometimes stops early (it cannot write a two-section file's second section), leaving a
    truncated output: that is just another damaged input, so its exit status is not checked."""
    assert EDITCAP is not None
    fmt = ["-F", "pcapng"] if pcapng else ["-F", "pcap"]
    subprocess.run([EDITCAP, *fmt, "-E", str(rate), "--seed", str(seed), str(src), str(dst)], capture_output=True,
                   timeout=60, check=False)
    return dst


def randpkt_capture(dst: Path, ptype: str, *, count: int, max_bytes: int) -> Path:
    """`randpkt -t TYPE`: random packets of one protocol (Wireshark's second fuzz source); it seeds itself from the
    clock, so a crasher is kept by saving the file, never by replaying a seed."""
    assert RANDPKT is not None
    subprocess.run([RANDPKT, "-b", str(max_bytes), "-c", str(count), "-t", ptype, str(dst)], capture_output=True,
                   timeout=60, check=True)
    return dst


RANDPKT_TYPES = ("arp", "bgp", "bvlc", "dns", "eth", "fddi", "giop", "icmp", "ieee802.15.4", "ip", "ipv6", "llc", "m2m",
                 "megaco", "nbns", "ncp2222", "sctp", "syslog", "tds", "tcp", "tr", "udp", "usb-linux")


# ------------------------------------------------------------------------------------------- seed capture


def _frames() -> list[bytes]:
    """Fourteen Ethernet frames touching every decoder: a TCP handshake with HTTP and a close, DNS over IPv4 and
    IPv6, a TLS ClientHello, ICMP echo, ARP, an 802.1Q-tagged frame, GRE, and two IPv4 fragments."""
    rng = random.Random(7)
    cmac, smac = b.mac("02:00:00:00:00:01"), b.mac("02:00:00:00:00:02")
    c, s = "10.0.0.1", "10.0.0.2"

    def eth(ethertype: int, payload: bytes, tags: Sequence[tuple[int, int]] = ()) -> bytes:
        return b.ethernet(smac, cmac, ethertype, payload, tags)

    def seg(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
        return eth(b.ETH_IPV4, b.ipv4(src, dst, b.PROTO_TCP, b.tcp(src, dst, sport, dport, seq, ack, flags, data)))

    request = b.http_request("GET", "/", b"example.com")
    response = b.http_response(200, "OK", b"hello")
    query = b.dns_query(0x1234, "www.example.com")
    answer = b.dns_response(0x1234, "www.example.com", answers=[b.a_record("192.0.2.1")])
    fragmented = b.ipv4(c, s, b.PROTO_UDP, b.udp(c, s, 5000, 6000, b"f" * 40), df=False, ident=77)
    first = fragmented[:6] + b"\x20\x00" + fragmented[8:20 + 24]  # MF set, offset 0, 24 bytes of payload
    second = fragmented[:6] + b"\x00\x03" + fragmented[8:20] + fragmented[20 + 24 :]  # offset 3 * 8 = 24
    first = first[:2] + struct.pack("!H", len(first)) + first[4:]
    second = second[:2] + struct.pack("!H", len(second)) + second[4:]
    gre_inner = b.ipv4("172.16.0.1", "172.16.0.2", b.PROTO_UDP, b.udp("172.16.0.1", "172.16.0.2", 1, 2, b"gre"))
    return [
        seg(c, s, 40000, 80, 1000, 0, b.SYN),
        seg(s, c, 80, 40000, 5000, 1001, b.SYN | b.ACK),
        seg(c, s, 40000, 80, 1001, 5001, b.ACK),
        seg(c, s, 40000, 80, 1001, 5001, b.PSH | b.ACK, request),
        seg(s, c, 80, 40000, 5001, 1001 + len(request), b.PSH | b.ACK, response),
        seg(c, s, 40000, 80, 1001 + len(request), 5001 + len(response), b.FIN | b.ACK),
        eth(b.ETH_IPV4, b.ipv4(c, "10.0.0.53", b.PROTO_UDP, b.udp(c, "10.0.0.53", 53000, 53, query))),
        eth(b.ETH_IPV4, b.ipv4("10.0.0.53", c, b.PROTO_UDP, b.udp("10.0.0.53", c, 53, 53000, answer))),
        eth(b.ETH_IPV6, b.ipv6("2001:db8::1", "2001:db8::53", b.PROTO_UDP,
                               b.udp("2001:db8::1", "2001:db8::53", 53001, 53, query))),
        seg(c, s, 40001, 443, 7000, 0, b.PSH | b.ACK, b.client_hello(rng, b"example.com")),
        eth(b.ETH_IPV4, b.ipv4(c, s, b.PROTO_ICMP, b.icmp_echo(True, 1, 1, b"ping")), tags=[(b.ETH_VLAN, 10)]),
        b.ethernet(b.BROADCAST, cmac, b.ETH_ARP, b.arp(b.ARP_REQUEST, cmac, c, b"\0" * 6, s)),
        eth(b.ETH_IPV4, b.ipv4(c, s, 47, b"\x00\x00\x08\x00" + gre_inner)),
        eth(b.ETH_IPV4, first),
        eth(b.ETH_IPV4, second),
    ]


def seed_records() -> list[Record]:
    return [Record(BASE_NS + i * 1_000_000, frame) for i, frame in enumerate(_frames())]


def seed_pcap(*, big_endian: bool = False, nsec: bool = False) -> bytes:
    """The seed as a classic pcap (about 1.5 KB: small enough to cut at every byte)."""
    return PcapFile(b.DLT_EN10MB, seed_records(), nsec=nsec, big_endian=big_endian).to_bytes()


def seed_pcap_modified() -> bytes:
    """The seed in Kuznetsov's modified format: each record header carries 8 more bytes (ifindex, protocol,
    packet type), so a walker that assumes 16-byte headers desynchronises at the first record."""
    out = [struct.pack("<IHHiIII", MODIFIED_MAGIC, 2, 4, 0, 0, 262_144, b.DLT_EN10MB)]
    for rec in seed_records():
        sec, usec = divmod(rec.ts_ns // 1000, 1_000_000)
        out.append(struct.pack("<IIIIIHBx", sec, usec, len(rec.data), len(rec.data), 2, 0x0800, 0) + rec.data)
    return b"".join(out)


def seed_pcapng(packets: int | None = None) -> bytes:
    """The seed (or its first `packets` frames) as pcapng with every block kind a walker must step over: two
    sections (the second big-endian), two interfaces, a custom block and an unknown block between packets."""
    records = seed_records()[:packets]
    half = len(records) // 2
    first = Section([Interface(b.DLT_EN10MB, "eth0"), Interface(b.DLT_EN10MB, "eth1", tsresol=9),
                     *(Epb(Record(r.ts_ns, r.data, i % 2)) for i, r in enumerate(records[:half])),
                     CustomBlock(32473, b"opaque"), UnknownBlock(0x0BADBEEF, b"skip")])
    second = Section([Interface(b.DLT_EN10MB, "eth0"), *(Epb(r) for r in records[half:])], big_endian=True)
    return PcapngFile([first, second]).to_bytes()


def write_all(directory: Path, named: Iterable[tuple[str, bytes]]) -> list[Path]:
    """Write each (name, bytes) into `directory`; returns the paths in order."""
    paths = []
    for name, data in named:
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths
