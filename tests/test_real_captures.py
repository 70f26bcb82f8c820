"""Every public real-world capture in ../shared/pcaps/real: analysed without a traceback, and counted like tshark.

The captures and what each shows are listed in ../shared/pcaps/real/MANIFEST.tsv. All of them go through one CLI
process under RLIMIT_AS = 1.5 GiB (see tests/corrupt.py for the promises checked). The seven whose MANIFEST
description starts with "CORRUPT FILE" must end as the description says: refused with exit 2 and a line naming
the file, or analysed partially with the fault named, or analysed with the damage named in the warnings.

Then six counts of each readable capture are compared with tshark 4.0 on the same file (one `tshark -2 -T fields`
pass, so `dns.response_in` and `tcp.completeness` are final). Where Wireshark's definition differs from ours, the
tshark side is adjusted to our definition, so the comparison checks our dissection, not the definitions:

- packets = `capture.packets` against frames that have a `frame.encap_type`: pcapng custom blocks are frames in
  Wireshark (they take a frame number) but carry no packet. Exact.
- TCP connections = `stats.tcp.connections` against distinct `tcp.stream` over frames whose outermost transport is
  TCP: Wireshark also opens streams for the TCP header quoted inside ICMP errors (the SYN-ACK reflection capture has
  139 of them). Exact.
- SYNs = `stats.tcp.syn` against `tcp.flags.syn==1 && tcp.flags.ack==0`, ICMP-quoted headers excluded as above.
  Exact.
- retransmissions = `stats.tcp.retransmissions + fast_retransmissions + out_of_order` against frames with
  `tcp.analysis.retransmission`, `fast_retransmission` or `out_of_order`, minus mirrored duplicates: a frame equal
  to the previous frame of its stream and direction in IP ID, sequence, ACK, flags and length within 2 ms (a SPAN
  or loopback copy; Wireshark calls it a retransmission, we count it under `mirrored_duplicates`). Within 2 or 5 %,
  whichever is larger: how a late segment is split between the classes rests on timing heuristics (Wireshark's
  3 ms out-of-order window, which we copy, and its own ACK bookkeeping).
- half-open handshakes = `stats.tcp.handshake_half_open` against streams whose `tcp.completeness` has the SYN and
  SYN-ACK bits but neither ACK nor DATA (`& 15 == 3`). Wireshark's exact value 3 would also exclude a handshake
  torn down by RST or FIN, which is still half-open for us (no completing ACK). Exact.
- DNS queries without a response = `stats.dns.unanswered` against DNS, mDNS and LLMNR messages replayed with our
  matching rule: a query waits under (client, server, id, name) until a response from that server to that client
  with the same id and name. Wireshark's own `!dns.response_in` differs by design: it counts each retransmitted
  query again (we count the question once; the LAN capture has 205 against our 67, 111 of them retransmissions)
  and its multicast LLMNR/mDNS queries never get a `response_in`. Within 1 or 5 %: a message we reject as
  malformed (counted under `stats.malformed`) may be one Wireshark parses.

The tshark comparison needs tshark on PATH; the whole module needs ../shared (present in CI).
"""

from __future__ import annotations

import csv
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REAL_PCAPS, TSHARK
from tests.corrupt import analyze_all, check_promises, run_cli

pytestmark = pytest.mark.skipif(not (REAL_PCAPS / "MANIFEST.tsv").is_file(), reason="../shared/pcaps/real not present")

MIRROR_WINDOW_S = 0.002  # FlowLimits.mirror_window_us
TSHARK_FIELDS = (
    "frame.time_epoch", "frame.encap_type", "icmp.type", "icmpv6.type", "tcp.stream", "ip.src", "ipv6.src",
    "ip.dst", "ipv6.dst", "ip.id", "tcp.srcport", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "tcp.flags",
    "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission", "tcp.analysis.out_of_order",
    "tcp.completeness", "dns.id", "dns.qry.name", "dns.flags.response",
)


def manifest() -> list[dict[str, str]]:
    if not (REAL_PCAPS / "MANIFEST.tsv").is_file():
        return []
    with (REAL_PCAPS / "MANIFEST.tsv").open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


ROWS = manifest()
CORRUPT = {row["file"] for row in ROWS if row["what_it_shows"].startswith("CORRUPT FILE")}


@dataclass(frozen=True)
class Damaged:
    """How a capture the MANIFEST calls corrupt must end: refused (exit 2), or a result that is partial with
    `packets` kept, or complete but with the damage named in a warning."""

    refused: bool = False
    partial: bool = False
    packets: int = 0
    words: str = ""  # in the refusal line, the fault message or a warning


# From each MANIFEST description ("capinfos: ..."): what pcapsense must say about the same damage.
DAMAGED = {
    "libpcap__pcap-truncated-hdr-23.pcap": Damaged(refused=True, words="truncated pcap file header"),
    "libpcap__pcap-invalid-version-1.pcap": Damaged(refused=True, words="major version 1"),
    "rusticata__err-eof.bin": Damaged(refused=True, words="not a pcap or pcapng file"),
    "libpcap__pcapng-packet-before-idb.pcapng": Damaged(partial=True, words="section declares 0"),
    "gopacket__test901-le.pcapng": Damaged(partial=True, packets=1, words="version 2.0"),
    "libpcap__linktype-reserved-field-not-zero.pcap": Damaged(words="reserved bits"),
    # The SHB's option overruns the block: the walk lands on option bytes where the trailer should be.
    "libpcap__shb-option-too-long.pcapng": Damaged(partial=True, words="block trailer length"),
}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every real capture through one CLI process (promises checked per file): the documents by file name.
    Files are linked into a temporary directory so the names in messages are short."""
    here = tmp_path_factory.mktemp("real")
    paths = []
    for row in ROWS:
        link = here / row["file"]
        link.symlink_to(REAL_PCAPS / row["file"])
        paths.append(link)
    docs = analyze_all(paths, batch=len(paths))
    return {Path(path).name: doc for path, doc in docs.items()}


def test_manifest_lists_every_file() -> None:
    on_disk = {p.name for p in REAL_PCAPS.iterdir() if p.name != "MANIFEST.tsv"}
    assert on_disk == {row["file"] for row in ROWS}
    assert set(DAMAGED) == CORRUPT, "a corrupt capture was added or removed: say how pcapsense must end on it"


def test_every_real_capture_without_traceback(analysed: dict[str, dict]) -> None:
    """All captures analysed in one process: exit 0/2, no traceback, JSON for each readable one, and the
    readable ones complete (not partial) with the packet count the MANIFEST gives."""
    for row in ROWS:
        name = row["file"]
        if name in CORRUPT:
            continue
        doc = analysed.get(name)
        assert doc is not None, f"{name}: refused"
        assert not doc["capture"]["partial"], f"{name}: {doc['capture']['fault']}"
        assert doc["capture"]["packets"] == int(row["packets"]), name


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_corrupt_captures_end_as_described(name: str, tmp_path: Path) -> None:
    """Each corrupt capture alone, so its stderr can be read: refused with a reason, or partial with the fault,
    or complete with the damage named in a warning."""
    link = tmp_path / name
    link.symlink_to(REAL_PCAPS / name)
    run = run_cli([link], timeout=120)
    docs = check_promises(run)
    expect = DAMAGED[name]
    doc = docs.get(str(link))
    assert (doc is None) is expect.refused, run.stderr
    if doc is None:
        assert expect.words in run.stderr
        return
    capture = doc["capture"]
    assert capture["partial"] is expect.partial and capture["packets"] == expect.packets, capture
    fault = [capture["fault"]["message"]] if capture["fault"] else []
    said = " | ".join(fault + capture["warnings"])
    assert expect.words in said, said


# ------------------------------------------------------------------------------------------ tshark side


@dataclass
class TsharkCounts:
    packets: int = 0
    connections: int = 0
    syn: int = 0
    retransmissions: int = 0
    half_open: int = 0
    dns_unanswered: int = 0
    raw_no_response_in: int = 0  # Wireshark's own definition, for the failure message


def tshark_counts(path: Path) -> TsharkCounts:
    """The six counts from one two-pass tshark run, adjusted to our definitions (see the module docstring)."""
    assert TSHARK is not None
    args = [TSHARK, "-2", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for name in (*TSHARK_FIELDS, "dns.response_in"):
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    counts = TsharkCounts()
    completeness: dict[str, int] = {}
    previous: dict[tuple[str, str, str], tuple[float, tuple[str, ...]]] = {}
    waiting: dict[tuple[str, str, str, str], None] = {}
    for line in out.splitlines():
        f = dict(zip((*TSHARK_FIELDS, "dns.response_in"), line.split("\t"), strict=True))
        if f["frame.encap_type"]:
            counts.packets += 1
        src, dst = f["ip.src"] or f["ipv6.src"], f["ip.dst"] or f["ipv6.dst"]
        if f["tcp.stream"] and not (f["icmp.type"] or f["icmpv6.type"]):
            completeness[f["tcp.stream"]] = int(f["tcp.completeness"] or 0)
            flags = int(f["tcp.flags"], 16)
            counts.syn += flags & 0x12 == 0x02
            ts = float(f["frame.time_epoch"])
            sig = (f["ip.id"], f["tcp.seq_raw"], f["tcp.ack_raw"], f["tcp.flags"], f["tcp.len"])
            direction = (f["tcp.stream"], src, f["tcp.srcport"])
            before = previous.get(direction)
            mirrored = before is not None and before[1] == sig and ts - before[0] <= MIRROR_WINDOW_S
            previous[direction] = (ts, sig)
            flagged = f["tcp.analysis.retransmission"] or f["tcp.analysis.fast_retransmission"] or f[
                "tcp.analysis.out_of_order"]
            counts.retransmissions += bool(flagged) and not mirrored
        if f["dns.id"] and not (f["icmp.type"] or f["icmpv6.type"]):
            if f["dns.flags.response"] == "1":
                waiting.pop((dst, src, f["dns.id"], f["dns.qry.name"]), None)
            else:
                waiting[(src, dst, f["dns.id"], f["dns.qry.name"])] = None
                counts.raw_no_response_in += not f["dns.response_in"]
    counts.connections = len(completeness)
    counts.half_open = sum(1 for value in completeness.values() if value & 15 == 3)
    counts.dns_unanswered = len(waiting)
    return counts


def within(ours: int, theirs: int, absolute: int, share: float) -> bool:
    return abs(ours - theirs) <= max(absolute, share * theirs)


READABLE = sorted(row["file"] for row in ROWS if row["file"] not in CORRUPT)


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("name", READABLE)
def test_counts_agree_with_tshark(name: str, analysed: dict[str, dict]) -> None:
    doc = analysed[name]
    tcp, dns = Counter(doc["stats"]["tcp"]), Counter(doc["stats"]["dns"])
    theirs = tshark_counts(REAL_PCAPS / name)
    ours = TsharkCounts(
        packets=doc["capture"]["packets"], connections=tcp["connections"], syn=tcp["syn"],
        retransmissions=tcp["retransmissions"] + tcp["fast_retransmissions"] + tcp["out_of_order"],
        half_open=tcp["handshake_half_open"], dns_unanswered=dns["unanswered"],
        raw_no_response_in=theirs.raw_no_response_in)
    report = f"{name}: ours {ours}, tshark {theirs}"
    assert ours.packets == theirs.packets, report
    assert ours.connections == theirs.connections, report
    assert ours.syn == theirs.syn, report
    assert ours.half_open == theirs.half_open, report
    assert within(ours.retransmissions, theirs.retransmissions, 2, 0.05), report
    assert within(ours.dns_unanswered, theirs.dns_unanswered, 1, 0.05), report
