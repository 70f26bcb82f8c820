"""L7 detectors against the sample captures, small purpose-built captures and the real captures.

The slowloris captures built here pin down edges of the rule the sample set does not: a header block that
completes late (never the signature), a header split over two quick segments, a partial header followed by
silence, a server that times the connection out (exact duration), and reconnects that are never concurrent.

Captures whose verdict depends on header segments after the request start are analysed twice: as the engine
reads files (16 MiB batches, so a small capture is one batch) and one packet per batch. The HTTP stream must hand
the detector the same segments either way. Captures whose requests all complete in their first segment need only
the engine's batching.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

import pcapsense.reader.open as reader_open
from pcapsense.detector import parse_overrides
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding, Severity
from pcapsense_detectors.slowloris import Slowloris
from sample_pcaps import build as b
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, ms, sec
from tests.conftest import REAL_PCAPS, TSHARK

REGISTRY = {Slowloris.id: Slowloris}
PER_PACKET_CHUNK = 64  # smaller than any record, so each read completes at most one packet: one per batch
WEB = Host("203.0.113.80", host("10.9.0.1", 9001).mac, ttl=54)
ATTACKER = host("10.9.0.66", 9066)
CLIENT = host("10.9.0.10", 9010)
HEAD = b"GET /?%d HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept-language: en-US\r\n"
TRICKLE = b"X-a: %d\r\n"
SAMPLE_NEGATIVES = ("http_keepalive_idle.pcap", "http_slow_upload.pcap", "healthy.pcap")
REAL_LOOKALIKES = ("zeek__http__methods.pcap", "suricata__http-range-multiflows__input.pcap",
                   "chrissanders__http_espn_fail.pcapng")


def tshark_frames(path: Path, display_filter: str) -> list[int]:
    out = subprocess.run([TSHARK, "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
                         check=True, capture_output=True, text=True).stdout
    return [int(n) for n in out.split()]


def run(path: Path, **overrides: object) -> list[Finding]:
    result = analyze(str(path), AnalysisOptions(registry=REGISTRY, overrides={Slowloris.id: overrides}))
    return [f for f in result.findings if f.detector == Slowloris.id]


# ------------------------------------------------------------------------------------------ capture builders


def write(out: Path, name: str, cap: Capture) -> Path:
    path = out / name
    path.write_bytes(cap.pcap().to_bytes())
    return path


def trickler(cap: Capture, client: Host, cport: int, t: int, *, lines: int, every: int, finish: bool = False,
             server_closes_after: int | None = None) -> TcpConn:
    """A connection that sends a partial request header, then one short header line every `every` ns."""
    conn = TcpConn(cap, client, WEB, cport, 80, t=t, rtt=ms(30))
    conn.handshake()
    conn.send(C, HEAD % cport)
    for i in range(lines):
        conn.idle(every)
        conn.send(C, TRICKLE % i)
    if finish:
        conn.send(C, b"\r\n", final_ack=False)
        conn.send(S, b.http_response(200, "OK", b"hello"))
    if server_closes_after is not None:
        conn.t = t + server_closes_after
        conn.send(S, b.http_response(408, "Request Timeout", b""), final_ack=False)
        conn.close(S)
    return conn


def healthy_get(cap: Capture, client: Host, cport: int, t: int) -> TcpConn:
    conn = TcpConn(cap, client, WEB, cport, 80, t=t, rtt=ms(30))
    conn.handshake()
    conn.exchange(b.http_request("GET", "/", b"shop.example.com", [(b"User-Agent", b"curl/8.5.0")]),
                  b.http_response(200, "OK", bytes(3000)))
    return conn


def partial_then(cap: Capture, cport: int, *, rest: bytes | None, idle: int) -> None:
    """A partial header, then either its quick remainder and a response, or nothing; `idle` ns later the close."""
    conn = TcpConn(cap, CLIENT, WEB, cport, 80, t=BASE_NS, rtt=ms(30))
    conn.handshake()
    conn.send(C, HEAD % cport)
    if rest is not None:
        conn.send(C, rest, final_ack=False)
        conn.send(S, b.http_response(200, "OK", bytes(500)))
    conn.idle(idle)
    conn.close(S)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Purpose-built captures, keyed by name."""
    out = tmp_path_factory.mktemp("l7")
    files: dict[str, Path] = {}

    cap = Capture(random.Random(1))  # 12 attacker connections open together, still trickling at capture end
    for i in range(12):
        trickler(cap, ATTACKER, 40000 + i, BASE_NS + ms(100 * i), lines=6, every=sec(10))
    healthy_get(cap, CLIENT, 51000, BASE_NS + sec(5)).close(C)
    files["attack"] = write(out, "attack.pcap", cap)

    cap = Capture(random.Random(2))  # one client; the server answers 408 and closes 30 s after the request start
    trickler(cap, CLIENT, 52000, BASE_NS, lines=3, every=sec(8), server_closes_after=sec(30))
    files["one"] = write(out, "one.pcap", cap)

    cap = Capture(random.Random(3))  # the attacker reconnects after each timeout: never two open at once
    t = BASE_NS
    for i in range(4):
        t = trickler(cap, ATTACKER, 41000 + i, t, lines=2, every=sec(9), server_closes_after=sec(25)).t + ms(5)
    files["sequential"] = write(out, "sequential.pcap", cap)

    cap = Capture(random.Random(4))  # headers complete after 45 s of trickling: slow, but not the signature
    trickler(cap, CLIENT, 53000, BASE_NS, lines=5, every=sec(9), finish=True).close(C)
    files["late-complete"] = write(out, "late_complete.pcap", cap)

    cap = Capture(random.Random(5))  # header split over two quick segments, then the connection idles 90 s
    partial_then(cap, 54000, rest=b"Accept: */*\r\n\r\n", idle=sec(90))
    files["split"] = write(out, "split.pcap", cap)

    cap = Capture(random.Random(6))  # a partial header, then 60 s of silence: stalled, but nothing trickles
    partial_then(cap, 55000, rest=None, idle=sec(60))
    files["stalled"] = write(out, "stalled.pcap", cap)
    return files


# ------------------------------------------------------------------------------------------ batching modes


@pytest.fixture(params=["one-batch", "per-packet"])
def batching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "per-packet":
        monkeypatch.setattr(reader_open, "CHUNK_BYTES", PER_PACKET_CHUNK)
    yield request.param


@pytest.fixture
def positive(batching: str) -> str:
    """Batching mode for a check that needs the trickle segments: both must give the same verdict."""
    return batching


# ------------------------------------------------------------------------------------------ built captures


def test_many_concurrent_trickling_connections_are_an_attack(built: dict[str, Path], positive: str) -> None:
    [f] = run(built["attack"])
    m = f.evidence.metrics
    assert f.severity is Severity.HIGH
    assert (m["client"], m["server"], m["port"]) == (ATTACKER.ip, WEB.ip, 80)
    assert m["connections"] == 12 and m["max_concurrent"] == 12
    assert 60 <= m["header_duration_s_min"] <= m["header_duration_s_max"] < 61
    assert m["header_limit_s"] == pytest.approx(20 + (len(HEAD % 40011) + 6 * len(TRICKLE % 5)) / 500, abs=0.01)
    assert m["trickle_segments"] == 72 and m["trickle_gap_s_mean"] == pytest.approx(10, abs=0.1)
    assert m["header_rate_bytes_s_max"] < 3 and m["http_hosts"] == ["shop.example.com"]
    assert sorted(f.evidence.hosts) == sorted([ATTACKER.ip, WEB.ip])
    assert {(fl.src, fl.dst, fl.dport) for fl in f.evidence.flows} == {(ATTACKER.ip, WEB.ip, 80)}
    assert len(f.evidence.flows) == 12 and len(f.evidence.frames) == 12 + 12 * 3  # starts + 3 trickles each
    assert any("12 of 12 connections were still open" in c for c in f.caveats)
    assert "up to 12 open at once" in f.summary and f"{WEB.ip}:80" in f.summary


def test_one_connection_is_a_slow_client(built: dict[str, Path], positive: str) -> None:
    [f] = run(built["one"])
    m = f.evidence.metrics
    assert f.severity is Severity.LOW
    assert (m["client"], m["connections"], m["max_concurrent"], m["trickle_segments"]) == (CLIENT.ip, 1, 1, 3)
    assert 30 <= m["header_duration_s_max"] < 31
    assert not any("still open" in c for c in f.caveats)  # the server closed it: the duration is exact
    # the request start (frame 4, after the handshake) and its three trickles, each answered by a server ACK
    assert f.evidence.frames == [4, 6, 8, 10]
    if TSHARK:  # the filter selects exactly the evidence in Wireshark
        assert tshark_frames(built["one"], f.filter) == f.evidence.frames


def test_reconnecting_one_at_a_time_is_not_concurrent(built: dict[str, Path], positive: str) -> None:
    [f] = run(built["sequential"])
    assert (f.evidence.metrics["connections"], f.evidence.metrics["max_concurrent"]) == (4, 1)
    assert f.severity is Severity.LOW


@pytest.mark.parametrize("name", ["late-complete", "split", "stalled"])
def test_silent_without_the_signature(built: dict[str, Path], batching: str, name: str) -> None:
    assert run(built[name]) == []


def test_overrides_change_the_verdict(built: dict[str, Path], positive: str) -> None:
    overrides = parse_overrides(["slowloris.browser_max_connections=12"], REGISTRY)  # as `--set` passes it
    [f] = run(built["attack"], **overrides[Slowloris.id])
    assert f.severity is Severity.MEDIUM
    assert run(built["one"], header_timeout_s=31.0) == []  # the server closed it 30 s after the request start
    assert run(built["one"], min_trickles=4) == []
    assert run(built["one"], trickle_gap_s=9.0) == []  # the trickles come 8 s apart
    assert len(run(built["stalled"], min_trickles=0)) == 1


def test_batches_without_flows_while_a_header_is_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ARP broadcasts between trickles: one packet per batch puts each in a batch without any TCP flow."""
    cap = Capture(random.Random(7))
    conn = trickler(cap, CLIENT, 56000, BASE_NS, lines=3, every=sec(10))
    for k in range(30):
        cap.arp_request(BASE_NS + sec(k + 0.5), CLIENT, "10.9.0.1")
    conn.close(C)
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", PER_PACKET_CHUNK)
    [f] = run(write(tmp_path, "arp_between.pcap", cap))
    assert f.severity is Severity.LOW and f.evidence.metrics["trickle_segments"] == 3


# ------------------------------------------------------------------------------------------ sample captures


def data_frames(path: Path) -> dict[int, tuple[str, str, int, bytes]]:
    """Frame number -> (src, dst, dport, payload) of every TCP segment carrying data."""
    out = {}
    with path.open("rb") as fh:
        for number, (_ts, buf) in enumerate(dpkt.pcap.Reader(fh), start=1):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.data:
                out[number] = (dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst), ip.data.dport,
                               bytes(ip.data.data))
    return out


def test_slowloris_sample(samples: Path, positive: str) -> None:
    path = samples / "slowloris.pcap"
    data = data_frames(path)
    starts = {n for n, (_s, _d, _p, payload) in data.items() if payload.startswith(b"GET /?")}
    [f] = run(path)
    m = f.evidence.metrics
    assert f.severity is Severity.HIGH
    assert (m["client"], m["server"], m["port"]) == ("198.51.100.66", "10.0.0.80", 80)
    # 60 connections are opened; a client port the generator drew twice supersedes the earlier connection
    assert m["connections"] == m["max_concurrent"] >= 55
    assert m["header_duration_s_min"] > 60 and m["header_limit_s"] < 21 and m["header_rate_bytes_s_max"] < 2
    assert m["trickle_gap_s_mean"] == pytest.approx(10, abs=0.5) and m["trickle_bytes_mean"] < 12
    assert len(f.evidence.frames) == 50
    assert all(data[n][:3] == ("198.51.100.66", "10.0.0.80", 80) for n in f.evidence.frames)
    assert len(starts & set(f.evidence.frames)) == 40  # request starts first, then trickles
    if TSHARK:
        assert tshark_frames(path, f.filter) == f.evidence.frames
    assert {str(fl).split(" -> ")[1] for fl in f.evidence.flows} == {"10.0.0.80:80"}
    assert any("still open" in c for c in f.caveats)


def test_slow_client_sample(samples: Path, positive: str) -> None:
    [f] = run(samples / "slow_client.pcap")
    m = f.evidence.metrics
    assert f.severity is Severity.LOW
    assert (m["client"], m["server"], m["port"], m["connections"]) == ("192.0.2.77", "10.0.0.80", 80, 1)
    assert m["trickle_segments"] == 7 and m["trickle_bytes_mean"] == 1.0
    assert m["header_duration_s_max"] > 70
    assert len(f.evidence.frames) == 4  # the request start and three of its one-byte trickles
    assert m["http_hosts"] == []  # its Host header never arrived (a missing host is not a NaN host)


def test_silent_where_the_manifest_says_so(samples: Path, manifest: list[dict]) -> None:
    silent = [e["file"] for e in manifest if Slowloris.id in e["expect_silent"]]
    assert set(SAMPLE_NEGATIVES) <= set(silent)
    assert {name: run(samples / name) for name in silent} == {name: [] for name in silent}


# ------------------------------------------------------------------------------------------ real captures


@pytest.mark.skipif(not (REAL_PCAPS / "MANIFEST.tsv").is_file(), reason="../shared/pcaps/real not present")
def test_real_captures_do_not_crash_and_stay_silent() -> None:
    """None of the real captures holds an HTTP request whose headers never complete."""
    fired = {}
    for path in sorted(p for p in REAL_PCAPS.iterdir() if p.suffix != ".tsv"):
        try:
            fired[path.name] = len(run(path))
        except PcapsenseError:
            continue
    assert set(REAL_LOOKALIKES) <= set(fired)
    assert {name: n for name, n in fired.items() if n} == {}
