"""L3 detectors (pmtud-blackhole, asymmetric-routing) against the sample captures, small purpose-built captures
and the real captures.

The captures built here pin down edges the sample set leaves open: a black hole where the router's ICMP reached
the capture and was ignored by the sender, an IPv6 black hole (clamp = MTU - 60), full-size loss recovered by
the third RTO retransmission (not a black hole), a capture with one interface per direction (every handshake
split: not asymmetry), and one-sided flows to one server among symmetric traffic (MEDIUM, not the LOW
"one-way capture" verdict).
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from pcapsense.detector import CaptureContext, Detector
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding, Severity
from pcapsense.reader import open as reader_open
from pcapsense_detectors import pmtud_blackhole as pmtud
from pcapsense_detectors.asymmetric_routing import AsymmetricRouting
from pcapsense_detectors.pmtud_blackhole import PmtudBlackhole
from sample_pcaps import build as b
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, ms, us
from sample_pcaps.writer import Epb, Interface, PcapngFile, Record, Section
from tests.conftest import REAL_PCAPS

SERVER = host("10.7.0.10", 7010)
ROUTER = host("10.7.0.1", 7001)
TUNNEL = Host("10.255.7.1", ROUTER.mac, ttl=63)
CLIENT = Host("172.16.7.20", ROUTER.mac, ttl=58)
SERVER6 = Host("2001:db8:7::10", SERVER.mac)
CLIENT6 = Host("2001:db8:77::20", ROUTER.mac, ttl=58)
RTO = ms(200)


def run(detector: type[Detector], path: Path, **overrides: object) -> list[Finding]:
    result = analyze(str(path), AnalysisOptions(registry={detector.id: detector}, overrides={detector.id: overrides}))
    assert all(f.detector == detector.id for f in result.findings)
    return result.findings


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.summary for f in findings]
    return findings[0]


# -- capture builders ------------------------------------------------------------------------------------------


def server_conn(cap: Capture, client: Host = CLIENT, server: Host = SERVER, *, cport: int = 50123,
                mss: tuple[int, int] = (1460, 1460)) -> TcpConn:
    """Captured next to the server, which sends the large segments; small request and reply are ACKed."""
    conn = TcpConn(cap, client, server, cport, 443, t=BASE_NS, rtt=ms(40), near_client=False, mss=mss)
    conn.handshake()
    conn.send(C, cap.rng.randbytes(220), final_ack=False)
    conn.send(S, cap.rng.randbytes(300))
    conn.send(C, cap.rng.randbytes(90), final_ack=False)
    return conn


def rto_series(conn: TcpConn, seq: int, payload: bytes, start: int, count: int, *, delivered_last: bool) -> int:
    """Retransmit one segment `count` times with a doubling RTO; returns the time of the last one."""
    t, rto = start, RTO
    for i in range(count):
        t, rto = t + rto, rto * 2
        conn.emit(S, b.ACK | b.PSH, payload, seq=seq, at=t, lost=not (delivered_last and i == count - 1))
    return t


def stuck_full_size(cap: Capture, conn: TcpConn, retransmissions: int, *, icmp_mtu: int | None = None,
                    delivered_last: bool = False) -> None:
    """One full-size segment lost and retransmitted with back-off, optionally answered by frag-needed."""
    start = conn.t + conn.delay(S)
    (seq, payload), = conn.send(S, cap.rng.randbytes(conn.seg_size(S)), ack_every=0, lost=(0,))
    if icmp_mtu is not None:
        original = b.ip(SERVER.ip, CLIENT.ip, b.PROTO_TCP,
                        b.tcp(SERVER.ip, CLIENT.ip, 443, conn.ports[C][0], seq, 0, b.ACK, payload), df=True)
        cap.ip(start + us(1500), TUNNEL, SERVER, b.PROTO_ICMP, b.icmp_frag_needed(icmp_mtu, original), df=False)
    conn.t = rto_series(conn, seq, payload, start, retransmissions, delivered_last=delivered_last)
    if delivered_last:
        conn.emit(C, b.ACK, at=conn.t + conn.delay(C))
        conn.t += conn.delay(C)
        conn.send(S, cap.rng.randbytes(6 * conn.seg_size(S)))


def write(tmp_path: Path, name: str, capture: Capture | PcapngFile) -> Path:
    path = tmp_path / name
    path.write_bytes((capture.pcap() if isinstance(capture, Capture) else capture).to_bytes())
    return path


def web_flow(cap: Capture, client: Host, server: Host, cport: int, t: int, **kw: object) -> None:
    conn = TcpConn(cap, client, server, cport, 80, t=t, rtt=ms(25), **kw)  # type: ignore[arg-type]
    conn.handshake()
    conn.exchange(b.http_request("GET", "/", b"app.example.com"), b.http_response(200, "OK", cap.rng.randbytes(4000)))
    conn.close(C)


# -- pmtud-blackhole: sample captures -------------------------------------------------------------------------


def test_pmtud_seed_tls_case_is_a_stalled_black_hole(samples: Path) -> None:
    f = only(run(PmtudBlackhole, samples / "pmtud_blackhole_tls.pcap"))
    m = f.evidence.metrics
    assert f.severity == Severity.HIGH
    assert f.evidence.hosts == ["10.1.0.10", "172.16.5.20"]
    assert [(r.src, r.sport, r.dst, r.dport) for r in f.evidence.flows] == [("172.16.5.20", 50123, "10.1.0.10", 443)]
    assert (m["stuck_payload"], m["stuck_ip_len"], m["retransmissions"]) == (1448, 1500, 5)
    assert m["backoff_gaps_s"] == [0.4, 0.8, 1.6, 3.2]
    assert (m["stalled"], m["fell_back"], m["icmp_seen"]) == (1, 0, False)
    # the small page on :80 (965-byte body segment, 1017-byte packet) is the largest proven size
    assert (m["largest_ok_ip_len"], m["path_mtu"], m["path_mtu_upper_bound"]) == (1017, 1017, 1499)
    assert (m["mss_clamp"], m["mss_clamp_upper_bound"]) == (977, 1459)  # proven to pass / most the path could take
    assert len(f.evidence.frames) == 5 and f.filter == "frame.number in {20, 21, 22, 23, 24}"
    assert "no ICMP frag-needed" in f.summary and "between 1017 and 1499 bytes" in f.summary
    assert "clamp the MSS to at most 1459 (977 is proven to pass" in f.summary


def test_pmtud_fallback_names_the_size_that_got_through(samples: Path) -> None:
    f = only(run(PmtudBlackhole, samples / "pmtud_blackhole_fallback.pcap"))
    m = f.evidence.metrics
    assert f.severity == Severity.MEDIUM
    assert (m["retransmissions"], m["fell_back"], m["fallback_payload"]) == (4, 1, 1240)
    assert (m["largest_ok_ip_len"], m["mss_clamp"]) == (1292, 1252)
    assert "fell back to 1240-byte segments" in f.summary


def test_pmtud_working_is_one_info_note_per_path(samples: Path) -> None:
    findings = run(PmtudBlackhole, samples / "pmtud_icmp_seen.pcap")
    assert {f.severity for f in findings} == {Severity.INFO}
    by_mtu = {f.evidence.metrics["path_mtu"]: f for f in findings}
    assert set(by_mtu) == {1400, 1280}
    assert by_mtu[1400].evidence.metrics["mss_clamp"] == 1360  # IPv4: MTU - 40
    assert by_mtu[1280].evidence.metrics["mss_clamp"] == 1220  # IPv6: MTU - 60
    assert by_mtu[1400].evidence.hosts == ["10.1.0.10", "172.16.5.20", "10.255.0.1"]
    assert by_mtu[1400].evidence.metrics["icmp_messages"] == 2
    assert not run(PmtudBlackhole, samples / "pmtud_icmp_seen.pcap", report_working_pmtud=False)


@pytest.mark.parametrize("name", ["pmtud_neg_loss_recovered.pcap", "pmtud_neg_small_retrans.pcap",
                                  "pmtud_neg_mirrored_dupes.pcap", "tso_oversized.pcap", "healthy.pcap"])
def test_pmtud_silent_on_look_alikes(samples: Path, name: str) -> None:
    assert run(PmtudBlackhole, samples / name) == []


def test_pmtud_manifest_expectations(samples: Path, manifest: list[dict]) -> None:
    for entry in manifest:
        fired = bool(run(PmtudBlackhole, samples / entry["file"]))
        if PmtudBlackhole.id in entry["expect_fire"]:
            assert fired, entry["file"]
        elif PmtudBlackhole.id in entry["expect_silent"]:
            assert not fired, entry["file"]


def test_pmtud_retransmission_count_is_tunable(samples: Path) -> None:
    assert not run(PmtudBlackhole, samples / "pmtud_blackhole_tls.pcap", min_rto_retransmissions=6)
    assert not run(PmtudBlackhole, samples / "pmtud_blackhole_tls.pcap", backoff_growth=2.5)


# -- pmtud-blackhole: built captures --------------------------------------------------------------------------


def test_pmtud_icmp_seen_but_ignored_is_high_with_the_reported_mtu(tmp_path: Path) -> None:
    cap = Capture(random.Random(1))
    stuck_full_size(cap, server_conn(cap), 4, icmp_mtu=1400)
    f = only(run(PmtudBlackhole, write(tmp_path, "ignored.pcap", cap)))
    m = f.evidence.metrics
    assert f.severity == Severity.HIGH
    assert (m["icmp_seen"], m["icmp_mtu"], m["path_mtu"], m["mss_clamp"]) == (True, 1400, 1400, 1360)
    assert any("sender" in c and "ignores" in c for c in f.caveats)
    assert len(f.evidence.frames) == 5  # four retransmissions and the ICMP message


def test_pmtud_ipv6_clamp_subtracts_60(tmp_path: Path) -> None:
    cap = Capture(random.Random(2))
    conn = server_conn(cap, CLIENT6, SERVER6, mss=(1440, 1440))
    stuck_full_size(cap, conn, 3)
    f = only(run(PmtudBlackhole, write(tmp_path, "v6.pcap", cap)))
    m = f.evidence.metrics
    assert (m["stuck_ip_len"], m["retransmissions"]) == (1500, 3)
    assert m["largest_ok_ip_len"] == 300 + 40 + 32
    assert m["mss_clamp"] == m["largest_ok_ip_len"] - 60
    assert "Packet Too Big" in f.summary


@pytest.mark.parametrize("chunk", [None, 200], ids=["one-batch", "per-packet"])
def test_pmtud_full_size_loss_recovered_at_full_size_is_not_a_black_hole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    """Per packet, the ACK of the resend that got through comes in a later batch than the resend: it still
    counts (the flow's largest ACKed segment carries unacknowledged segments across batches)."""
    cap = Capture(random.Random(3))
    stuck_full_size(cap, server_conn(cap), 3, delivered_last=True)
    if chunk is not None:
        monkeypatch.setattr(reader_open, "CHUNK_BYTES", chunk)
    assert run(PmtudBlackhole, write(tmp_path, "recovered.pcap", cap)) == []


def test_largest_acked_segments_do_not_depend_on_batching(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sample's largest and never-ACKed segment sizes (from each direction's largest ACKed segment) are the
    same in one batch and in a batch per packet or two, however late in the capture each ACK comes."""

    def sizes(paths: list[Path]) -> dict[str, tuple[object, object, int]]:
        out = {}
        for path in paths:
            result = analyze(str(path), AnalysisOptions(read_ahead=False))
            l3 = result.series["L3"]
            out[path.name] = (l3["largest_acked"], l3["never_acked"], result.capture["packets"])
        return out

    whole = sizes(sorted(p for p in samples.iterdir() if p.suffix in (".pcap", ".pcapng")))
    with_data = {name: facts for name, facts in whole.items() if facts[0] and facts[2] <= 2000}  # a batch each: slow
    assert len(with_data) >= 20
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 700)
    assert sizes([samples / name for name in with_data]) == with_data


def _retransmissions(*segments: tuple[int, int]) -> pd.DataFrame:
    """tcp_retransmissions rows, one full-size resend per (connection, sequence) given, in that order."""
    return pd.DataFrame([{"frame": i + 1, "ts": float(i), "conn_id": conn, "direction": 0, "kind": "retransmission",
                          "rel_seq": seq, "seg_len": 1448, "payload_len": 1448, "ip_len": 1500, "df": True,
                          "flags": 16, "ttl": 64, "acked": False} for i, (conn, seq) in enumerate(segments)])


def _closed(*conns: int) -> pd.DataFrame:
    """Flow records (only what pmtud-blackhole reads) of TCP connections that ended."""
    return pd.DataFrame([{column: 0 for column in pmtud.COLUMNS}
                         | {"conn_id": conn, "proto": 6, "orig": CLIENT.ip, "resp": SERVER.ip} for conn in conns])


def test_pmtud_segment_tracking_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_TRACKED_SEGMENTS segments are tracked at once (the resends of further segments are counted as
    not examined) and at most MAX_ROWS_PER_SEGMENT transmissions of each; closing a connection frees its room."""
    monkeypatch.setattr(pmtud, "MAX_TRACKED_SEGMENTS", 2)
    monkeypatch.setattr(pmtud, "MAX_ROWS_PER_SEGMENT", 3)
    det = PmtudBlackhole(PmtudBlackhole.Thresholds(), CaptureContext("x", (1,), 1))
    det.on_tcp_retransmissions(_retransmissions((1, 10), (1, 20), (1, 10), (2, 30), (2, 30), *[(1, 10)] * 3))
    kept = det.sent.frame()
    assert det.dropped == 2 and kept.groupby("rel_seq").size().to_dict() == {10: 3, 20: 1}
    det.on_flows(_closed(1))
    det.on_tcp_retransmissions(_retransmissions((2, 30), (2, 30)))
    assert det.dropped == 2 and det.sent.frame()["rel_seq"].tolist() == [30, 30]


# -- asymmetric-routing -----------------------------------------------------------------------------------------


def test_asym_forward_path_only_capture(samples: Path) -> None:
    f = only(run(AsymmetricRouting, samples / "asym_routing.pcap"))
    m = f.evidence.metrics
    assert f.severity == Severity.LOW  # not one flow shows both directions: a one-way tap looks the same
    assert (m["flows"], m["client_only_flows"], m["server_only_flows"], m["share"]) == (24, 24, 0, 1.0)
    assert f.evidence.hosts[0] == "203.0.113.10" and len(f.evidence.hosts) == 25
    assert {r.dport for r in f.evidence.flows} == {80, 443}
    assert all(p["flows"] == p["asymmetric"] == 1 for p in m["pairs"])
    assert m["acks_of_unseen_packets"] >= 24  # at least the handshake ACK of every flow
    assert any("one-way tap" in c for c in f.caveats)


def test_asym_interfaces_split_and_moved(samples: Path) -> None:
    f = only(run(AsymmetricRouting, samples / "asym_routing_ifaces.pcapng"))
    m = f.evidence.metrics
    assert f.severity == Severity.MEDIUM
    assert f.evidence.hosts[0] == "198.51.100.20"
    assert (m["flows"], m["iface_split_flows"], m["path_moved_flows"], m["client_only_flows"]) == (10, 8, 2, 0)
    assert {(p["iface"], p["mac"], p["ttl"]) for p in m["server_paths"]} == {
        (0, "02:00:00:00:13:89", 60), (1, "02:00:00:00:13:8a", 57)}
    # 8 of 12 handshakes split: at a 0.5 cut-off the capture counts as one interface per direction
    f = only(run(AsymmetricRouting, samples / "asym_routing_ifaces.pcapng", tap_split_share=0.5))
    assert (f.evidence.metrics["iface_split_flows"], f.evidence.metrics["path_moved_flows"]) == (0, 2)


@pytest.mark.parametrize("name", ["asym_neg_midstream.pcap", "healthy.pcap", "pmtud_blackhole_tls.pcap"])
def test_asym_silent_when_both_directions_are_seen(samples: Path, name: str) -> None:
    assert run(AsymmetricRouting, samples / name) == []


def test_asym_manifest_expectations(samples: Path, manifest: list[dict]) -> None:
    for entry in manifest:
        fired = bool(run(AsymmetricRouting, samples / entry["file"]))
        if AsymmetricRouting.id in entry["expect_fire"]:
            assert fired, entry["file"]
        elif AsymmetricRouting.id in entry["expect_silent"]:
            assert not fired, entry["file"]


def test_asym_one_sided_server_among_symmetric_traffic_is_medium(tmp_path: Path) -> None:
    cap = Capture(random.Random(4))
    hidden = Host("203.0.113.50", ROUTER.mac, ttl=55)
    normal = Host("203.0.113.60", ROUTER.mac, ttl=55)
    for i in range(3):
        web_flow(cap, host(f"10.7.1.{10 + i}", 7100 + i), hidden, 41000 + i, BASE_NS + ms(300 * i), invisible=(S,))
    for i in range(5):
        web_flow(cap, host(f"10.7.2.{10 + i}", 7200 + i), normal, 42000 + i, BASE_NS + ms(300 * i))
    path = write(tmp_path, "mixed.pcap", cap)
    f = only(run(AsymmetricRouting, path))
    assert f.severity == Severity.MEDIUM and f.caveats == []
    assert f.evidence.hosts[0] == "203.0.113.50"
    assert (f.evidence.metrics["client_only_flows"], f.evidence.metrics["share"]) == (3, 1.0)
    assert not run(AsymmetricRouting, path, min_flows=4)


def test_asym_tap_with_one_interface_per_direction_is_not_asymmetry(tmp_path: Path) -> None:
    cap = Capture(random.Random(5), (b.DLT_EN10MB, b.DLT_EN10MB))
    server = Host("198.51.100.80", ROUTER.mac, ttl=60)
    for i in range(6):
        web_flow(cap, host(f"10.7.3.{10 + i}", 7300 + i), server, 43000 + i, BASE_NS + ms(200 * i), ifaces=(0, 1))
    blocks = [Interface(b.DLT_EN10MB, "tap-tx"), Interface(b.DLT_EN10MB, "tap-rx")]
    path = write(tmp_path, "tap.pcapng", PcapngFile([Section([*blocks, *(Epb(r) for r in cap.records())])]))
    assert run(AsymmetricRouting, path) == []
    f = only(run(AsymmetricRouting, path, tap_split_share=1.01))  # forced: every split becomes evidence
    assert f.evidence.metrics["iface_split_flows"] == 6


def test_asym_router_capturing_ingress_and_egress_is_not_asymmetry(tmp_path: Path) -> None:
    """Every packet appears on both interfaces (in and out of the router), a few microseconds apart."""
    cap = Capture(random.Random(6), (b.DLT_EN10MB, b.DLT_EN10MB))
    server = Host("198.51.100.90", ROUTER.mac, ttl=60)
    for i in range(4):
        web_flow(cap, host(f"10.7.4.{10 + i}", 7400 + i), server, 44000 + i, BASE_NS + ms(200 * i))
    copies = [Record(r.ts_ns + us(4), r.data, 1) for r in cap.records()]
    records = sorted([*cap.records(), *copies], key=lambda r: (r.ts_ns, r.iface))
    blocks = [Interface(b.DLT_EN10MB, "lan"), Interface(b.DLT_EN10MB, "wan")]
    path = write(tmp_path, "router.pcapng", PcapngFile([Section([*blocks, *(Epb(r) for r in records)])]))
    assert run(AsymmetricRouting, path) == []


# -- real captures ----------------------------------------------------------------------------------------------

REAL_EXPECTED = {  # file -> {detector: (findings, severity of the first)}; files not listed must not crash
    "suricata__bug-3616-smtp__input.pcap": {PmtudBlackhole.id: (1, Severity.INFO), AsymmetricRouting.id: (0, None)},
    "chrissanders__tcp_retransmissions.pcapng": {PmtudBlackhole.id: (0, None), AsymmetricRouting.id: (0, None)},
    "chrissanders__http_espn_fail.pcapng": {PmtudBlackhole.id: (0, None), AsymmetricRouting.id: (0, None)},
    "zeek__icmp6-toobig.pcap": {PmtudBlackhole.id: (0, None)},
    "arkime__no-syn-ack.pcap": {AsymmetricRouting.id: (0, None)},
    "suricata__bug-8629-async-oneside__input.pcap": {AsymmetricRouting.id: (1, Severity.LOW)},
    "suricata__tcp-async-01__input.pcap": {AsymmetricRouting.id: (1, Severity.LOW)},
    "zeek__smtp-one-side-only.pcap": {AsymmetricRouting.id: (1, Severity.LOW)},
    "zeek__ssh.server-side-half-duplex.pcap": {AsymmetricRouting.id: (1, Severity.LOW)},
    "stopddos__amp.dns.RRSIG.fragmented.pcap": {AsymmetricRouting.id: (1, Severity.LOW)},  # inbound-only capture
}


@pytest.mark.skipif(not REAL_PCAPS.is_dir(), reason="real captures not available")
@pytest.mark.parametrize("detector", [PmtudBlackhole, AsymmetricRouting])
def test_real_captures(detector: type[Detector]) -> None:
    for path in sorted(REAL_PCAPS.iterdir()):
        try:
            findings = run(detector, path)
        except PcapsenseError:
            continue
        count, severity = REAL_EXPECTED.get(path.name, {}).get(detector.id, (None, None))
        if count is not None:
            assert len(findings) == count, (path.name, [f.summary for f in findings])
        if severity is not None:
            assert findings[0].severity == severity, path.name
