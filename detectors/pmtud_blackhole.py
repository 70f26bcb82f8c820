"""pmtud-blackhole: full-size TCP segments that never get through while smaller ones do (L3 MTU black hole).

Why (seed §6 "MTU, Fragmentation, and PMTUD Blackholes"; §5 failure table, L3 "Routing / MTU blackhole"): when
a link on the path has a smaller MTU than the endpoints assume (a tunnel) and the ICMP "fragmentation needed"
(IPv4 type 3 code 4) / ICMPv6 "Packet Too Big" that would tell the sender is filtered, the sender keeps
retransmitting the same oversized DF segment with RTO back-off and no ACK for it ever comes back, while the
handshake and small segments work ("works for small, hangs for large"). RFC 2923 §2.1 calls this a PMTUD black
hole. Linux only suspects one after `tcp_retries1` = 3 unanswered RTO retransmissions (net/ipv4/tcp_timer.c,
`tcp_write_timeout` -> `tcp_mtu_probing`), which is the count used here.

The pattern, per connection and direction, from the `tcp_retransmissions` stream:

- one sequence number retransmitted at least `min_rto_retransmissions` times at the same full size
  (payload >= the connection's effective MSS minus TCP option space), DF set (IPv6 never fragments en route),
  each gap between retransmissions `backoff_growth` times the previous one (RTO back-off, RFC 6298 §5.5);
  mirrored duplicates are ignored, and out-of-order resends count only as the smaller fallback segments below;
- and either the bytes were never acknowledged at that size ("stalled": no retransmission of it is ACKed and
  nothing that large was ever ACKed in that direction), or they only got through after the sender resent the
  same sequence in smaller segments that were ACKed ("fallback", black-hole detection in the sender's stack);
- while smaller packets in that direction got through: ACKed data on this connection or on clean connections
  between the same two hosts ("the login page works"), or at least the handshake ("the connection establishes
  fine"). If a clean connection between the same hosts got a segment of the stuck size ACKed, the path carries
  that size and the retransmissions are ordinary loss: no finding.

The finding names the largest IP packet that got through (the proven path MTU: `path_mtu`, and without ICMP the
true one lies between it and the stuck size minus one), the MSS clamp that follows (path MTU - 40 for IPv4, - 60
for IPv6; `mss_clamp` is proven to pass, `mss_clamp_upper_bound` is the most the path could take), whether
ICMP frag-needed / Packet Too Big quoting this flow was seen (and then ignored by the sender) or absent
(filtered), and whether the sender fell back to smaller segments.

PMTUD that works (ICMP quoting a captured flow, reporting an MTU below the quoted packet's size) is reported as
one informational finding per sender/receiver pair ("PMTUD working, path MTU = X"): not a fault, but the number
the network team needs for MSS clamping, and the proof that ICMP is not filtered on that path.

State stays bounded and the work vectorised: the transmissions of retransmitted segments of open connections
(at most `MAX_TRACKED_SEGMENTS` segments, the first `MAX_ROWS_PER_SEGMENT` transmissions of each) and the clean
sizes per sender/receiver pair are held as rows and reduced with one groupby; when a connection's record
arrives, only its segments resent often enough to be stuck are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pcapsense.aggregate import Accumulator, KeyIds, head_by
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import Evidence, Finding, FlowRef, Severity, frame_filter

MAX_FRAMES = 50  # evidence frames kept per finding
MAX_ROWS_PER_SEGMENT = 64  # transmissions kept per (connection, direction, sequence)
MAX_TRACKED_SEGMENTS = 100_000  # retransmitted sequences held for open connections
MAX_ICMP_FLOWS = 10_000  # distinct quoted 5-tuples of frag-needed / Packet Too Big kept
MAX_PAIRS = 200_000  # sender/receiver pairs whose clean-connection maximum is kept
MAX_CASES = 10_000  # stuck segments kept for the findings; further ones are counted
IP_TCP_HEADERS = {False: 40, True: 60}  # IPv4/IPv6 header + TCP header without options: MTU - this = MSS
COLUMNS = ["conn_id", "orig", "orig_port", "resp", "resp_port", "handshake",  # the flow-record columns read here
           *(f"{name}{suffix}" for suffix in ("_o", "_r") for name in (
               "mss", "retrans", "fast_retrans", "ooo", "max_seg", "max_acked_seg", "max_ip_len"))]

REMEDY = ("Clamp the TCP MSS on the tunnel/router to the path MTU minus 40 (IPv4) / 60 (IPv6) so no oversized "
          "packet is ever sent; allow ICMP type 3 code 4 and ICMPv6 Packet Too Big through firewalls and security "
          "groups; or lower the tunnel endpoints' interface MTU; enable PMTUD black-hole detection "
          "(Linux net.ipv4.tcp_mtu_probing=1). Confirm with `ping -M do -s <size>` stepping down from 1472.")
OWNER = "Network + VPN owner (MTU / MSS clamp on tunnels)"


@dataclass(frozen=True)
class Thresholds:
    min_rto_retransmissions: int = tunable(
        3, source="Linux tcp_retries1=3 (net/ipv4/tcp_timer.c: black-hole detection via tcp_mtu_probing)",
        doc="retransmissions of the same full-size segment before it counts as stuck")
    backoff_growth: float = tunable(
        1.5, source="RFC 6298 §5.5 (RTO doubles on each expiry); 1.5 leaves room for timer granularity and jitter",
        doc="each gap between retransmissions must be at least this multiple of the previous gap")
    option_allowance: int = tunable(
        40, source="RFC 9293 §3.1: TCP options take at most 40 bytes of a full-size segment",
        doc="a segment is full-size when its payload is at least the effective MSS minus this many bytes")
    min_ip_len_without_mss: int = tunable(
        1280, source="RFC 8200 §5: every IPv6 link carries 1280 bytes; used when no SYN (MSS) was captured",
        doc="without a captured MSS, a stuck packet must be larger than this to be considered oversized")
    link_mtu: int = tunable(
        1500, source="Ethernet MTU (IEEE 802.3)",
        doc="segments above this were sized by offload (TSO/GSO/GRO) on the capture host: a caveat, not a size")
    report_working_pmtud: bool = tunable(
        True, source="RFC 8201 / RFC 1191 PMTUD: the reported MTU is what the MSS clamp should be sized from",
        doc="emit an informational finding when ICMP frag-needed / Packet Too Big shows PMTUD working")


class _Transmission(NamedTuple):
    """One transmission of a retransmitted segment."""

    ts: float
    frame: int
    resend: bool  # a retransmission or fast retransmission (not an out-of-order segment)
    payload: int
    ip_len: int
    df: bool
    acked: bool


SEGMENT = ["conn_id", "direction", "rel_seq"]  # what identifies a segment


def _transmissions(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of the tcp_retransmissions stream as kept: the segment and a `_Transmission`."""
    return pd.DataFrame({
        **{c: rows[c].to_numpy(np.int64) for c in SEGMENT}, "ts": rows["ts"].to_numpy(np.float64),
        "frame": rows["frame"].to_numpy(np.int64), "resend": (rows["kind"] != "out-of-order").to_numpy(dtype=bool),
        "payload": rows["payload_len"].to_numpy(np.int64), "ip_len": rows["ip_len"].to_numpy(np.int64),
        "df": rows["df"].to_numpy(dtype=bool), "acked": rows["acked"].to_numpy(dtype=bool)})


@dataclass
class _Icmp:
    """Frag-needed / Packet Too Big messages quoting one 5-tuple."""

    mtu: int
    reporter: str
    frames: list[int] = field(default_factory=list)
    first_ts: float = 0.0
    count: int = 0


class _Stuck(NamedTuple):
    """One sequence number of a closed connection, resent like a stuck full-size segment."""

    direction: int
    sent: list[_Transmission]  # every transmission of it
    stuck: list[_Transmission]  # the resends at the largest resent size


@dataclass
class _Case:
    """One stuck segment of one connection, resolved when the connection's flow record arrives."""

    flow: FlowRef
    sender: str
    receiver: str
    v6: bool
    outcome: str  # "stalled" or "fallback"
    stuck: list[_Transmission]
    fallback: list[_Transmission]
    ok_ip_len: int  # largest IP packet known to have got through on this connection, 0 if none
    handshake: bool  # the connection's handshake completed in the capture
    eff_mss: int
    max_ip_len: int


def _first_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Largest clean IP packet per (sender, receiver), for the first MAX_PAIRS pairs to arrive: a later pair is
    never counted, so a kept pair's maximum covers all its connections."""
    best = df.groupby(["sender", "receiver"], sort=False, as_index=False).agg(ok=("ok", "max"),
                                                                              arrival=("arrival", "min"))
    if len(best) <= MAX_PAIRS:
        return best
    return best.sort_values(["arrival", "sender", "receiver"], kind="stable").head(MAX_PAIRS)


class PmtudBlackhole(Detector):
    id = "pmtud-blackhole"
    layer = "L3"
    title = "Path-MTU black hole: full-size segments never acknowledged"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.segment_ids = KeyIds(SEGMENT)  # the retransmitted segments of open connections
        self.sent = Accumulator(head_by("sid", MAX_ROWS_PER_SEGMENT, ["sid"]))  # their first transmissions
        self.icmp: dict[tuple[str, int, str, int], _Icmp] = {}
        self.pair_ok = Accumulator(_first_pairs)  # (sender, receiver) -> largest clean IP packet ACKed
        self.deliveries = 0  # flow deliveries so far: the order in which pairs arrive
        self.cases: list[_Case] = []
        self.icmp_flows: dict[tuple[str, str], list[tuple[FlowRef, _Icmp]]] = {}
        self.dropped = 0

    # -- streams ------------------------------------------------------------------------------------------------

    def on_tcp_retransmissions(self, df: pd.DataFrame) -> None:
        """Keep the transmissions of each retransmitted segment (connection, direction, sequence) until the
        connection's flow record arrives: the first MAX_ROWS_PER_SEGMENT of each, for at most
        MAX_TRACKED_SEGMENTS segments at once (the transmissions of further segments are counted, not kept)."""
        rows = df[(df["kind"] != "duplicate").to_numpy() & (df["payload_len"] > 0).to_numpy()]  # no mirrored copies
        tracked, first_new = len(self.segment_ids.ids), self.segment_ids.next_id
        sid = self.segment_ids.encode(rows)
        # new segments get the ids from first_new on, in order of appearance: those past the cap are not tracked
        tracked_ids = sid < first_new + max(MAX_TRACKED_SEGMENTS - tracked, 0)
        self.segment_ids.forget(np.unique(sid[~tracked_ids]))
        self.dropped += int(np.count_nonzero(~tracked_ids))
        self.sent.add(_transmissions(rows[tracked_ids]).assign(sid=sid[tracked_ids]))

    def on_icmp_errors(self, df: pd.DataFrame) -> None:
        ptb = ((~df["v6"] & (df["type"] == 3) & (df["code"] == 4)) | (df["v6"] & (df["type"] == 2)))
        rows = df[ptb & df["quoted"] & (df["inner_proto"] == 6) & (df["inner_sport"] >= 0)]
        for src, sport, dst, dport, mtu, inner_len, reporter, frame, ts in zip(
                rows["inner_src"].tolist(), rows["inner_sport"].tolist(), rows["inner_dst"].tolist(),
                rows["inner_dport"].tolist(), rows["mtu"].tolist(), rows["inner_len"].tolist(),
                rows["reporter"].tolist(), rows["frame"].tolist(), rows["ts"].tolist(), strict=True):
            if not 0 < mtu < inner_len:
                continue  # a genuine report quotes a packet larger than the MTU it announces
            key = (src, sport, dst, dport)
            entry = self.icmp.get(key)
            if entry is None:
                if len(self.icmp) >= MAX_ICMP_FLOWS:
                    continue
                entry = self.icmp[key] = _Icmp(mtu, reporter, first_ts=ts)
            entry.mtu = min(entry.mtu, mtu)
            entry.count += 1
            if len(entry.frames) < MAX_FRAMES:
                entry.frames.append(frame)

    def on_flows(self, df: pd.DataFrame) -> None:
        tcp = df.loc[df["proto"].to_numpy() == 6, COLUMNS]
        self._learn_clean_sizes(tcp)
        stuck = self._stuck_segments(self._forget_segments(tcp["conn_id"]))
        for rec in tcp[tcp["conn_id"].isin(list(stuck))].itertuples(index=False):
            for segment in stuck[rec.conn_id]:
                case = self._resolve(rec, segment)
                if case is not None and len(self.cases) < MAX_CASES:
                    self.cases.append(case)
                elif case is not None:
                    self.dropped += 1
        if self.t.report_working_pmtud and self.icmp:
            self._note_icmp_flows(tcp)

    # -- per-connection resolution --------------------------------------------------------------------------

    def _learn_clean_sizes(self, tcp: pd.DataFrame) -> None:
        """Largest ACKed IP packet per (sender, receiver) over directions with no retransmission of any kind:
        there every ACKed segment arrived at the size it was sent (the "small page that works"). Only a few
        pairs are ever looked up (those with a stuck segment), so the rows are reduced when they pile up and
        read at the end."""
        self.deliveries += 1
        for direction, (side, peer, suffix) in enumerate((("orig", "resp", "_o"), ("resp", "orig", "_r"))):
            col = {name: tcp[f"{name}{suffix}"].to_numpy()
                   for name in ("retrans", "fast_retrans", "ooo", "max_acked_seg", "max_ip_len", "max_seg")}
            clean = (col["retrans"] + col["fast_retrans"] + col["ooo"] == 0) & (col["max_acked_seg"] > 0)
            overhead = np.maximum(col["max_ip_len"][clean] - col["max_seg"][clean], 0)
            self.pair_ok.add(pd.DataFrame({
                "sender": tcp[side].to_numpy()[clean], "receiver": tcp[peer].to_numpy()[clean],
                "ok": col["max_acked_seg"][clean] + overhead, "arrival": 2 * self.deliveries + direction}))

    def _forget_segments(self, conns: pd.Series) -> pd.DataFrame:
        """Stop tracking the segments of the connections `conns`; their transmissions are returned."""
        sent = self.sent.frame()
        if sent is None:
            return pd.DataFrame(columns=[*SEGMENT, "sid", *_Transmission._fields])
        ending = sent["conn_id"].isin(conns).to_numpy()
        self.sent.keep(lambda _: ~ending)  # `_` is `sent`, already reduced
        self.segment_ids.forget(np.unique(sent["sid"].to_numpy()[ending]))
        return sent[ending]

    def _stuck_segments(self, sent: pd.DataFrame) -> dict[int, list[_Stuck]]:
        """The segments among `sent` that were retransmitted like a stuck full-size segment, per connection in
        sequence order. Only segments resent at least `min_rto_retransmissions` times can be (nearly all are
        resent once), so they are picked out vectorised and only those are looked at one by one."""
        resends = sent.groupby("sid")["resend"].transform("sum").to_numpy() >= self.t.min_rto_retransmissions
        suspects = sent[resends].sort_values(SEGMENT, kind="stable")
        segments: dict[tuple[int, int, int], list[_Transmission]] = {}
        keys = zip(*(suspects[c].tolist() for c in SEGMENT), strict=True)
        transmissions = zip(*(suspects[c].tolist() for c in _Transmission._fields), strict=True)
        for key, tx in zip(keys, transmissions, strict=True):
            segments.setdefault(key, []).append(_Transmission._make(tx))
        found: dict[int, list[_Stuck]] = {}
        for (conn, direction, _), transmissions in segments.items():
            stuck = self._stuck(transmissions)
            if stuck:
                found.setdefault(conn, []).append(_Stuck(direction, transmissions, stuck))
        return found

    def _stuck(self, sent: list[_Transmission]) -> list[_Transmission]:
        """The resends at the largest resent size, if there are enough of them and they back off like RTOs."""
        big = max((x.payload for x in sent if x.resend), default=0)
        stuck = [x for x in sent if x.resend and x.payload == big]
        if len(stuck) < self.t.min_rto_retransmissions or not self._backs_off([x.ts for x in stuck]):
            return []
        return stuck

    def _resolve(self, rec: Any, segment: _Stuck) -> _Case | None:
        """Decide whether the stuck copies of one sequence number are a full-size segment that never got through."""
        t = self.t
        direction, sent, stuck = segment
        suffix, peer_suffix = ("_o", "_r") if direction == 0 else ("_r", "_o")
        big = stuck[0].payload
        sender, receiver = (rec.orig, rec.resp) if direction == 0 else (rec.resp, rec.orig)
        v6 = ":" in sender
        if not (v6 or all(x.df for x in stuck)):
            return None  # DF clear: a router would fragment rather than drop
        eff_mss = min((m for m in (getattr(rec, f"mss{suffix}"), getattr(rec, f"mss{peer_suffix}")) if m > 0),
                      default=0)  # the sender uses the smaller of its own and the peer's MSS
        full = big >= eff_mss - t.option_allowance if eff_mss else stuck[0].ip_len > t.min_ip_len_without_mss
        if not full:
            return None
        max_acked = int(getattr(rec, f"max_acked_seg{suffix}"))
        # `acked` is decided at the end of the segment's batch; an ACK in a later batch is caught by the flow's
        # largest ACKed segment: a smaller resend got through if it, or a segment at least as large, was ACKed
        fallback = [x for x in sent if x.payload < big and x.ts > stuck[0].ts and (x.acked or x.payload <= max_acked)]
        if fallback:
            outcome, ok_ip_len = "fallback", max(x.ip_len for x in fallback)
        elif any(x.acked for x in stuck) or max_acked >= big:
            return None  # the segment (or one as large) got through at full size: ordinary loss
        else:
            outcome = "stalled"
            ok_ip_len = max_acked + (stuck[0].ip_len - big) if max_acked else 0
        flow = FlowRef("tcp", rec.orig, int(rec.orig_port), rec.resp, int(rec.resp_port))
        return _Case(flow, sender, receiver, v6, outcome, stuck, fallback, ok_ip_len, rec.handshake == "complete",
                     eff_mss, int(getattr(rec, f"max_ip_len{suffix}")))

    def _backs_off(self, times: list[float]) -> bool:
        gaps = np.diff(np.asarray(times))
        return bool((gaps > 0).all() and (gaps[1:] >= self.t.backoff_growth * gaps[:-1]).all())

    def _note_icmp_flows(self, tcp: pd.DataFrame) -> None:
        """Remember which captured flows ICMP frag-needed / PTB quoted (for the 'PMTUD working' note)."""
        hosts = {key[0] for key in self.icmp} | {key[2] for key in self.icmp}
        quoted = tcp[tcp["orig"].isin(hosts).to_numpy() & tcp["resp"].isin(hosts).to_numpy()]  # the few that can be
        cols = [quoted[c].tolist() for c in ("orig", "orig_port", "resp", "resp_port")]
        for orig, oport, resp, rport in zip(*cols, strict=True):
            for key in ((resp, rport, orig, oport), (orig, oport, resp, rport)):
                entry = self.icmp.get(key)
                if entry is not None:
                    self.icmp_flows.setdefault((key[0], key[2]), []).append(
                        (FlowRef("tcp", orig, oport, resp, rport), entry))

    def _icmp_for(self, case: _Case) -> _Icmp | None:
        f = case.flow
        for key in ((case.sender, f.sport, case.receiver, f.dport), (case.sender, f.dport, case.receiver, f.sport)):
            if key in self.icmp:
                return self.icmp[key]
        return None

    # -- findings -----------------------------------------------------------------------------------------------

    def finish(self) -> Iterable[Finding]:
        pair_ok = self._clean_sizes({(case.sender, case.receiver) for case in self.cases})
        groups: dict[tuple[str, str], list[_Case]] = {}
        for case in self.cases:
            ok = max(pair_ok.get((case.sender, case.receiver), 0), case.ok_ip_len)
            if ok < case.stuck[0].ip_len and (ok or case.handshake):
                groups.setdefault((case.sender, case.receiver), []).append(case)
        for (sender, receiver), cases in groups.items():
            yield self._blackhole(sender, receiver, cases, pair_ok.get((sender, receiver), 0))
        blackholed = set(groups)
        for (sender, receiver), flows in self.icmp_flows.items():
            if (sender, receiver) not in blackholed:
                yield self._working(sender, receiver, flows)

    def _clean_sizes(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The largest clean IP packet of each of `pairs` (reduced here, once, for these pairs only)."""
        frame = self.pair_ok.frame() if pairs else None
        if frame is None:
            return {}
        rows = frame[frame["sender"].isin({sender for sender, _ in pairs})]
        found = zip(zip(rows["sender"].tolist(), rows["receiver"].tolist(), strict=True), rows["ok"].tolist(),
                    strict=True)
        return {pair: ok for pair, ok in found if pair in pairs}

    def _blackhole(self, sender: str, receiver: str, cases: list[_Case], clean_ok: int) -> Finding:
        v6 = cases[0].v6
        stalled = [c for c in cases if c.outcome == "stalled"]
        fallback = [c for c in cases if c.outcome == "fallback"]
        icmp = [e for e in (self._icmp_for(c) for c in cases) if e is not None]
        stuck_ip = min(c.stuck[0].ip_len for c in cases)
        stuck_payload = min(c.stuck[0].payload for c in cases)
        ok_ip = max([clean_ok, *(c.ok_ip_len for c in cases)])
        icmp_mtu = min((e.mtu for e in icmp), default=0)
        path_mtu, upper = (icmp_mtu, icmp_mtu) if icmp_mtu else (ok_ip, stuck_ip - 1)
        headers = IP_TCP_HEADERS[v6]
        clamp = path_mtu - headers if path_mtu else 0
        worst = max(cases, key=lambda c: len(c.stuck))
        gaps = np.round(np.diff([x.ts for x in worst.stuck]), 3).tolist()
        frames = sorted({x.frame for c in cases for x in (*c.stuck, *c.fallback)}
                        | {f for e in icmp for f in e.frames})[:MAX_FRAMES]
        times = [x.ts for c in cases for x in (*c.stuck, *c.fallback)]
        flows = list(dict.fromkeys(c.flow for c in cases))  # a connection may have several stuck segments
        ports = sorted({c.flow.sport if c.sender == c.flow.src else c.flow.dport for c in cases})
        through = (f"the largest packet that got through was {ok_ip} bytes" if ok_ip
                   else "only the handshake got through")
        recovered = (f"; {len(fallback)} of them recovered only after the sender fell back to "
                     f"{max(x.payload for c in fallback for x in c.fallback)}-byte segments" if fallback else "")
        ptb = "Packet Too Big" if v6 else "frag-needed"
        if icmp_mtu:
            verdict = (f"ICMP {ptb} (MTU {icmp_mtu}) reached the capture but the sender kept sending full-size "
                       f"segments: clamp the MSS to {clamp}")
        else:
            span, proven = (f"between {ok_ip} and", f"{clamp} is proven to pass; ") if clamp > 0 else ("at most", "")
            verdict = (f"no ICMP {ptb} quoting these flows was seen (filtered): the path MTU is {span} {upper} bytes, "
                       f"so clamp the MSS to at most {upper - headers} ({proven}find the exact size with "
                       "`ping -M do -s`)")
        summary = (f"{sender} (port {', '.join(map(str, ports))}) retransmitted {stuck_ip}-byte "
                   f"{'' if v6 else 'DF '}segments to {receiver} up to {len(worst.stuck)} times with RTO back-off "
                   f"({', '.join(f'{g:g}' for g in gaps)} s) and none was ACKed at that size on {len(flows)} "
                   f"connection(s){recovered}; {through}; {verdict}.")
        caveats = []
        oversized = max(c.max_ip_len for c in cases)
        if oversized > self.t.link_mtu:
            caveats.append(f"these flows carry IP packets up to {oversized} bytes, above the {self.t.link_mtu}-byte "
                           "link MTU: offload (TSO/GSO/GRO) on the capture host, so captured sizes are not wire "
                           "sizes and the stuck size is an upper bound")
        if icmp:
            caveats.append("ICMP reporting the MTU was captured, so PMTUD messages are not filtered before this "
                           "point: the sender (host firewall, or policy) ignores them, or the capture is upstream "
                           "of a filter in front of the sender")
        if not ok_ip:
            caveats.append("no data in that direction is proven delivered, only the handshake: a path that drops "
                           "all data (not just large packets) looks similar")
        if self.dropped:
            caveats.append(f"{self.dropped} retransmissions or stuck segments were not examined (tracking cap reached)")
        return Finding(
            detector=self.id, layer=self.layer, severity=Severity.HIGH if stalled else Severity.MEDIUM,
            title=self.title if stalled else "Path-MTU black hole: full-size segments got through only after "
                                             "the sender shrank them",
            summary=summary,
            evidence=Evidence(
                frames=frames, flows=flows[:MAX_FRAMES], hosts=[sender, receiver], window=(min(times), max(times)),
                metrics={
                    "connections": len(flows), "stalled": len(stalled), "fell_back": len(fallback),
                    "stuck_payload": stuck_payload, "stuck_ip_len": stuck_ip,
                    "retransmissions": len(worst.stuck), "backoff_gaps_s": gaps,
                    "effective_mss": worst.eff_mss, "largest_ok_ip_len": ok_ip,
                    "path_mtu": path_mtu, "path_mtu_upper_bound": upper,
                    "mss_clamp": clamp, "mss_clamp_upper_bound": upper - headers,
                    "icmp_seen": bool(icmp), "icmp_mtu": icmp_mtu or None,
                    "fallback_payload": max((x.payload for c in fallback for x in c.fallback), default=None),
                }),
            filter=frame_filter(frames), remedy=REMEDY, owner=OWNER, caveats=caveats)

    def _working(self, sender: str, receiver: str, flows: list[tuple[FlowRef, _Icmp]]) -> Finding:
        v6 = ":" in sender
        mtu = min(e.mtu for _, e in flows)
        reporters = sorted({e.reporter for _, e in flows})
        frames = sorted({f for _, e in flows for f in e.frames})[:MAX_FRAMES]
        clamp = mtu - IP_TCP_HEADERS[v6]
        kind = "ICMPv6 Packet Too Big" if v6 else "ICMP frag-needed (type 3 code 4)"
        return Finding(
            detector=self.id, layer=self.layer, severity=Severity.INFO,
            title="PMTUD working: path MTU reported by ICMP",
            summary=(f"PMTUD works from {sender} to {receiver}: {', '.join(reporters)} sent {kind} with MTU {mtu} "
                     f"for {len(flows)} connection(s) and no full-size segment got stuck; an MSS clamp of {clamp} "
                     "would avoid the extra round trip."),
            evidence=Evidence(
                frames=frames, flows=[f for f, _ in flows][:MAX_FRAMES], hosts=[sender, receiver, *reporters],
                window=(min(e.first_ts for _, e in flows), max(e.first_ts for _, e in flows)),
                metrics={"path_mtu": mtu, "mss_clamp": clamp, "icmp_messages": sum(e.count for _, e in flows),
                         "connections": len(flows)}),
            filter=frame_filter(frames), remedy="No fault: ICMP reaches the sender. " + REMEDY.split(";")[0] + ".",
            owner=OWNER)
