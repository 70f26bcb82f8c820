"""L2 detectors (arp-storm, arp-unanswered) against the sample captures, purpose-built captures and real captures.

The captures built here pin down what the sample set does not: a mirror port that doubles every frame of a busy
LAN (duplicates, but no loop), one sender flooding distinct frames, a storm on a Linux cooked capture (no
destination MAC, so no broadcast stream), a late but answered resolution, a sweep against a host that merely
asks for a few dead neighbours, and the same analysis cut into many small batches.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

import pcapsense.reader.open as reader_open
from pcapsense.detector import Detector
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding, Severity
from pcapsense_detectors.arp_storm import ArpStorm
from pcapsense_detectors.arp_unanswered import ArpUnanswered
from sample_pcaps import build as b
from sample_pcaps.scenarios.common import BASE_NS, Capture, Host, host, ms, sec, us
from tests.conftest import REAL_PCAPS, TSHARK

DETECTORS: dict[str, type[Detector]] = {ArpStorm.id: ArpStorm, ArpUnanswered.id: ArpUnanswered}


def run(path: Path, det: type[Detector], **overrides: object) -> list[Finding]:
    result = analyze(str(path), AnalysisOptions(registry={det.id: det}, overrides={det.id: overrides}))
    return [f for f in result.findings if f.detector == det.id]


def tshark_count(path: Path, display_filter: str) -> int:
    """Frames Wireshark's own dissectors select with a finding's filter (the filter must also compile)."""
    out = subprocess.run([TSHARK, "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True)
    return len(out.stdout.split())


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")


def write(tmp_path: Path, name: str, cap: Capture) -> Path:
    path = tmp_path / name
    path.write_bytes(cap.pcap().to_bytes())
    return path


# --------------------------------------------------------------------------------------------- sample captures


@pytest.mark.parametrize("det_id", sorted(DETECTORS))
def test_manifest_expectations(samples: Path, manifest: list[dict], det_id: str) -> None:
    """Fires on every capture that expects it, stays silent on every capture that expects silence."""
    checked = {"fire": 0, "silent": 0}
    for entry in manifest:
        if det_id in entry["expect_fire"]:
            assert run(samples / entry["file"], DETECTORS[det_id]), entry["file"]
            checked["fire"] += 1
        elif det_id in entry["expect_silent"]:
            assert run(samples / entry["file"], DETECTORS[det_id]) == [], entry["file"]
            checked["silent"] += 1
    assert checked["fire"] >= 1 and checked["silent"] >= 3


def test_storm_sample_loop_signature(samples: Path) -> None:
    """1000 + 250 + 120 copies of three broadcast frames in ~2 s: one high storm with the loop signature."""
    [f] = run(samples / "arp_storm.pcap", ArpStorm)
    m = f.evidence.metrics
    assert f.severity is Severity.HIGH and "loop" in f.title
    assert m["frames"] == 1370 and m["arp_frames"] == 1000 and m["distinct_frames"] == 3
    assert m["max_copies_of_one_frame"] == 1000 and m["duplicate_share"] > 0.99
    assert m["peak_per_period"] >= 30 and 1.9 < m["duration_s"] < 2.1
    assert m["top_sources"][0]["ip"] == "10.20.0.15"
    assert f.evidence.hosts[0] == "10.20.0.15" and len(f.evidence.frames) == 50
    assert f.evidence.frames[0] == 5  # the gateway ARP, its reply and the DNS exchange come first
    assert f.filter.endswith("((frame.number >= 5 && frame.number <= 1374))")
    assert m["episodes"] == 1 and m["frames_all_episodes"] == 1370
    start, end = f.evidence.window
    assert end - start == pytest.approx(m["duration_s"], abs=1e-3)


def test_storm_sample_not_an_unanswered_resolution(samples: Path) -> None:
    """The looped request is one request recirculated, not retries: arp-unanswered leaves it to arp-storm."""
    assert run(samples / "arp_storm.pcap", ArpUnanswered) == []


def test_unanswered_sample(samples: Path) -> None:
    arp, ndp = sorted(run(samples / "arp_unanswered.pcap", ArpUnanswered), key=lambda f: ":" in f.evidence.hosts[0])
    assert arp.severity is Severity.MEDIUM and ndp.severity is Severity.MEDIUM
    assert arp.evidence.hosts == ["192.168.50.10", "192.168.50.20"]
    assert arp.evidence.metrics["retries"] == 5 and arp.evidence.metrics["targets"] == {"192.168.50.20": 5}
    assert arp.evidence.metrics["requester_mac"] == "02:00:00:00:13:92"
    assert len(arp.evidence.frames) == 5 and arp.caveats == []  # the asker's gateway reply proves the vantage
    assert arp.filter == "arp.opcode == 1 && arp.src.proto_ipv4 == 192.168.50.10 && arp.dst.proto_ipv4 in " \
                         "{192.168.50.20}"
    assert ndp.evidence.hosts == ["2001:db8:50::10", "2001:db8:50::20"]
    assert ndp.evidence.metrics["retries"] == 3 and len(ndp.evidence.frames) == 3
    assert "icmpv6.nd.ns.target_address in {2001:db8:50::20}" in ndp.filter


def test_overrides_change_behaviour(samples: Path) -> None:
    """--set: fewer retries than the requester sent keep it silent; a storm needing more frames is none."""
    assert len(run(samples / "arp_unanswered.pcap", ArpUnanswered, min_requests=4)) == 1  # ARP 5, NDP 3
    assert run(samples / "arp_unanswered.pcap", ArpUnanswered, min_requests=6) == []
    assert run(samples / "arp_storm.pcap", ArpStorm, storm_packets=200) == []
    [low] = run(samples / "arp_storm.pcap", ArpStorm, loop_duplicate_share=1.0)
    assert low.severity is Severity.MEDIUM and "dominant source" in low.title


def test_large_lan_dense_but_spread(samples: Path) -> None:
    """With a lower rate bar the healthy LAN does have dense windows; the source guard still keeps it silent."""
    assert run(samples / "arp_large_lan.pcap", ArpStorm, storm_packets=5) == []
    [f] = run(samples / "arp_large_lan.pcap", ArpStorm, storm_packets=5, source_share=0.001, merge_gap_s=60.0)
    assert f.evidence.metrics["top_source_share"] < 0.05 and f.evidence.metrics["duplicate_share"] == 0


def test_small_batches_same_result(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sliding window carries across batches: cutting the capture into tiny reads changes nothing."""
    whole = {det: [f.to_dict() for f in run(samples / name, DETECTORS[det])]
             for det, name in (("arp-storm", "arp_storm.pcap"), ("arp-unanswered", "arp_unanswered.pcap"))}
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 300)
    for det, name in (("arp-storm", "arp_storm.pcap"), ("arp-unanswered", "arp_unanswered.pcap")):
        assert [f.to_dict() for f in run(samples / name, DETECTORS[det])] == whole[det]


# --------------------------------------------------------------------------------------------- built captures


def _flood(cap: Capture, sender: Host, start: int, count: int, gap_us: int) -> None:
    """One sender asking for `count` different addresses, `gap_us` apart (distinct frames, no loop)."""
    for i in range(count):
        cap.arp_request(start + us(gap_us * i), sender, f"10.40.{i // 250}.{i % 250 + 1}")


def test_recurring_bursts_make_one_finding(tmp_path: Path) -> None:
    """A scanner sweeping every 5 s: three separate bursts, one finding naming all three in its filter."""
    cap = Capture(random.Random(8))
    sender = host("10.40.0.3", 4003)
    for burst in range(3):
        _flood(cap, sender, BASE_NS + sec(5 * burst), 60, 1000)
    [f] = run(write(tmp_path, "bursts.pcap", cap), ArpStorm)
    assert f.severity is Severity.LOW and f.evidence.metrics["episodes"] == 3
    assert f.evidence.metrics["frames"] == 60 and f.evidence.metrics["frames_all_episodes"] == 180
    assert f.filter.count("frame.number >=") == 3 and "(frame.number >= 121 && frame.number <= 180)" in f.filter
    assert f.evidence.window[1] - f.evidence.window[0] == pytest.approx(10.059, abs=1e-3)


def test_mirrored_busy_lan_is_not_a_loop(tmp_path: Path) -> None:
    """A SPAN of both directions doubles every frame (duplicate share 0.5) of a busy LAN: no loop, no storm."""
    cap = Capture(random.Random(1))
    gateway = host("10.41.0.1", 4101)
    for i in range(200):
        client = host(f"10.41.0.{i + 10}", 4110 + i)
        t = BASE_NS + us(1000 * i)
        cap.arp_request(t, client, gateway.ip)
        cap.arp_request(t + us(3), client, gateway.ip)  # the mirrored copy
    path = write(tmp_path, "mirror.pcap", cap)
    assert run(path, ArpStorm) == []
    [f] = run(path, ArpStorm, loop_duplicate_share=0.5)  # the copies are there, just not enough of them
    assert f.evidence.metrics["duplicate_share"] == 0.5 and f.severity is Severity.HIGH


@pytest.mark.parametrize(("bursts", "severity"), [(1, Severity.MEDIUM), (6, Severity.LOW)])
def test_single_sender_flood(tmp_path: Path, bursts: int, severity: Severity) -> None:
    """One sender: a storm when it keeps ~1000/s up for 2 s, a burst when only its peaks are dense. The bursts
    re-ask the same 40 addresses every 0.5 s: identical frames, but far slower than a loop recirculates them."""
    cap = Capture(random.Random(2))
    sender = host("10.40.0.2", 4002)
    for burst in range(bursts):
        _flood(cap, sender, BASE_NS + ms(500 * burst), 2000 if bursts == 1 else 40, 1000)
    [f] = run(write(tmp_path, "flood.pcap", cap), ArpStorm)
    assert f.severity is severity and f.evidence.hosts == ["10.40.0.2"]
    assert f.evidence.metrics["top_source_share"] == 1.0 and f.evidence.metrics["duplicate_share"] == 0
    assert f.evidence.metrics["max_copies_of_one_frame"] == bursts


def test_storm_on_linux_cooked_capture(tmp_path: Path) -> None:
    """SLL has no destination MAC, so no broadcast stream: the ARP stream alone must carry the storm."""
    sender = host("10.42.0.5", 4205)
    cap = Capture(random.Random(3), linktypes=(b.DLT_LINUX_SLL,), local=sender.mac)
    looped = b.arp(b.ARP_REQUEST, sender.mac, sender.ip, b"\0" * 6, "10.42.0.1")
    for i in range(300):
        cap.frame(BASE_NS + us(700 * i), sender.mac, b.BROADCAST, b.ETH_ARP, looped)
    [f] = run(write(tmp_path, "sll_storm.pcap", cap), ArpStorm)
    assert f.severity is Severity.HIGH and f.evidence.metrics["frames"] == 300


def test_late_answer_and_dead_neighbours(tmp_path: Path) -> None:
    """Answered after 4 retries: no failure. Three dead neighbours asked 3 times each: one finding, no sweep."""
    cap = Capture(random.Random(4))
    asker, slow = host("10.43.0.10", 4310), host("10.43.0.20", 4320)
    for i in range(4):
        cap.arp_request(BASE_NS + sec(i), asker, slow.ip)
    cap.arp_reply(BASE_NS + sec(3) + ms(200), slow, asker)
    for n in range(3):
        for i in range(3):
            cap.arp_request(BASE_NS + sec(10 + i) + ms(100 * n), asker, f"10.43.0.{30 + n}")
    [f] = run(write(tmp_path, "dead.pcap", cap), ArpUnanswered)
    assert f.severity is Severity.MEDIUM and "3 neighbours" in f.title
    assert f.evidence.metrics["targets"] == {"10.43.0.30": 3, "10.43.0.31": 3, "10.43.0.32": 3}
    assert f.evidence.hosts == ["10.43.0.10", "10.43.0.30", "10.43.0.31", "10.43.0.32"]
    assert len(f.evidence.frames) == 9 and f.caveats == []
    assert "arp.dst.proto_ipv4 in {10.43.0.30, 10.43.0.31, 10.43.0.32}" in f.filter


@needs_tshark
def test_filters_select_the_evidence_in_wireshark(samples: Path) -> None:
    """Each filter compiles in tshark and selects exactly the frames the finding counts."""
    [storm] = run(samples / "arp_storm.pcap", ArpStorm)
    assert tshark_count(samples / "arp_storm.pcap", storm.filter) == storm.evidence.metrics["frames"]
    for f in run(samples / "arp_unanswered.pcap", ArpUnanswered):
        assert tshark_count(samples / "arp_unanswered.pcap", f.filter) == f.evidence.metrics["retries"]


@pytest.mark.parametrize("targets", [24, 40])
def test_sweep_is_information_not_failure(tmp_path: Path, targets: int) -> None:
    """Many addresses asked once each (Zeek's 25 hosts / 5 min): one info finding from 25 on, never a failure."""
    cap = Capture(random.Random(5))
    scanner = host("10.44.0.9", 4409)
    for i in range(targets):
        cap.arp_request(BASE_NS + ms(400 * i), scanner, f"10.44.1.{i + 1}")
    findings = run(write(tmp_path, "sweep.pcap", cap), ArpUnanswered)
    if targets < 25:
        assert findings == []
        return
    [f] = findings
    assert f.severity is Severity.INFO and "sweep" in f.title
    assert f.evidence.metrics["peak_targets_in_window"] == targets and f.evidence.metrics["unanswered_asks"] == targets
    assert run(write(tmp_path, "sweep.pcap", cap), ArpUnanswered, sweep_targets=targets + 1) == []


def test_vantage_caveat_without_any_reply(tmp_path: Path) -> None:
    """No reply to the requester anywhere in the capture: the finding says the capture point may be blind."""
    cap = Capture(random.Random(6))
    asker = host("10.45.0.10", 4510)
    for i in range(3):
        cap.arp_request(BASE_NS + sec(i), asker, "10.45.0.1")
    [f] = run(write(tmp_path, "blind.pcap", cap), ArpUnanswered)
    assert any("capture point" in c for c in f.caveats)


def test_dad_and_unanswered_ns_answered_late_by_other(tmp_path: Path) -> None:
    """DAD from :: is never a failure; an advertisement for the target from any MAC answers the solicitations."""
    cap = Capture(random.Random(7))
    client = Host("2001:db8:46::10", b.mac("02:00:00:00:46:10"))
    target = Host("2001:db8:46::20", b.mac("02:00:00:00:46:20"))
    for i in range(3):
        cap.neighbour_solicit(BASE_NS + sec(i), client, target.ip)
    cap.neighbour_advert(BASE_NS + sec(2) + ms(5), target, client)
    dad = b.icmpv6_ns("::", "2001:db8:46::99", None)
    group = b.solicited_node("2001:db8:46::99")
    for i in range(3):
        cap.frame(BASE_NS + sec(5 + i), client.mac, b.multicast_mac(group), b.ETH_IPV6,
                  b.ipv6("::", group, b.PROTO_ICMPV6, dad, hlim=255))
    assert run(write(tmp_path, "ndp.pcap", cap), ArpUnanswered) == []


# --------------------------------------------------------------------------------------------- real captures


REAL_EXPECTED = {
    # file -> {(detector, severity, first evidence host)}: what the detectors should say there, checked by hand
    "zeek__linuxsll-arp.pcap": {("arp-unanswered", Severity.MEDIUM, "10.1.10.100")},
    "distance__lan-ip_conflict.pcapng": {("arp-unanswered", Severity.MEDIUM, "169.254.118.137"),
                                         ("arp-unanswered", Severity.MEDIUM, "192.168.114.1")},
    "distance__arp-sweep.pcapng": {("arp-unanswered", Severity.INFO, "192.168.0.102"),
                                   ("arp-storm", Severity.LOW, "192.168.0.102")},
}


@pytest.mark.skipif(not REAL_PCAPS.is_dir(), reason="real captures not available")
def test_real_captures() -> None:
    """Nothing crashes on any real capture; the L2 findings are exactly the ones reviewed by hand."""
    seen: dict[str, set[tuple[str, Severity, str]]] = {}
    for path in sorted(p for p in REAL_PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".bin")):
        try:
            result = analyze(str(path), AnalysisOptions(registry=DETECTORS))
        except PcapsenseError:
            continue
        got = {(f.detector, f.severity, f.evidence.hosts[0]) for f in result.findings}
        if got:
            seen[path.name] = got
    assert seen == {name: want for name, want in REAL_EXPECTED.items() if (REAL_PCAPS / name).exists()}


@pytest.mark.skipif(not (REAL_PCAPS / "distance__lan-ip_conflict.pcapng").exists(), reason="real capture not available")
def test_unanswered_arp_findings_come_in_the_order_requesters_first_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requesters fail; their findings come by first request, in one batch and in 300-byte batches alike."""
    path = REAL_PCAPS / "distance__lan-ip_conflict.pcapng"
    expected = ["Unanswered ARP requests: 192.168.114.1 cannot resolve 2 neighbours",
                "Unanswered ARP requests: 169.254.118.137 cannot resolve 192.168.114.1"]
    assert [f.title for f in run(path, DETECTORS["arp-unanswered"])] == expected
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 300)
    assert [f.title for f in run(path, DETECTORS["arp-unanswered"])] == expected
