"""tls-handshake-failure: TLS handshakes that never complete - rejected, reset, or left unanswered.

Why it matters (seed, "The Layered Mental Model for Incident Triage"): TLS is an explicit rung between L4 and L7,
one of "the two most common real-world culprits", with a one-line decisive test (`openssl s_client -connect
host:443 -servername host`); the TLS termination point is also the visibility boundary (seed §4), so who ended the
handshake - server, client, or a middlebox in between - decides who owns the fix.

What fires (research-anchors §2.8), per connection on which a ClientHello was seen, judged when its flow ends:
- a fatal alert (level 2) in plaintext, i.e. before encryption, from either side (which side is reported, with
  the alert's meaning: protocol_version, handshake_failure, unknown_ca, ...). Warning alerts are not failures;
- no ServerHello (a HelloRetryRequest counts as an answer: it is the normal TLS 1.3 key-share retry) and a RST
  after the ClientHello: the RST's TTL is compared with the server's (its SYN-ACK's) TTL. A difference of
  `rst_ttl_delta` or more means another box sent it - typically an SNI filter (PacketLens "Middlebox-injected
  RST"; Weaver, Sommer & Paxson, "Detecting Forged TCP Reset Packets", NDSS 2009);
- no ServerHello and the server closed (FIN), or the client gave up (FIN/RST), or nothing at all came back
  within `no_server_hello_s` - provided the capture holds at least one packet from the server on that
  connection: with none (a one-sided capture, e.g. inbound-only), what the server did is simply not in it.
  A ClientHello the capture watched for less than that is ambiguous (the capture may have stopped too early):
  low severity with a caveat once it waited `late_after_s`, not reported before.
Findings are grouped per (server, port, SNI, outcome); severity is high when no handshake with that server and
SNI completed in the capture, medium when some did (intermittent). The SNI comes from the packet (made printable
by the decoder's safe_text) and is quoted as given. State is bounded: one small record per open connection with a
ClientHello, dropped when its flow record arrives; every table is capped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import LAYER_OWNERS, Evidence, Finding, FlowRef, Severity, frame_filter

FATAL = 2
ANSWERS = ("server_hello", "hello_retry_request")
# Flow ends that prove the server stayed silent: the flow idled out, or the client reused the tuple for a new try.
SILENCE_PROVEN = ("idle-timeout", "superseded-by-reuse")
MAX_TRACKED = 100_000  # open connections with a ClientHello; judged failures waiting for the capture end
MAX_FRAMES = 50  # evidence frames per finding
MAX_LISTED = 20  # flows / clients listed per finding
FLOW_COLUMNS = ["conn_id", "orig", "orig_port", "resp", "resp_port", "pkts_o", "pkts_r", "synack_frame", "ttl_first_r",
                "rst_frame", "rst_dir", "rst_ttl", "fin_first_dir", "fin_ts", "last_frame", "last_ts",
                "end_reason"]  # what a connection is judged on

# What a fatal alert tells the on-call engineer (IANA TLS Alert registry meanings, RFC 8446 §6.2).
ALERT_MEANING = {
    "handshake_failure": "no acceptable cipher suite / parameters in common",
    "protocol_version": "no TLS version in common, one side too old or too strict",
    "insufficient_security": "the offered cipher suites are weaker than the peer requires",
    "inappropriate_fallback": "a version downgrade was detected by TLS_FALLBACK_SCSV",
    "unrecognized_name": "the server has no certificate/virtual host for this SNI",
    "no_application_protocol": "no ALPN protocol in common",
    "unknown_ca": "the certificate chain does not lead to a trusted CA",
    "bad_certificate": "the certificate is corrupt or its signature does not verify",
    "certificate_unknown": "the certificate was rejected, often for a wrong name or a missing intermediate",
    "certificate_expired": "a certificate in the chain has expired or is not yet valid",
    "certificate_revoked": "a certificate in the chain was revoked",
    "unsupported_certificate": "the certificate type is not supported",
    "certificate_required": "the server requires a client certificate for mTLS and none was sent",
    "access_denied": "the peer refused access by policy",
    "illegal_parameter": "a handshake field was out of range or inconsistent",
    "decode_error": "a handshake message could not be parsed",
    "internal_error": "the peer failed internally",
}


@dataclass(frozen=True)
class Thresholds:
    no_server_hello_s: float = tunable(
        10.0, source="Go net/http DefaultTransport TLSHandshakeTimeout = 10 s",
        doc="a ClientHello with no ServerHello, alert or close for this long is unanswered")
    late_after_s: float = tunable(
        1.0, source="RFC 6298 initial retransmission timeout (1 s): a server silent this long is already late",
        doc="an unanswered ClientHello the capture stopped watching sooner than `no_server_hello_s` is reported "
            "as ambiguous once it waited this long, and not at all before")
    rst_ttl_delta: int = tunable(
        2, source="Weaver, Sommer & Paxson, NDSS 2009 (TTL mismatch marks a forged RST); 2 tolerates a 1-hop "
                  "path change",
        doc="a RST whose TTL differs from the server's by at least this much was sent by a middlebox")


@dataclass
class _Handshake:
    """What one connection showed of its handshake, from the ClientHello on."""

    client_dir: int
    hello_frame: int
    hello_ts: float
    sni: str  # "" when the ClientHello names no server
    answer_frame: int = -1
    alert: tuple[int, int, str, int] | None = None  # frame, sender direction, alert name, TTL


@dataclass(frozen=True)
class _Outcome:
    title: str
    remedy: str
    owner: str
    always_high: bool = False


OUTCOMES: dict[str, _Outcome] = {
    "alert-server": _Outcome(
        "TLS handshake rejected by the server (fatal alert)",
        "Reproduce with `openssl s_client -connect SERVER:PORT -servername SNI` and align what the alert names "
        "(TLS versions, cipher suites, SNI/virtual host, client certificate) between client and server config.",
        LAYER_OWNERS["TLS"]),
    "alert-client": _Outcome(
        "TLS handshake aborted by the client (fatal alert)",
        "The client refused what the server offered: check the server's certificate chain (intermediates, name, "
        "expiry) with `openssl s_client -showcerts`, and the client's trust store and TLS settings.",
        LAYER_OWNERS["TLS"]),
    "alert-middlebox": _Outcome(
        "TLS alert sent by a middlebox, not the server",
        "A TLS-inspecting firewall or proxy on the path answered for the server: check its policy and logs for "
        "this SNI, or exempt the destination from inspection.",
        f"{LAYER_OWNERS['TLS']} (firewall / proxy owner)", always_high=True),
    "reset-middlebox": _Outcome(
        "TLS ClientHello reset by a middlebox (SNI filter)",
        "A device on the path (firewall, IPS, SNI/URL filter) forged the RST after reading the SNI: find it from "
        "the RST's TTL (hops away) and check its block policy and logs for this SNI.",
        f"{LAYER_OWNERS['TLS']} (firewall / SNI-filter owner)", always_high=True),
    "reset-server": _Outcome(
        "TLS ClientHello answered with a reset by the server",
        "The server (or its load balancer) reset right after the ClientHello: check that a TLS listener is bound "
        "to this port, that the SNI maps to a configured virtual host, and the server's TLS error log.",
        LAYER_OWNERS["TLS"]),
    "reset-unknown": _Outcome(
        "TLS ClientHello answered with a reset",
        "Something reset the connection right after the ClientHello; the capture has no other packet from the "
        "server to tell server from middlebox by TTL - capture nearer the server, or check firewalls for this SNI.",
        LAYER_OWNERS["TLS"]),
    "server-closed": _Outcome(
        "Server closed the connection after the ClientHello",
        "The server closed without a ServerHello: often no TLS on this port, an unknown SNI, or a version/cipher "
        "mismatch the server does not report; check the server's TLS error log.",
        LAYER_OWNERS["TLS"]),
    "client-abort": _Outcome(
        "TLS client gave up before any ServerHello",
        "The client closed or reset while still waiting for the ServerHello: the server or the path is too slow or "
        "drops the ClientHello (large ClientHellos hit MTU problems); check the server's load and the path MTU.",
        LAYER_OWNERS["TLS"]),
    "no-server-hello": _Outcome(
        "TLS ClientHello never answered",
        "Nothing came back after the ClientHello: check that the server's TLS listener is alive, and whether a "
        "middlebox silently drops ClientHellos for this SNI (or large ClientHellos: path MTU).",
        LAYER_OWNERS["TLS"]),
}


@dataclass
class _Group:
    """One outcome towards one server, port and SNI, over all the connections that ended that way."""

    count: int = 0
    confirmed: int = 0
    frames: list[int] = field(default_factory=list)
    flows: dict[FlowRef, None] = field(default_factory=dict)
    clients: Counter[str] = field(default_factory=Counter)
    t0: float = math.inf
    t1: float = -math.inf
    alerts: Counter[str] = field(default_factory=Counter)
    ttls: Counter[tuple[int, int]] = field(default_factory=Counter)  # (packet TTL, server TTL)
    worst_wait: float = 0.0

    def add(self, flow: FlowRef, frames: list[int], t0: float, t1: float, *, confirmed: bool = True) -> None:
        self.count += 1
        self.confirmed += confirmed
        self.frames.extend(f for f in frames[: MAX_FRAMES - len(self.frames)] if f >= 0)
        if len(self.flows) < MAX_LISTED:
            self.flows[flow] = None
        if flow.src in self.clients or len(self.clients) < MAX_TRACKED:
            self.clients[flow.src] += 1
        self.t0, self.t1 = min(self.t0, t0), max(self.t1, t1)


class TlsHandshakeFailure(Detector):
    id = "tls-handshake-failure"
    layer = "TLS"
    title = "TLS handshake failures"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.open: dict[int, _Handshake] = {}
        self.completed: Counter[tuple[str, int, str]] = Counter()  # (server, port, sni) -> good handshakes
        self.groups: dict[tuple[str, int, str, str], _Group] = {}
        self.silent: list[tuple[_Handshake, FlowRef]] = []  # unanswered at capture end: judged in finish
        self.last_ts = -math.inf

    # -- streams -----------------------------------------------------------------------------------------------

    def on_tls(self, df: pd.DataFrame) -> None:
        wanted = (df["kind"] == "client_hello") | df["kind"].isin(ANSWERS) | (
            (df["kind"] == "alert") & (df["alert_level"] == FATAL))
        for r in df[wanted].itertuples(index=False):
            hs = self.open.get(r.conn_id)
            if r.kind == "client_hello":
                if hs is None and len(self.open) < MAX_TRACKED:
                    self.open[r.conn_id] = _Handshake(int(r.direction), int(r.frame), float(r.ts), _text(r.sni, ""))
            elif hs is None:
                continue
            elif r.kind in ANSWERS:
                if r.direction != hs.client_dir and hs.answer_frame < 0:
                    hs.answer_frame = int(r.frame)
            elif hs.alert is None:
                hs.alert = (int(r.frame), int(r.direction), _text(r.alert_name, f"alert {int(r.alert_description)}"),
                            int(r.ttl))

    def on_flows(self, df: pd.DataFrame) -> None:
        self.last_ts = max(self.last_ts, float(df["last_ts"].max()))
        for rec in df.loc[df["conn_id"].isin(self.open.keys()).to_numpy(), FLOW_COLUMNS].itertuples(index=False):
            self._judge(self.open.pop(rec.conn_id), rec)

    # -- judging one connection --------------------------------------------------------------------------------

    def _judge(self, hs: _Handshake, rec: Any) -> None:
        client_side = (rec.orig, int(rec.orig_port)), (rec.resp, int(rec.resp_port))
        (client, cport), (server, sport) = client_side if hs.client_dir == 0 else client_side[::-1]
        flow = FlowRef("tcp", client, cport, server, sport)
        key = (server, sport, hs.sni)
        server_ttl = _server_ttl(rec)
        reset_first = rec.rst_frame > hs.hello_frame and (hs.answer_frame < 0 or rec.rst_frame < hs.answer_frame)
        if hs.alert is not None:
            frame, sender, name, ttl = hs.alert
            by_server = sender != hs.client_dir
            forged = by_server and server_ttl >= 0 and abs(ttl - server_ttl) >= self.t.rst_ttl_delta
            outcome = "alert-middlebox" if forged else "alert-server" if by_server else "alert-client"
            group = self._add(key, outcome, flow, [hs.hello_frame, hs.answer_frame, frame], hs.hello_ts, rec.last_ts)
            group.alerts[name] += 1
            if by_server:
                group.ttls[(ttl, server_ttl)] += 1
        elif not (rec.pkts_r if hs.client_dir == 0 else rec.pkts_o):
            return  # not one packet from the server: a one-sided capture, whatever the server did is not in it
        elif reset_first:
            outcome = "client-abort" if rec.rst_dir == hs.client_dir else _reset_origin(
                int(rec.rst_ttl), server_ttl, self.t.rst_ttl_delta)
            group = self._add(key, outcome, flow, [hs.hello_frame, int(rec.rst_frame)], hs.hello_ts, rec.last_ts)
            if outcome == "client-abort":
                group.worst_wait = max(group.worst_wait, rec.last_ts - hs.hello_ts)
            else:
                group.ttls[(int(rec.rst_ttl), server_ttl)] += 1
        elif hs.answer_frame >= 0:
            if len(self.completed) < MAX_TRACKED or key in self.completed:
                self.completed[key] += 1
        elif rec.fin_first_dir >= 0 and rec.fin_ts >= hs.hello_ts:
            outcome = "client-abort" if rec.fin_first_dir == hs.client_dir else "server-closed"
            group = self._add(key, outcome, flow, [hs.hello_frame, int(rec.last_frame)], hs.hello_ts, rec.last_ts)
            group.worst_wait = max(group.worst_wait, rec.fin_ts - hs.hello_ts)
        elif rec.end_reason in SILENCE_PROVEN:
            self._silent(hs, flow, math.inf)
        elif rec.end_reason != "end-of-capture":
            self._silent(hs, flow, rec.last_ts - hs.hello_ts)  # evicted: judge on what was watched
        elif len(self.silent) < MAX_TRACKED:
            self.silent.append((hs, flow))

    def _silent(self, hs: _Handshake, flow: FlowRef, waited: float) -> None:
        confirmed = waited >= self.t.no_server_hello_s
        if confirmed or waited >= self.t.late_after_s:
            group = self._add((flow.dst, flow.dport, hs.sni), "no-server-hello", flow, [hs.hello_frame], hs.hello_ts,
                              hs.hello_ts + (waited if confirmed and math.isfinite(waited) else 0.0),
                              confirmed=confirmed)
            group.worst_wait = max(group.worst_wait, waited)

    def _add(self, key: tuple[str, int, str], outcome: str, flow: FlowRef, frames: list[int], t0: float, t1: float,
             *, confirmed: bool = True) -> _Group:
        group = self.groups.setdefault((*key, outcome), _Group())
        group.add(flow, frames, t0, t1, confirmed=confirmed)
        return group

    # -- findings ----------------------------------------------------------------------------------------------

    def finish(self) -> Iterator[Finding]:
        for hs, flow in self.silent:
            self._silent(hs, flow, self.last_ts - hs.hello_ts)
        for (server, port, sni, outcome), g in sorted(self.groups.items(), key=lambda item: item[0]):
            spec = OUTCOMES[outcome]
            completed = self.completed[(server, port, sni)]
            severity = (Severity.LOW if not g.confirmed
                        else Severity.HIGH if spec.always_high or not completed else Severity.MEDIUM)
            clients = [c for c, _ in g.clients.most_common(MAX_LISTED)]
            metrics: dict[str, object] = {
                "server": server, "port": port, "sni": sni or None, "outcome": outcome, "failed_connections": g.count,
                "completed_handshakes": completed, "clients": len(g.clients)}
            if g.alerts:
                metrics["alerts"] = dict(g.alerts)
            if g.ttls:
                (ttl, server_ttl), _ = g.ttls.most_common(1)[0]
                metrics |= {"packet_ttl": ttl, "server_ttl": server_ttl,
                            "ttl_delta": abs(ttl - server_ttl) if server_ttl >= 0 else None,
                            "rst_ttl_delta": self.t.rst_ttl_delta}
            if outcome in ("no-server-hello", "client-abort", "server-closed"):
                metrics |= {"max_wait_s": round(g.worst_wait, 3) if math.isfinite(g.worst_wait) else None,
                            "no_server_hello_s": self.t.no_server_hello_s}
            caveats = [] if g.count == g.confirmed else [
                f"{g.count - g.confirmed} ClientHello(s) were sent less than {self.t.no_server_hello_s:g} s before "
                "the capture ended: the ServerHello may simply not have arrived yet"]
            yield Finding(
                detector=self.id, layer=self.layer, severity=severity, title=spec.title,
                summary=self._summary(server, port, sni, outcome, g, completed, clients),
                evidence=Evidence(frames=sorted(set(g.frames)), flows=list(g.flows), hosts=[server, *clients],
                                  window=(g.t0, g.t1), metrics=metrics),
                filter=frame_filter(g.frames), remedy=spec.remedy, owner=spec.owner, caveats=caveats)

    def _summary(self, server: str, port: int, sni: str, outcome: str, g: _Group, completed: int,
                 clients: list[str]) -> str:
        named = f"SNI {sni}" if sni else "no SNI"
        where = (f"{_count(g.count, 'TLS connection')} from {', '.join(clients[:3])}"
                 f"{' and others' if len(clients) > 3 else ''} to {_endpoint(server, port)} ({named})")
        done = f"{_count(completed, 'handshake')} with this server and SNI completed in the capture."
        alerts = ", ".join(f"{name} ({ALERT_MEANING.get(name, 'see the IANA TLS alert registry')})"
                           for name in g.alerts)
        ttl = ""
        if g.ttls:
            (pkt_ttl, server_ttl), _ = g.ttls.most_common(1)[0]
            ttl = (f" (TTL {pkt_ttl}, the server's packets arrive with TTL {server_ttl})" if server_ttl >= 0
                   else f" (TTL {pkt_ttl}; no other server packet to compare)")
        wait = f"up to {g.worst_wait:.1f} s" if math.isfinite(g.worst_wait) else "until the flow timed out"
        text = {
            "alert-server": f"{where}: the server answered the ClientHello with fatal alert {alerts}{ttl}.",
            "alert-client": f"{where}: the client aborted the handshake with fatal alert {alerts}.",
            "alert-middlebox": f"{where}: a fatal alert {alerts} came from another box than the server{ttl}.",
            "reset-middlebox": f"{where}: a RST followed the ClientHello{ttl}, so a middlebox (SNI filter) forged it.",
            "reset-server": f"{where}: the server reset the connection right after the ClientHello{ttl}.",
            "reset-unknown": f"{where}: a RST followed the ClientHello{ttl}.",
            "server-closed": f"{where}: the server closed (FIN) {wait} after the ClientHello without a ServerHello.",
            "client-abort": f"{where}: the client closed or reset {wait} after the ClientHello, before any "
                            "ServerHello arrived.",
            "no-server-hello": f"{where}: no ServerHello, alert or close came back (waited {wait}).",
        }[outcome]
        return f"{text} {done}"


def _text(value: object, default: str) -> str:
    """A decoded string field; pandas hands a missing one over as None or NaN."""
    return value if isinstance(value, str) else default


def _server_ttl(rec: Any) -> int:
    """The server's own TTL: that of its SYN-ACK (its first packet), or -1 when the capture has none."""
    return int(rec.ttl_first_r) if rec.synack_frame >= 0 else -1


def _reset_origin(rst_ttl: int, server_ttl: int, delta: int) -> str:
    if server_ttl < 0:
        return "reset-unknown"
    return "reset-middlebox" if abs(rst_ttl - server_ttl) >= delta else "reset-server"


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
