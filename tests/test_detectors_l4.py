"""L4 detectors (syn-flood, port-exhaustion) against the sample captures, small purpose-built captures and the
real captures.

Ground truth is read back from the capture files with dpkt rather than copied from the scenario text, so a
scenario change that the detectors no longer match fails here. The built captures pin down what the samples do
not: unanswered SYNs from many sources versus one, a single-source half-open flood, reuse that stays inside or
falls outside TIME_WAIT.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest

from pcapsense.aggregate import factorize_rows
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding, Severity, frame_filter
from pcapsense.reader import open as reader_open
from pcapsense_detectors.port_exhaustion import PortExhaustion
from pcapsense_detectors.syn_flood import MAX_SOURCES, KeyIds, Rank, SynFlood, WindowedBins
from sample_pcaps import build as b
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, ms, sec, us
from tests.conftest import REAL_PCAPS

REGISTRY = {SynFlood.id: SynFlood, PortExhaustion.id: PortExhaustion}
IDS = tuple(REGISTRY)
GATEWAY = host("10.5.0.1", 5001)
SERVER = host("10.5.0.80", 5080)
CLIENT = host("10.5.1.10", 5110)


def run(path: Path, overrides: dict[str, dict[str, object]] | None = None) -> list[Finding]:
    return analyze(str(path), AnalysisOptions(registry=REGISTRY, overrides=overrides or {})).findings


def of(findings: list[Finding], detector: str) -> list[Finding]:
    return [f for f in findings if f.detector == detector]


def tcp_packets(path: Path) -> list[tuple[int, dpkt.ip.IP, dpkt.tcp.TCP]]:
    """(frame number, IP, TCP) for every TCP/IPv4 packet of an Ethernet pcap."""
    out = []
    with path.open("rb") as fh:
        for number, (_ts, data) in enumerate(dpkt.pcap.Reader(fh), start=1):
            ip = dpkt.ethernet.Ethernet(data).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                out.append((number, ip, ip.data))
    return out


def addr(raw: bytes) -> str:
    return ".".join(str(x) for x in raw)


def flags(tcp: dpkt.tcp.TCP, want: int, mask: int | None = None) -> bool:
    return (tcp.flags & (want if mask is None else mask)) == want


# -------------------------------------------------------------------------------------------- sample captures


@pytest.fixture(scope="module")
def sample_results(samples: Path, manifest: list[dict]) -> dict[str, list[Finding]]:
    """Both detectors over every sample capture, once."""
    return {entry["file"]: run(samples / entry["file"]) for entry in manifest}


def test_manifest_expectations(manifest: list[dict], sample_results: dict[str, list[Finding]]) -> None:
    """Fires where the manifest says it must, silent where it says it must be; healthy.pcap is among the silent."""
    fired = set()
    for entry in manifest:
        findings = sample_results[entry["file"]]
        for det in IDS:
            if det in entry["expect_fire"]:
                assert of(findings, det), f"{det} silent on {entry['file']}"
                fired.add((det, entry["file"]))
            elif det in entry["expect_silent"]:
                assert not of(findings, det), f"{det} fired on {entry['file']}: {of(findings, det)[0].summary}"
    assert {(SynFlood.id, "syn_flood.pcap"), (PortExhaustion.id, "port_exhaustion.pcap")} <= fired
    silent_files = {e["file"] for e in manifest if set(IDS) <= set(e["expect_silent"])}
    assert {"healthy.pcap", "syn_busy_healthy.pcap", "port_scan.pcap", "pool_reuse.pcap",
            "many_clients.pcap"} <= silent_files


def test_syn_flood_sample(samples: Path, sample_results: dict[str, list[Finding]]) -> None:
    path = samples / "syn_flood.pcap"
    packets = tcp_packets(path)
    syn = {(addr(ip.src), tcp.sport) for _, ip, tcp in packets if flags(tcp, dpkt.tcp.TH_SYN, 0x12)}
    synacks = Counter((addr(ip.dst), tcp.dport, tcp.seq) for _, ip, tcp in packets
                      if flags(tcp, 0x12) and addr(ip.src) == "10.0.0.80")
    acked = {(addr(ip.src), tcp.sport) for _, ip, tcp in packets
             if addr(ip.dst) == "10.0.0.80" and flags(tcp, dpkt.tcp.TH_ACK, 0x17)}
    half_open = syn - acked
    retransmitted = sum(1 for n in synacks.values() if n > 1)
    by_frame = {n: (ip, tcp) for n, ip, tcp in packets}

    [finding] = of(sample_results["syn_flood.pcap"], SynFlood.id)
    m = finding.evidence.metrics
    assert finding.severity is Severity.HIGH
    assert finding.title == "SYN flood on 10.0.0.80:80"
    assert finding.evidence.hosts == ["10.0.0.80"]  # spoofed: individual sources are noise
    assert m["half_open_in_window"] == len(half_open) == 2000
    # only the MAX_SOURCES busiest sources are kept by name, but every source is counted, exactly (<= 4096)
    assert m["distinct_sources"] == len({src for src, _ in half_open}) > MAX_SOURCES and m["sources_capped"]
    assert m["distinct_sources_estimated"] is False
    assert m["window_counts"]["retransmitted"] == retransmitted
    assert m["window_counts"]["completed"] == 8
    assert m["window_counts"]["unanswered"] == 0
    t0, t1 = finding.evidence.window
    assert 1700000000.4 <= t0 <= 1700000000.6 and 1700000010.4 <= t1 <= 1700000010.6
    assert 0 < len(finding.evidence.frames) <= 50
    for number in finding.evidence.frames:
        ip, tcp = by_frame[number]
        to_server = addr(ip.dst) == "10.0.0.80" and tcp.dport == 80 and flags(tcp, dpkt.tcp.TH_SYN, 0x12)
        from_server = addr(ip.src) == "10.0.0.80" and tcp.sport == 80 and flags(tcp, 0x12)
        assert to_server or from_server
        assert ((addr(ip.src), tcp.sport) if to_server else (addr(ip.dst), tcp.dport)) in half_open
    assert finding.filter == frame_filter(finding.evidence.frames)
    assert all(f.dst == "10.0.0.80" and f.dport == 80 and (f.src, f.sport) in half_open
               for f in finding.evidence.flows)
    assert "spoofed or distributed" in finding.summary and "SYN_RECV" in finding.summary


def test_port_exhaustion_sample(samples: Path, sample_results: dict[str, list[Finding]]) -> None:
    path = samples / "port_exhaustion.pcap"
    packets = tcp_packets(path)
    client_syns = [(n, tcp.sport) for n, ip, tcp in packets
                   if addr(ip.src) == "10.0.1.10" and flags(tcp, dpkt.tcp.TH_SYN, 0x12)]
    ports = {p for _, p in client_syns}
    resets = [n for n, _ip, tcp in packets if tcp.flags & dpkt.tcp.TH_RST]
    fins = Counter(addr(ip.src) for _, ip, tcp in packets if tcp.flags & dpkt.tcp.TH_FIN)
    by_frame = {n: (ip, tcp) for n, ip, tcp in packets}

    [finding] = of(sample_results["port_exhaustion.pcap"], PortExhaustion.id)
    m = finding.evidence.metrics
    assert finding.severity is Severity.HIGH  # reuses the server answered with a bare ACK or RST
    assert finding.evidence.hosts == ["10.0.1.10", "10.0.0.5"]
    assert m["observed_ports"] == [min(ports), max(ports)] == [40000, 41199]
    assert m["distinct_ports_in_window"] == len(ports)
    connections = m["new_connections_in_window"]
    assert m["reuses_in_time_wait"] == connections - len(ports)
    assert 2000 < connections <= len(client_syns)  # SYN retransmissions are not new connections
    assert m["reuses_rejected"] == len(resets)  # each rejected reuse carries exactly one RST in this scenario
    assert m["client_closed_first"] == fins["10.0.1.10"] and m["server_closed_first"] == 0
    assert 4.0 < m["reuse_gap_min_s"] <= m["reuse_gap_mean_s"] < 6.0
    assert 0.5 <= m["longest_syn_pause_s"] <= 0.7
    assert m["utilisation"] == pytest.approx(len(ports) / 28232, abs=1e-4)
    assert "EADDRNOTAVAIL" in finding.summary and "cannot assign requested address" in finding.summary
    assert "client holds TIME_WAIT" in finding.summary
    assert len(finding.evidence.frames) == 50
    for number in finding.evidence.frames:  # the SYNs of rejected reuses and the RSTs that followed them
        ip, tcp = by_frame[number]
        client_port = tcp.sport if addr(ip.src) == "10.0.1.10" else tcp.dport
        assert {addr(ip.src), addr(ip.dst)} == {"10.0.1.10", "10.0.0.5"} and 40000 <= client_port <= 41199
        assert number in resets or (addr(ip.src) == "10.0.1.10" and flags(tcp, dpkt.tcp.TH_SYN, 0x12))
    assert finding.filter == frame_filter(finding.evidence.frames)
    assert all(f.src == "10.0.1.10" and f.dst == "10.0.0.5" and f.dport == 8080 for f in finding.evidence.flows)


def test_overrides_change_the_verdict(samples: Path) -> None:
    flood, exhaustion = samples / "syn_flood.pcap", samples / "port_exhaustion.pcap"
    assert not of(run(flood, {SynFlood.id: {"min_half_open": 2001}}), SynFlood.id)
    [short] = of(run(flood, {SynFlood.id: {"window_s": 1.0}}), SynFlood.id)
    assert 128 <= short.evidence.metrics["half_open_in_window"] < 400
    assert short.evidence.window[1] - short.evidence.window[0] <= 1.0 + 1e-6
    assert not of(run(exhaustion, {PortExhaustion.id: {"min_reuses": 100_000}}), PortExhaustion.id)
    # the client's real range: 1200 ports, all of them in use within one TIME_WAIT
    narrowed = {"min_reuses": 100_000, "port_range_low": 40000, "port_range_high": 41199}
    [by_range] = of(run(exhaustion, {PortExhaustion.id: narrowed}), PortExhaustion.id)
    assert by_range.severity is Severity.HIGH and by_range.evidence.metrics["utilisation"] == 1.0
    medium = narrowed | {"high_utilisation": 1.01}
    assert of(run(exhaustion, {PortExhaustion.id: medium}), PortExhaustion.id)[0].severity is Severity.MEDIUM


# ------------------------------------------------------------------------------------------- built captures


def write(out: Path, name: str, cap: Capture) -> Path:
    path = out / name
    path.write_bytes(cap.pcap().to_bytes())
    return path


def bare_syns(cap: Capture, rng: random.Random, sources: list[Host], count: int, *, answer: bool) -> None:
    """`count` SYNs to SERVER:443 over 2 s from `sources` (cycled), optionally answered with a SYN-ACK."""
    for i in range(count):
        src, sport, isn = sources[i % len(sources)], 1024 + i, rng.getrandbits(32)
        t = BASE_NS + us(rng.randrange(2_000_000))
        cap.ip(t, src, SERVER, b.PROTO_TCP, b.tcp(src.ip, SERVER.ip, sport, 443, isn, 0, b.SYN, window=512))
        if answer:
            synack = b.tcp(SERVER.ip, src.ip, 443, sport, rng.getrandbits(32), isn + 1, b.SYN | b.ACK, window=64240)
            cap.ip(t + us(80), SERVER, src, b.PROTO_TCP, synack)


def cycling_client(cap: Capture, *, ports: int, rounds: int, every: int, closer: int = C) -> None:
    """CLIENT opens one connection per `every` ns to SERVER:8080, source ports cycling through `ports` ports."""
    for n in range(ports * rounds):
        conn = TcpConn(cap, CLIENT, SERVER, 50000 + n % ports, 8080, t=BASE_NS + n * every, rtt=us(500))
        conn.handshake()
        conn.exchange(b.http_request("GET", f"/{n}", b"api"), b.http_response(200, "OK", b"{}"))
        conn.close(closer)


def client_path_lost(cap: Capture, count: int) -> None:
    """The capture sees each client's SYN, then only the server: its SYN-ACK and the response it sends once the
    (unseen) ACK and request arrived. Half-open by the history letters, but the server left SYN_RECV."""
    for i in range(count):
        client = Host(f"198.18.{i // 250}.{1 + i % 250}", GATEWAY.mac, ttl=60)
        conn = TcpConn(cap, client, SERVER, 40000 + i, 443, t=BASE_NS + ms(5 * i), rtt=ms(20))
        conn.emit(C, b.SYN, at=conn.t)
        conn.invisible = frozenset({C})
        conn.t += conn.delay(S)
        conn.emit(S, b.SYN | b.ACK, at=conn.t)
        conn.t += conn.delay(C)
        conn.emit(C, b.ACK, at=conn.t)
        conn.exchange(b.http_request("GET", "/", b"x"), b.http_response(200, "OK", bytes(500)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Purpose-built captures, keyed by name."""
    out = tmp_path_factory.mktemp("l4")
    rng = random.Random(4)
    spoofed = [Host(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    GATEWAY.mac, ttl=rng.randrange(40, 250)) for _ in range(300)]
    lone = [Host("198.51.100.7", GATEWAY.mac, ttl=50)]
    files = {}
    for name, sources, answer in (("unanswered-spoofed", spoofed, False), ("unanswered-one", lone, False),
                                  ("half-open-one", lone, True)):
        cap = Capture(random.Random(name))
        bare_syns(cap, rng, sources, 300, answer=answer)
        files[name] = write(out, f"{name}.pcap", cap)
    for name, every, closer in (("reuse-inside", ms(250), C), ("reuse-outside", sec(3.5), C),
                                ("reuse-server-closes", ms(250), S)):
        cap = Capture(random.Random(name))
        cycling_client(cap, ports=20, rounds=3, every=every, closer=closer)  # wraps after 5 s / 70 s
        files[name] = write(out, f"{name}.pcap", cap)
    cap = Capture(random.Random("many-ports"))  # 600 fresh ports within 30 s, no reuse
    cycling_client(cap, ports=600, rounds=1, every=ms(50))
    files["many-ports"] = write(out, "many-ports.pcap", cap)
    cap = Capture(random.Random("client-path-lost"))
    client_path_lost(cap, 200)
    files["client-path-lost"] = write(out, "client-path-lost.pcap", cap)
    return files


def test_unanswered_syns_from_many_sources_are_a_flood(built: dict[str, Path]) -> None:
    [finding] = of(run(built["unanswered-spoofed"]), SynFlood.id)
    m = finding.evidence.metrics
    assert finding.title == "SYN flood on 10.5.0.80:443 (unanswered SYNs)" and finding.severity is Severity.HIGH
    assert m["unanswered_in_window"] == 300 and m["distinct_sources"] == 300
    assert any("No SYN-ACK" in c for c in finding.caveats) and len(finding.evidence.frames) == 50
    assert not of(run(built["unanswered-spoofed"], {SynFlood.id: {"min_sources": 301}}), SynFlood.id)


def test_equal_floods_are_ordered_by_server_however_the_capture_is_batched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three servers flooded alike, the highest address first: the findings come by server address, in one
    batch and in a batch per packet alike (not in the order the servers first appeared), each naming the same
    top source."""
    rng = random.Random(9)
    spoofed = [Host(f"198.18.{i // 250}.{1 + i % 250}", GATEWAY.mac, ttl=rng.randrange(40, 250)) for i in range(300)]
    cap = Capture(random.Random("three"))
    for order, server in enumerate((host("10.5.0.83", 5083), host("10.5.0.82", 5082), host("10.5.0.81", 5081))):
        for i, src in enumerate(spoofed):
            t = BASE_NS + ms(order) + us(10 * i)
            cap.ip(t, src, server, b.PROTO_TCP, b.tcp(src.ip, server.ip, 1024 + i, 443, rng.getrandbits(32), 0,
                                                      b.SYN, window=512))
    path = write(tmp_path, "three.pcap", cap)
    # every source sent one SYN to each: the top source is a tie, settled by address whatever the batching
    expected = [(f"SYN flood on 10.5.0.{n}:443 (unanswered SYNs)", "198.18.0.1") for n in (81, 82, 83)]
    assert [(f.title, f.evidence.metrics["top_source"]) for f in of(run(path), SynFlood.id)] == expected
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 200)
    assert [(f.title, f.evidence.metrics["top_source"]) for f in of(run(path), SynFlood.id)] == expected


def test_unanswered_syns_from_one_client_are_not_a_flood(built: dict[str, Path]) -> None:
    assert not run(built["unanswered-one"])


def test_half_opens_from_one_source_name_the_source(built: dict[str, Path]) -> None:
    [finding] = of(run(built["half-open-one"]), SynFlood.id)
    m = finding.evidence.metrics
    assert m["half_open_in_window"] == 300 and m["distinct_sources"] == 1
    assert finding.evidence.hosts == ["10.5.0.80", "198.51.100.7"]
    assert "one client or tool (top source 198.51.100.7 with 300)" in finding.summary
    assert "none shows a SYN-ACK retransmission" in finding.summary  # the built server never retransmits


def test_reuse_inside_time_wait_is_exhaustion(built: dict[str, Path]) -> None:
    findings = run(built["reuse-inside"])
    [finding] = of(findings, PortExhaustion.id)
    m = finding.evidence.metrics
    assert finding.severity is Severity.MEDIUM  # reuse without rejected answers
    assert m["reuses_in_time_wait"] == 40 and m["distinct_ports_in_window"] == 20 and m["reuses_rejected"] == 0
    assert 4.5 < m["reuse_gap_min_s"] < 5.0
    assert not of(findings, SynFlood.id)
    assert not of(run(built["reuse-inside"], {PortExhaustion.id: {"time_wait_s": 4.0}}), PortExhaustion.id)


def test_reuse_after_time_wait_is_not(built: dict[str, Path]) -> None:
    assert not run(built["reuse-outside"])


def test_range_utilisation_without_reuse(built: dict[str, Path]) -> None:
    """600 ports in use within TIME_WAIT: nothing against the default range, 60 % of a 1000-port range."""
    assert not run(built["many-ports"])
    narrow = {"port_range_low": 50000, "port_range_high": 50999}
    [finding] = of(run(built["many-ports"], {PortExhaustion.id: narrow}), PortExhaustion.id)
    m = finding.evidence.metrics
    assert finding.severity is Severity.MEDIUM and m["utilisation"] == 0.6 and m["reuses_in_time_wait"] == 0
    assert m["distinct_ports_in_window"] == 600 and m["observed_ports"] == [50000, 50599]
    assert len(finding.evidence.frames) == 50 and finding.filter == frame_filter(finding.evidence.frames)
    assert "60.0% of the 50000-50999 range" in finding.summary and "reused" not in finding.summary
    high = narrow | {"high_utilisation": 0.6}
    assert of(run(built["many-ports"], {PortExhaustion.id: high}), PortExhaustion.id)[0].severity is Severity.HIGH


def test_the_side_that_closes_first_holds_time_wait(built: dict[str, Path]) -> None:
    [finding] = of(run(built["reuse-server-closes"]), PortExhaustion.id)
    m = finding.evidence.metrics
    assert m["server_closed_first"] == 60 and m["client_closed_first"] == 0
    assert "the server closes first in 100% of connections, so the server holds TIME_WAIT" in finding.summary


def test_half_opens_the_server_went_on_from_are_not_counted(built: dict[str, Path]) -> None:
    """The client's ACKs take a path the capture does not see; the server's data proves it left SYN_RECV."""
    assert not run(built["client-path-lost"])
    assert not run(built["client-path-lost"], {SynFlood.id: {"min_half_open": 1, "min_unanswered": 1}})


# -------------------------------------------------------------------------------------------------- helpers


def test_windowed_bins_fold_keeps_the_peak() -> None:
    """Folding old bins away (bounded memory) must not lose the busiest window."""
    bins = WindowedBins(("a",), 1.0, 10.0, {"a": Rank((1,), ("a",))}, ("a",), max_keys=4, max_rows=30)
    bins.bins.pending_limit = bins.totals.pending_limit = 5  # reduce (and fold) often
    bins.add(np.zeros(3, dtype=np.int64), np.array([5.0, 6.0, 7.0]), np.array([[50], [50], [50]]))  # 150 in 3 s
    for t in range(100, 200):
        bins.add(np.zeros(1, dtype=np.int64), np.array([float(t)]), np.array([[1]]))
    assert len(bins.bins.frame()) <= 30 + 5
    [peak] = bins.peaks("a").to_dict("records")
    assert (peak["kid"], peak["score"], peak["a"], peak["start"], peak["end"]) == (0, 150, 150, 5.0, 8.0)
    assert bins.total(0) == {"a": 250}


def test_windowed_bins_drop_the_quietest_keys() -> None:
    bins = WindowedBins(("a",), 1.0, 10.0, {"a": Rank((1,), ("a",))}, ("a",), max_keys=4)
    bins.bins.pending_limit = 1
    dropped = [bins.add(np.array([i]), np.array([1.0]), np.array([[i + 1]])) for i in range(5)]
    assert all(len(d) == 0 for d in dropped[:4])
    assert sorted(dropped[4]) == [0, 1, 2] and bins.dropped_keys == 3  # back to half the cap
    assert sorted(bins.peaks("a")["kid"]) == [3, 4]


def test_windowed_bins_halve_keys_when_recent_rows_overflow() -> None:
    """Folding cannot help when every key is busy right now; then the quieter half of the keys goes."""
    bins = WindowedBins(("a",), 1.0, 100.0, {"a": Rank((1,), ("a",))}, ("a",), max_keys=100, max_rows=20)
    bins.bins.pending_limit = 50
    kids, times = np.repeat(np.arange(10), 5), np.tile(np.arange(5.0), 10)
    dropped = bins.add(kids, times, (kids + 1)[:, None])
    assert sorted(dropped) == list(range(6)) and len(bins.bins.frame()) == 20
    assert sorted(bins.peaks("a")["kid"]) == [6, 7, 8, 9]


def test_factorize_rows_numbers_rows_like_a_multiindex() -> None:
    """Equal rows share a code, codes count up in order of first appearance, `first` is where each appears."""
    rng = np.random.default_rng(5)
    columns = [pd.Series(rng.choice(["10.0.0.1", "10.0.0.2", "::1"], 500), dtype="str"), rng.integers(0, 4, 500)]
    codes, first = factorize_rows(columns)
    expected, uniques = pd.MultiIndex.from_arrays(columns).factorize()
    assert codes.tolist() == expected.tolist() and len(first) == len(uniques)
    assert first.tolist() == [codes.tolist().index(code) for code in range(len(first))]
    assert [len(part) for part in factorize_rows([np.zeros(0)])] == [0, 0]


def test_key_ids_are_stable_and_forgettable() -> None:
    ids = KeyIds(["a", "b"])
    first = ids.encode(pd.DataFrame({"a": ["x", "y", "x"], "b": [1, 2, 1]}))
    again = ids.encode(pd.DataFrame({"a": ["y", "z"], "b": [2, 3]}))
    assert first.tolist() == [0, 1, 0] and again.tolist() == [1, 2] and ids.key(2) == ("z", 3)
    ids.forget(np.array([0]))
    assert ids.encode(pd.DataFrame({"a": ["x"], "b": [1]})).tolist() == [3]


def test_addresses_render_as_ipaddress_does() -> None:
    """Flow records format IPv4 addresses themselves (faster than ipaddress): the text must be the same."""
    import ipaddress

    from pcapsense.flowrecords import address_text

    rng = random.Random(7)
    for value in [0, 1, 0x7F000001, 0xFFFFFFFF, *(rng.getrandbits(32) for _ in range(2000))]:
        assert address_text(0, 0xFFFF << 32 | value) == str(ipaddress.IPv4Address(value))
    v6 = ipaddress.IPv6Address("2001:db8::1")
    assert address_text(int(v6) >> 64, int(v6) & (2**64 - 1)) == "2001:db8::1"


# ---------------------------------------------------------------------------------------------- real captures

REAL_EXPECTED = {  # file -> titles of the findings it must produce; every other real capture must produce none
    "stopddos__pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng": ["SYN flood on 10.10.10.10:30120 (unanswered SYNs)"],
}
REAL_FILES = sorted(p.name for p in REAL_PCAPS.glob("*") if p.suffix != ".tsv") if REAL_PCAPS.is_dir() else []


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_captures(name: str) -> None:
    """Never crashes; fires only on the real SYN flood. The scan (chrissanders__synscan), the random-destination
    spoof (chrissanders__dosattack) and the SYN-ACK reflection (stopddos__amp.TCP.reflection.SYNACK) stay silent."""
    try:
        findings = run(REAL_PCAPS / name)
    except PcapsenseError:
        pytest.skip("not a capture pcapsense can read")
    assert [f.title for f in findings] == REAL_EXPECTED.get(name, [])
