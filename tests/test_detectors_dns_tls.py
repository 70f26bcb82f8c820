"""dns-failure and tls-handshake-failure: where they fire, where they stay silent, and what `--set` changes.

The sample captures are generated once per module; small captures for edge cases (ambiguity at the capture
end, one-sided captures, reflected responses, blocked TCP/53) are built here with the generator's helpers.
Evidence frames are checked against tshark's own dissection where it is installed.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pcapsense.detector import CaptureContext, Detector, parse_overrides
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding, FlowRef, Severity
from pcapsense_detectors.dns_failure import DnsFailure
from pcapsense_detectors.tls_handshake_failure import TlsHandshakeFailure
from sample_pcaps import build as b
from sample_pcaps.generate import generate
from sample_pcaps.scenarios.common import (
    BASE_NS,
    C,
    Capture,
    Host,
    S,
    TcpConn,
    dns_exchange,
    host,
    ms,
    sec,
    tls12_handshake,
)
from sample_pcaps.writer import PcapFile

REAL = Path("/work/shared/pcaps/real")
DETECTORS: dict[str, type[Detector]] = {DnsFailure.id: DnsFailure, TlsHandshakeFailure.id: TlsHandshakeFailure}
CLIENT = host("10.9.0.10", 9010)
RESOLVER = host("10.9.0.53", 9053)
SERVER = Host("198.51.100.90", host("10.9.0.1", 9001).mac, ttl=50)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("samples")
    return out, generate(out)


def run(path: Path | str, cls: type[Detector], sets: tuple[str, ...] = ()) -> list[Finding]:
    """Analyse with one detector; `sets` are `--set` strings, parsed the way the command line parses them."""
    registry = {cls.id: cls}
    return analyze(str(path), AnalysisOptions(registry=registry, overrides=parse_overrides(sets, registry))).findings


def by_kind(findings: list[Finding], key: str) -> dict[str, Finding]:
    kinds = {f.evidence.metrics[key]: f for f in findings}
    assert len(kinds) == len(findings), "one finding per kind expected"
    return kinds


def write(tmp_path: Path, name: str, cap: Capture) -> Path:
    path = tmp_path / name
    path.write_bytes(PcapFile(cap.linktypes[0], cap.records()).to_bytes())
    return path


def tshark_rows(path: Path, frames: list[int], *fields: str) -> dict[int, list[str]]:
    """frame -> the requested fields, as tshark dissects them."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "frame.number in {" + ", ".join(map(str, frames)) + "}", "-T", "fields",
         "-e", "frame.number", *(arg for f in fields for arg in ("-e", f))],
        capture_output=True, text=True, check=True).stdout
    return {int(cols[0]): cols[1:] for cols in (line.split("\t") for line in out.splitlines())}


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


# -- the sample manifest, both detectors ------------------------------------------------------------------------


@pytest.mark.parametrize("det_id", sorted(DETECTORS))
def test_manifest_expectations(samples: tuple[Path, list[dict[str, Any]]], det_id: str) -> None:
    """Fires on every sample that expects it, and on none that expects silence (incl. healthy, *_healthy)."""
    out, manifest = samples
    fire = [e["file"] for e in manifest if det_id in e["expect_fire"]]
    silent = [e["file"] for e in manifest if det_id in e["expect_silent"]]
    assert fire and {"healthy.pcap", f"{det_id.split('-')[0]}_healthy.pcap"} <= set(silent)
    for name in fire:
        assert run(out / name, DETECTORS[det_id]), f"{det_id} silent on {name}"
    for name in silent:
        assert not run(out / name, DETECTORS[det_id]), f"{det_id} fired on {name}"


# -- dns-failure --------------------------------------------------------------------------------------------------


def test_dns_failure_sample(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = samples
    kinds = by_kind(run(out / "dns_failure.pcap", DnsFailure), "kind")
    assert set(kinds) == {"no-answer", "error-rcode", "slow", "truncated", "nxdomain"}
    for f in kinds.values():
        assert f.layer == "DNS" and f.detector == "dns-failure"
        assert f.evidence.hosts[:2] == ["192.168.7.53", "192.168.7.10"]
        assert f.evidence.metrics["resolver"] == "192.168.7.53"

    lost = kinds["no-answer"]
    assert lost.severity == Severity.MEDIUM  # the resolver answered other queries: not down, losing some
    assert set(lost.evidence.metrics["names"]) == {"intranet.corp.example", "files.corp.example"}
    assert lost.evidence.metrics["unanswered"] == lost.evidence.metrics["confirmed"] == 2
    assert lost.evidence.metrics["max_attempts"] == 4
    assert len(lost.evidence.frames) == 8  # 4 attempts of each name
    assert not lost.caveats

    errors = kinds["error-rcode"]
    assert errors.severity == Severity.MEDIUM
    assert errors.evidence.metrics["rcodes"] == {"SERVFAIL": 1, "REFUSED": 1}
    assert set(errors.evidence.metrics["names"]) == {"broken.example.net", "internal.example.org"}
    assert "SERVFAIL" in errors.summary and "192.168.7.53:53" in errors.summary

    slow = kinds["slow"]
    assert slow.severity == Severity.MEDIUM
    assert slow.evidence.metrics["max_latency_s"] == pytest.approx(1.5, abs=0.01)
    assert list(slow.evidence.metrics["names"]) == ["slow.example.com"]

    truncated = kinds["truncated"]
    assert truncated.severity == Severity.MEDIUM
    assert list(truncated.evidence.metrics["names"]) == ["big.example.com"]
    assert truncated.evidence.metrics["tcp53_connections_failed"] == 0

    nx = kinds["nxdomain"]
    assert nx.severity == Severity.INFO  # 12 names is below the sourced burst threshold of 50
    assert nx.evidence.metrics["nxdomain_names"] == nx.evidence.metrics["peak_in_window"] == 12
    assert all(name.endswith(".example-typo.com") for name in nx.evidence.metrics["names"])
    assert all(f.filter.startswith("frame.number in {") for f in kinds.values())


@needs_tshark
def test_dns_evidence_frames_are_what_they_claim(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = samples
    path = out / "dns_failure.pcap"
    kinds = by_kind(run(path, DnsFailure), "kind")
    errors = kinds["error-rcode"].evidence.frames
    rows = tshark_rows(path, errors, "dns.flags.response", "dns.flags.rcode", "dns.qry.name")
    assert sorted(rcode for response, rcode, _ in rows.values() if response == "1") == ["2", "5"]
    lost = kinds["no-answer"].evidence.frames
    rows = tshark_rows(path, lost, "dns.flags.response", "dns.qry.name")
    assert {tuple(r) for r in rows.values()} == {("0", "intranet.corp.example"), ("0", "files.corp.example")}
    rows = tshark_rows(path, kinds["truncated"].evidence.frames, "dns.flags.truncated", "dns.qry.name")
    assert ["1", "big.example.com"] in rows.values()


def test_dns_thresholds_can_be_set(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = samples
    path = out / "dns_failure.pcap"
    kinds = by_kind(run(path, DnsFailure, ("dns-failure.nxdomain_burst=10", "dns-failure.slow_s=2")), "kind")
    assert "slow" not in kinds  # 1.5 s is no longer slow
    assert kinds["nxdomain"].severity == Severity.MEDIUM
    assert kinds["nxdomain"].evidence.metrics["burst_clients"] == ["192.168.7.10"]
    # with a 3-attempt rule and a 20 s wait, the 4-attempt queries still count, as confirmed by attempts alone
    kinds = by_kind(run(path, DnsFailure, ("dns-failure.no_answer_attempts=5", "dns-failure.no_answer_s=20")), "kind")
    lost = kinds["no-answer"]
    assert lost.severity == Severity.LOW and lost.evidence.metrics["confirmed"] == 0
    assert any("not have been answered yet" in c for c in lost.caveats)


@pytest.mark.parametrize(("tail_s", "expected"), [(2.0, Severity.LOW), (0.5, None)])
def test_dns_query_near_capture_end_is_ambiguous(tmp_path: Path, tail_s: float, expected: Severity | None) -> None:
    """A single query the capture stopped watching after 2 s is only a caveated hint; after 0.5 s, nothing."""
    cap = Capture(random.Random(7))
    dns_exchange(cap, BASE_NS, CLIENT, RESOLVER, "late.example.com", latency=None)
    dns_exchange(cap, BASE_NS + sec(tail_s), CLIENT, RESOLVER, "ok.example.com",
                 answers=[b.a_record("192.0.2.1")], latency=ms(1))
    findings = run(write(tmp_path, "late.pcap", cap), DnsFailure)
    if expected is None:
        assert not findings
        return
    (finding,) = findings
    assert finding.severity == expected and finding.evidence.metrics["kind"] == "no-answer"
    assert finding.evidence.metrics["ambiguous"] == 1
    assert any("not have been answered yet" in c for c in finding.caveats)


def test_dns_reflected_responses_and_mdns_are_not_failures(tmp_path: Path) -> None:
    """Responses nobody here asked for (an amplification victim) and unanswered mDNS queries stay silent."""
    rng = random.Random(8)
    cap = Capture(rng)
    victim, reflector = host("10.9.0.99", 9099), Host("192.0.2.53", CLIENT.mac, ttl=40)
    for i in range(20):
        answer = b.dns_response(i, "isc.org", b.QTYPE_A, rcode=b.RCODE_SERVFAIL if i % 2 else b.RCODE_NOERROR)
        cap.udp(BASE_NS + ms(10 * i), reflector, victim, 53, 40000 + i, answer)
    mdns = Host("224.0.0.251", b"\x01\x00\x5e\x00\x00\xfb")
    for attempt in range(3):
        cap.udp(BASE_NS + sec(4 * attempt), CLIENT, mdns, 5353, 5353, b.dns_query(0, "printer.local"))
    assert not run(write(tmp_path, "reflected.pcap", cap), DnsFailure)


def test_dns_truncated_answer_with_tcp53_blocked(tmp_path: Path) -> None:
    """TC=1, then the client's TCP/53 SYNs go unanswered: a firewall passes only UDP/53."""
    rng = random.Random(9)
    cap = Capture(rng)
    dns_exchange(cap, BASE_NS, CLIENT, RESOLVER, "big.example.com", qtype=b.QTYPE_TXT, truncated=True,
                 latency=ms(2))
    tcp = TcpConn(cap, CLIENT, RESOLVER, 45000, 53, t=BASE_NS + ms(3))
    for attempt in range(3):
        tcp.emit(C, b.SYN, at=BASE_NS + ms(3) + sec(attempt), seq=tcp.snd[C])
    findings = run(write(tmp_path, "tc_blocked.pcap", cap), DnsFailure)
    (finding,) = findings
    assert finding.evidence.metrics["kind"] == "truncated" and finding.severity == Severity.MEDIUM
    assert finding.evidence.metrics["tcp53_connections_failed"] == 1
    assert "never answered or was refused" in finding.summary
    assert 3 in finding.evidence.frames  # the first SYN (frames 1-2 are the UDP query and its TC=1 answer)


class _OneByOne(DnsFailure):
    """dns-failure with every message matched one at a time (no plain exchange counted vectorised)."""

    def _plain_exchanges(self, msgs: dict[str, Any]) -> Any:
        return super()._plain_exchanges({name: values[:0] for name, values in msgs.items()})


def test_dns_plain_exchanges_count_as_matching_one_by_one(tmp_path: Path) -> None:
    """Counting plain exchanges vectorised gives exactly the findings of matching every message one by one, on
    traffic mixing them with everything that is not plain: retries, slow, missing, failed, NXDOMAIN and truncated
    answers, a wrong id, the same name asked twice at once."""
    rng = random.Random(11)
    cap = Capture(rng)
    clients = [host(f"10.9.1.{i}", 9100 + i) for i in range(1, 25)]
    resolvers = [RESOLVER, host("10.9.0.54", 9054)]
    outcomes = ["plain"] * 12 + ["slow", "none", "retry", "servfail", "nxdomain", "truncated", "wrong-id", "twice"]
    for i in range(3000):
        t, client, resolver = BASE_NS + ms(7 * i), rng.choice(clients), rng.choice(resolvers)
        name, outcome = f"n{rng.randrange(60)}.example.com", rng.choice(outcomes)
        latency = {"slow": sec(1.5), "none": None}.get(outcome, ms(rng.randrange(1, 900)))
        rcode = {"servfail": b.RCODE_SERVFAIL, "nxdomain": b.RCODE_NXDOMAIN}.get(outcome, b.RCODE_NOERROR)
        if outcome in ("retry", "twice"):
            dns_exchange(cap, t, client, resolver, name, latency=None, sport=40000 + i % 1000)
        if outcome == "wrong-id":
            cap.udp(t + ms(3), resolver, client, 53, 40000 + i % 1000, b.dns_response(1, name, b.QTYPE_A))
        dns_exchange(cap, t + (ms(1) if outcome in ("retry", "twice") else 0), client, resolver, name,
                     latency=latency, rcode=rcode, truncated=outcome == "truncated",
                     sport=40000 + i % 1000 if outcome == "retry" else None,
                     answers=[b.a_record("192.0.2.7")] if rcode == b.RCODE_NOERROR else ())
    path = write(tmp_path, "mixed_dns.pcap", cap)
    findings = [f.to_dict() for f in run(path, DnsFailure)]
    assert {f["evidence"]["metrics"]["kind"] for f in findings} >= {"no-answer", "error-rcode", "slow", "nxdomain"}
    assert findings == [f.to_dict() for f in run(path, _OneByOne)]


def _dns_rows(*messages: tuple[float, bool, int]) -> pd.DataFrame:
    """dns stream rows of (ts, is_response, id) between CLIENT:40000 and RESOLVER:53 for one name."""
    rows = [{"frame": i + 1, "ts": ts, "conn_id": 1, "src": RESOLVER.ip if response else CLIENT.ip,
             "sport": 53 if response else 40000, "dst": CLIENT.ip if response else RESOLVER.ip,
             "dport": 40000 if response else 53, "transport": "udp", "id": txid, "is_response": response,
             "opcode": 0, "rcode": 0, "truncated": False, "qname": "api.example.com", "qtype": 1}
            for i, (ts, response, txid) in enumerate(messages)]
    return pd.DataFrame(rows)


def test_dns_exchange_pending_from_an_earlier_delivery_is_not_plain() -> None:
    """A retry answered in the next delivery looks plain there, but the client has been waiting since its
    first attempt: the answer is slow."""
    det = DnsFailure(DnsFailure.Thresholds(), CaptureContext("x", (1,), 1))
    det.on_dns(_dns_rows((0.0, False, 1)))
    det.on_dns(_dns_rows((2.0, False, 2), (2.01, True, 2)))
    (finding,) = det.finish()
    assert finding.evidence.metrics["kind"] == "slow" and finding.evidence.metrics["max_latency_s"] == 2.01
    assert det.queries[RESOLVER.ip] == det.answered[RESOLVER.ip] == 1


# -- tls-handshake-failure ----------------------------------------------------------------------------------------


def test_tls_failure_sample(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = samples
    outcomes = by_kind(run(out / "tls_failure.pcap", TlsHandshakeFailure), "outcome")
    assert {o: (f.evidence.metrics["server"], f.evidence.metrics["sni"]) for o, f in outcomes.items()} == {
        "client-abort": ("203.0.113.50", "noreply.example.com"),
        "alert-server": ("203.0.113.51", "legacy.example.com"),
        "reset-middlebox": ("203.0.113.52", "blocked.example.com"),
        "alert-client": ("203.0.113.54", "selfsigned.example.com"),
    }
    for f in outcomes.values():
        metrics = f.evidence.metrics
        assert f.severity == Severity.HIGH and f.layer == "TLS"
        assert metrics["sni"] in f.summary and metrics["server"] in f.summary
        assert f.evidence.hosts == [metrics["server"], "192.168.9.10"]
        (flow,) = f.evidence.flows
        assert (flow.proto, flow.src, flow.dst, flow.dport) == ("tcp", "192.168.9.10", metrics["server"], 443)
        assert metrics["failed_connections"] == 1 and metrics["completed_handshakes"] == 0
    assert outcomes["alert-server"].evidence.metrics["alerts"] == {"handshake_failure": 1}
    assert outcomes["alert-client"].evidence.metrics["alerts"] == {"unknown_ca": 1}
    reset = outcomes["reset-middlebox"].evidence.metrics
    assert (reset["packet_ttl"], reset["server_ttl"], reset["ttl_delta"]) == (62, 52, 10)
    assert outcomes["client-abort"].evidence.metrics["max_wait_s"] == pytest.approx(10.0, abs=0.01)


@needs_tshark
def test_tls_evidence_frames_are_what_they_claim(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = samples
    path = out / "tls_failure.pcap"
    outcomes = by_kind(run(path, TlsHandshakeFailure), "outcome")
    for outcome, f in outcomes.items():
        rows = tshark_rows(path, f.evidence.frames, "tls.handshake.type", "tls.alert_message.level", "tcp.flags.reset",
                           "ip.ttl")
        first = rows[min(rows)]
        assert first[0] == "1", f"{outcome}: first evidence frame is not the ClientHello"
        if outcome.startswith("alert"):
            assert any(r[1] == "2" for r in rows.values())
        if outcome == "reset-middlebox":
            assert rows[max(rows)][2:] == ["1", "62"]


def test_tls_ttl_delta_can_be_set(samples: tuple[Path, list[dict[str, Any]]]) -> None:
    """With a tolerance above the 10-hop difference, the same RST is attributed to the server."""
    out, _ = samples
    outcomes = by_kind(run(out / "tls_failure.pcap", TlsHandshakeFailure, ("tls-handshake-failure.rst_ttl_delta=11",)),
                       "outcome")
    assert "reset-middlebox" not in outcomes
    assert outcomes["reset-server"].evidence.metrics["sni"] == "blocked.example.com"


def _silent_server(tmp_path: Path, tail_s: float) -> Path:
    """ClientHello ACKed by the server, then nothing; another host's DNS lookup `tail_s` later ends the capture."""
    rng = random.Random(10)
    cap = Capture(rng)
    conn = TcpConn(cap, CLIENT, SERVER, 50000, 443, t=BASE_NS)
    conn.handshake()
    conn.send(C, b.client_hello(rng, b"quiet.example.com"), final_ack=False)
    conn.emit(S, b.ACK, at=conn.t + conn.delay(S))
    dns_exchange(cap, conn.t + sec(tail_s), CLIENT, RESOLVER, "ok.example.com", answers=[b.a_record("192.0.2.1")])
    return write(tmp_path, f"quiet_{tail_s}.pcap", cap)


def test_tls_unanswered_client_hello_near_capture_end(tmp_path: Path) -> None:
    (finding,) = run(_silent_server(tmp_path, 3.0), TlsHandshakeFailure)
    assert finding.evidence.metrics["outcome"] == "no-server-hello" and finding.severity == Severity.LOW
    assert "quiet.example.com" in finding.summary and finding.caveats
    (finding,) = run(_silent_server(tmp_path, 3.0), TlsHandshakeFailure, ("tls-handshake-failure.no_server_hello_s=2",))
    assert finding.severity == Severity.HIGH and not finding.caveats
    assert not run(_silent_server(tmp_path, 0.5), TlsHandshakeFailure)


def test_tls_intermittent_failure_is_medium(tmp_path: Path) -> None:
    """One of two handshakes with the same server and SNI fails: intermittent, not down."""
    rng = random.Random(11)
    cap = Capture(rng)
    good = TcpConn(cap, CLIENT, SERVER, 50001, 443, t=BASE_NS)
    good.handshake()
    tls12_handshake(good, rng, b"api.example.com")
    good.close(C)
    bad = TcpConn(cap, CLIENT, SERVER, 50002, 443, t=BASE_NS + sec(1))
    bad.handshake()
    bad.send(C, b.client_hello(rng, b"api.example.com"), final_ack=False)
    bad.send(S, b.alert(b.ALERT_FATAL, b.ALERT_HANDSHAKE_FAILURE), final_ack=False)
    bad.close(S)
    (finding,) = run(write(tmp_path, "intermittent.pcap", cap), TlsHandshakeFailure)
    assert finding.severity == Severity.MEDIUM and finding.evidence.metrics["completed_handshakes"] == 1
    assert finding.evidence.flows == [FlowRef("tcp", CLIENT.ip, 50002, SERVER.ip, 443)]


def _alert_from_elsewhere(conn: TcpConn) -> None:
    """A fatal alert carrying the server's address but arriving with another TTL: a TLS-inspecting box."""
    server, (sport, cport) = conn.src[S], conn.ports[S]
    alert = b.alert(b.ALERT_FATAL, b.ALERT_HANDSHAKE_FAILURE)
    segment = b.tcp(server.ip, CLIENT.ip, sport, cport, conn.snd[S], conn.rcv[S], b.ACK | b.PSH, alert)
    conn.cap.ip(conn.t + ms(1), server, CLIENT, b.PROTO_TCP, segment, ttl=61)


def _server_fin(conn: TcpConn) -> None:
    conn.close(S)


@pytest.mark.parametrize(("react", "outcome"), [(_alert_from_elsewhere, "alert-middlebox"),
                                                 (_server_fin, "server-closed")])
def test_tls_other_outcomes(tmp_path: Path, react: Any, outcome: str) -> None:
    rng = random.Random(13)
    cap = Capture(rng)
    conn = TcpConn(cap, CLIENT, SERVER, 50004, 443, t=BASE_NS)
    conn.handshake()
    conn.send(C, b.client_hello(rng, b"odd.example.com"), final_ack=False)
    react(conn)
    (finding,) = run(write(tmp_path, f"{outcome}.pcap", cap), TlsHandshakeFailure)
    assert finding.evidence.metrics["outcome"] == outcome and finding.severity == Severity.HIGH
    assert "odd.example.com" in finding.summary


def test_tls_one_sided_capture_is_not_judged(tmp_path: Path) -> None:
    """Only the client's packets are in the capture: what the server answered is unknown, so no finding."""
    rng = random.Random(12)
    cap = Capture(rng)
    conn = TcpConn(cap, CLIENT, SERVER, 50003, 443, t=BASE_NS, invisible=(S,))
    conn.handshake()
    conn.send(C, b.client_hello(rng, b"inbound-only.example.com"), final_ack=False)
    conn.idle(sec(20))
    conn.close(C)
    assert not run(write(tmp_path, "one_sided.pcap", cap), TlsHandshakeFailure)


# -- real captures ------------------------------------------------------------------------------------------------

REAL_EXPECTED: dict[tuple[str, str], set[tuple[str, Severity]]] = {
    ("dns-failure", "chrissanders__stranded_branchdns.pcapng"): {("error-rcode", Severity.HIGH)},
    ("dns-failure", "chrissanders__dns_query_nonexistent.pcapng"): {("nxdomain", Severity.INFO)},
    ("dns-failure", "zeek__ticks-dns.pcap"): {("no-answer", Severity.HIGH)},
    ("dns-failure", "tcpdump__dns-badcookie.pcap"): set(),
    ("dns-failure", "stopddos__amp.dns.RRSIG.fragmented.pcap"): set(),
    ("dns-failure", "zeek__ipv6-fragmented-dns.pcap"): {("no-answer", Severity.LOW)},
    # its REFUSED answers are to dynamic UPDATEs (opcode 5), which are policy, not resolution failures
    ("dns-failure", "distance__lan-ip_conflict.pcapng"): {("no-answer", Severity.HIGH), ("nxdomain", Severity.INFO)},
    ("tls-handshake-failure", "suricata__tls-extra-alert__input.pcap"): {("alert-server", Severity.HIGH)},
    ("tls-handshake-failure", "zeek__tls13draft16-ff52.a01-aborted.pcap"): {("alert-server", Severity.HIGH)},
    ("tls-handshake-failure", "zeek__tls-early-alert.pcap"): set(),
    ("tls-handshake-failure", "zeek__hrr.pcap"): set(),
    ("tls-handshake-failure", "zeek__tls1.2.pcap"): set(),
    ("tls-handshake-failure", "arkime__tls-alpn-h2.pcap"): set(),
    ("tls-handshake-failure", "stopddos__amp.dns.RRSIG.fragmented.pcap"): set(),
}


@pytest.mark.skipif(not REAL.is_dir(), reason="real captures not available")
@pytest.mark.parametrize("det_id", sorted(DETECTORS))
def test_real_captures(det_id: str) -> None:
    """Never crashes on any real capture; on the ones with a known story, says exactly that."""
    checked = set()
    for path in sorted(p for p in REAL.iterdir() if p.name != "MANIFEST.tsv"):
        try:
            findings = run(path, DETECTORS[det_id])
        except PcapsenseError:
            continue
        key = "kind" if det_id == "dns-failure" else "outcome"
        got = {(f.evidence.metrics[key], f.severity) for f in findings}
        if (det_id, path.name) in REAL_EXPECTED:
            assert got == REAL_EXPECTED[(det_id, path.name)], path.name
            checked.add(path.name)
    assert checked == {name for d, name in REAL_EXPECTED if d == det_id}


def test_tls13_abort_names_sni_and_alert() -> None:
    path = REAL / "zeek__tls13draft16-ff52.a01-aborted.pcap"
    if not path.exists():
        pytest.skip("real captures not available")
    (finding,) = run(path, TlsHandshakeFailure)
    assert finding.evidence.metrics["failed_connections"] == 2
    assert finding.evidence.metrics["alerts"] == {"protocol_version": 2}
    assert "tls13.crypto.mozilla.org" in finding.summary and "protocol_version" in finding.summary
