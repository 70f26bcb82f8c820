"""asymmetric-routing: the two directions of TCP connections take different paths (L3).

Why (seed §5 failure table and text, L3: "asymmetric routing (SYN goes one way, SYN-ACK returns another and gets
dropped by a stateful firewall)"; §1: teams blame "the API is slow" when the cause is L3 asymmetric routing): a
stateful firewall, NAT or load balancer on only one of the two paths sees half a conversation and drops it, and
a capture on one path shows half-conversations that look like loss.

Evidence, from flow records (research notes §2.6):

- one-sided handshake: the client ACKs a SYN-ACK the capture never saw (history `S` plus client `A`/`D`, no
  `h`, the ACK counted in `ack_no_peer_o`), or the server answers a SYN the capture never saw and ACKs client
  data it never saw (`h` plus `a`/`d`, no `S`, `ack_no_peer_r`), and not one packet of the other direction is
  in the capture. A client only sends that ACK after receiving the SYN-ACK, so the SYN-ACK exists and took
  another path: this is Zeek's `possible_split_routing` and the inverse of Arkime's `tcp.ackSynchronized`.
  Flows seen from the middle are not counted even when one-sided (a dead peer looks the same: the seen side just
  retransmits), and neither are flows with both directions present (capture started or stopped mid-flow, or a
  lost SYN-ACK: arkime's no-syn-ack trace), which is capture loss, not routing;
- interface split: in a multi-interface capture (pcapng), the SYN arrives only on one interface and the SYN-ACK
  and every other server packet only on another. That is normal for a capture with one interface per direction
  (a tap), so it counts only when the capture is not direction-split: when fewer than `tap_split_share` of the
  handshakes whose directions each stay on one interface are split. Packets of one direction on two interfaces
  mean a router capturing its ingress and egress, not asymmetry;
- return path moved: a server's packets switch to another interface mid-flow while the client's stay on one
  (route change / ECMP rehash), with no mirrored duplicates in the flow.

TTL and next-hop MAC of the server's packets are reported (they tell which router the SYN-ACK came from) but do
not trigger on their own: a firewall-injected RST or a load-balanced VIP changes them too.

Findings are aggregated per server (the far end of the path that differs; one finding per client/server pair would
repeat the same route fact for every client), with the share of its flows that show the evidence and, per
client/server pair, how many of the pair's flows did (`pairs`). Severity is MEDIUM: the traffic in the capture
worked, but any stateful device on one of the paths breaks it. When not a single TCP flow of the capture shows
both directions, the capture point itself (a one-way tap or SPAN source) is as likely a cause as the routing, so
the servers are folded into one LOW finding that says so.

The work stays vectorised: the signals are masks over each delivery of flow records (the history string is read
only for flows whose counters already show a one-sided handshake), and the flow totals behind the shares are
rows reduced with one groupby, read at the end for the servers with evidence only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pcapsense.aggregate import Accumulator, sum_by
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import Evidence, Finding, FlowRef, Severity, frame_filter

MAX_FRAMES = 50  # evidence frames kept per finding
MAX_FLOWS = 50  # flow references kept per finding
MAX_TOTALS = 200_000  # servers (and client/server pairs) whose flow totals are counted
MAX_EVIDENCE_SERVERS = 10_000  # servers whose evidence is kept; flows to further servers are only counted
MAX_PAIRS_PER_SERVER = 1_000  # client/server pairs listed per server; further flows are counted, not listed
MAX_PATHS = 8  # distinct (interface, MAC, TTL) return paths kept per server
MAX_SERVER_FINDINGS = 20  # servers reported one by one (most asymmetric flows first); the rest share one finding
SIGNALS = ("client_only", "server_only", "iface_split", "path_moved")
NUMERIC = ("pkts_o", "pkts_r", "ack_no_peer_o", "ack_no_peer_r", "iface_mask_o", "iface_mask_r", "syn_frame",
           "synack_frame", "dupes_o", "dupes_r")
COLUMNS = ["orig", "orig_port", "resp", "resp_port", "history", "first_ts", "last_ts", "last_frame", "iface_first_r",
           "mac_r", "ttl_first_r", *NUMERIC]  # the flow-record columns read here

REMEDY = ("Make the forward and return paths symmetric (route audit: return route for the client prefix, ECMP / "
          "policy routing, HSRP/VRRP active on both sides), or make stateful devices see both directions "
          "(state sync between firewall pair, or asymmetric-aware mode). If only the capture sees one direction, "
          "fix the tap/SPAN so both directions are mirrored before trusting other findings.")
OWNER = "Network / platform team (routing design)"


@dataclass(frozen=True)
class Thresholds:
    min_flows: int = tunable(
        1, source="Zeek weird possible_split_routing: raised for a single connection (TCPSessionAdapter.cc)",
        doc="flows to one server that must show the evidence")
    min_share: float = tunable(
        0.1, source="Zeek policy/misc/capture-loss.zeek: 10% is where missing traffic becomes a notice",
        doc="share of the server's TCP flows that must show the evidence")
    tap_split_share: float = tunable(
        0.9, source="pcapsense policy: a per-direction tap splits every handshake; 10% slack for stray flows",
        doc="at or above this share of split handshakes the capture is one interface per direction and "
            "interface splits are not evidence")


@dataclass
class _Server:
    """What one server's flows (or, merged, a whole capture's) showed."""

    flows: Counter[str] = field(default_factory=Counter)  # signal -> flows
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (client, server) -> flows with evidence
    ports: set[int] = field(default_factory=set)
    frames: list[int] = field(default_factory=list)
    refs: list[FlowRef] = field(default_factory=list)
    paths: set[tuple[int, str, int]] = field(default_factory=set)  # SYN-ACK arrival (iface, MAC, TTL)
    window: tuple[float, float] = (np.inf, -np.inf)
    blind_acks: int = 0
    unlisted: int = 0  # evidence flows of clients beyond MAX_PAIRS_PER_SERVER

    def add_pair(self, pair: tuple[str, str], flows: int = 1) -> None:
        if pair in self.pairs or len(self.pairs) < MAX_PAIRS_PER_SERVER:
            self.pairs[pair] += flows
        else:
            self.unlisted += flows

    def merge(self, other: _Server) -> None:
        self.flows.update(other.flows)
        for pair, flows in other.pairs.items():
            self.add_pair(pair, flows)
        self.unlisted += other.unlisted
        self.ports |= other.ports
        self.frames = (self.frames + other.frames)[:MAX_FRAMES]
        self.refs = (self.refs + other.refs)[:MAX_FLOWS]
        self.paths |= set(sorted(other.paths)[: max(MAX_PATHS - len(self.paths), 0)])
        self.window = (min(self.window[0], other.window[0]), max(self.window[1], other.window[1]))
        self.blind_acks += other.blind_acks


def _single_iface(mask: np.ndarray) -> np.ndarray:
    """True where exactly one interface bit is set."""
    return (mask > 0) & ((mask & (mask - 1)) == 0)


def _client_only(history: str) -> bool:
    """The client sent a SYN and then ACKs or data, and no SYN-ACK was captured."""
    return "S" in history and "h" not in history and ("A" in history or "D" in history)


def _server_only(history: str) -> bool:
    """The server answered a SYN that was not captured, then ACKed or sent data."""
    return "h" in history and "S" not in history and ("a" in history or "d" in history)


def _history(tcp: pd.DataFrame, candidates: np.ndarray, test: Callable[[str], bool]) -> np.ndarray:
    """`candidates` narrowed to the flows whose history passes `test`; the history string is read (in Python)
    only for the candidates, which the numeric counters have already cut down to a few flows."""
    hits = candidates.copy()
    hits[candidates] = [test(history) for history in tcp["history"].to_numpy()[candidates]]
    return hits


def _first_keys(columns: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Flows per key, for the first MAX_TOTALS keys in order of arrival (a later key is not counted at all, so
    a kept key's total is always complete)."""
    return lambda df: sum_by(columns)(df).head(MAX_TOTALS)


class AsymmetricRouting(Detector):
    id = "asymmetric-routing"
    layer = "L3"
    title = "Asymmetric routing: the two directions of connections take different paths"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        # flow totals are only read for the few servers with evidence: rows are reduced as they pile up, and
        # read out once at the end
        self.totals = Accumulator(_first_keys(["resp"]))  # server -> TCP flows
        self.pair_totals = Accumulator(_first_keys(["orig", "resp"]))  # (client, server) -> TCP flows
        self.server_flows: dict[str, int] = {}  # read out of `totals` for the servers with evidence
        self.pair_flows: dict[tuple[str, str], int] = {}  # likewise out of `pair_totals`
        self.servers: dict[str, _Server] = {}
        self.split_candidates: dict[str, _Server] = {}  # interface-split flows, judged at the end
        self.handshakes = Counter({"single": 0, "split": 0})
        self.flows_seen = Counter({"tcp": 0, "two_sided": 0, "not_kept": 0})

    def on_flows(self, df: pd.DataFrame) -> None:
        tcp = df.loc[df["proto"].to_numpy() == 6, COLUMNS]
        if not len(tcp):
            return
        col = {name: tcp[name].to_numpy() for name in NUMERIC}
        self.flows_seen["tcp"] += len(tcp)
        self.flows_seen["two_sided"] += int(np.count_nonzero((col["pkts_o"] > 0) & (col["pkts_r"] > 0)))
        self.totals.add(tcp[["resp"]].assign(flows=1))
        self.pair_totals.add(tcp[["orig", "resp"]].assign(flows=1))
        # the history is only read where the counters already point at a one-sided handshake (a few flows)
        client_side = _history(tcp, (col["ack_no_peer_o"] > 0) & (col["pkts_r"] == 0), _client_only)
        server_side = _history(tcp, (col["ack_no_peer_r"] > 0) & (col["pkts_o"] == 0), _server_only)
        mask_o, mask_r = col["iface_mask_o"], col["iface_mask_r"]
        single_o, single_r = _single_iface(mask_o), _single_iface(mask_r)
        handshake = (col["syn_frame"] >= 0) & (col["synack_frame"] >= 0) & single_o & single_r
        split = handshake & (mask_o != mask_r)
        self.handshakes["single"] += int(np.count_nonzero(handshake))
        self.handshakes["split"] += int(np.count_nonzero(split))
        moved = (single_o & ~single_r & (mask_r > 0) & (col["dupes_o"] + col["dupes_r"] == 0)
                 & ((mask_o & mask_r) > 0))
        self._collect(tcp[client_side], "client_only", self.servers)
        self._collect(tcp[server_side], "server_only", self.servers)
        self._collect(tcp[moved & ~split], "path_moved", self.servers)
        self._collect(tcp[split], "iface_split", self.split_candidates)

    def _collect(self, part: pd.DataFrame, signal: str, into: dict[str, _Server]) -> None:
        if not len(part):
            return  # the usual case; itertuples would build its row class even for no rows
        for rec in part.itertuples(index=False):
            entry = into.get(rec.resp)
            if entry is None:
                if len(into) >= MAX_EVIDENCE_SERVERS:
                    self.flows_seen["not_kept"] += 1
                    continue
                entry = into[rec.resp] = _Server()
            entry.flows[signal] += 1
            entry.add_pair((rec.orig, rec.resp))
            entry.ports.add(int(rec.resp_port))
            entry.blind_acks += int(rec.ack_no_peer_o + rec.ack_no_peer_r)
            entry.window = (min(entry.window[0], rec.first_ts), max(entry.window[1], rec.last_ts))
            if len(entry.refs) < MAX_FLOWS:
                entry.refs.append(FlowRef("tcp", rec.orig, int(rec.orig_port), rec.resp, int(rec.resp_port)))
            if len(entry.frames) < MAX_FRAMES:
                entry.frames.extend(int(f) for f in (rec.syn_frame, rec.synack_frame, rec.last_frame) if f >= 0)
            if rec.pkts_r > 0 and len(entry.paths) < MAX_PATHS:
                entry.paths.add((int(rec.iface_first_r), rec.mac_r, int(rec.ttl_first_r)))

    def finish(self) -> Iterable[Finding]:
        single = self.handshakes["single"]
        if single and self.handshakes["split"] / single < self.t.tap_split_share:
            for server, split in self.split_candidates.items():
                self.servers.setdefault(server, _Server()).merge(split)
        self._read_totals(list(self.servers))
        qualifying = {}
        for server, entry in sorted(self.servers.items()):
            flows = sum(entry.flows.values())
            total = max(self.server_flows.get(server, flows), flows)
            if flows >= self.t.min_flows and flows / total >= self.t.min_share:
                qualifying[server] = entry
        if not qualifying:
            return
        if not self.flows_seen["two_sided"]:
            caveat = (f"not one of the capture's {self.flows_seen['tcp']} TCP flows shows both directions: the "
                      "capture point (a one-way tap or SPAN source) is as likely a cause as the routing; check that "
                      "both directions are mirrored before trusting loss-based findings")
            yield self._finding(list(qualifying), self._merged(qualifying.values()), Severity.LOW, [caveat])
            return
        ranked = sorted(qualifying, key=lambda srv: (-sum(qualifying[srv].flows.values()), srv))
        for server in ranked[:MAX_SERVER_FINDINGS]:
            yield self._finding([server], qualifying[server], Severity.MEDIUM, [])
        rest = ranked[MAX_SERVER_FINDINGS:]
        if rest:
            yield self._finding(rest, self._merged(qualifying[srv] for srv in rest), Severity.MEDIUM, [])

    def _read_totals(self, servers: list[str]) -> None:
        """Reduce the flow totals (once, at the end) and keep those of `servers` and of their clients."""
        if not servers:
            return
        per_server, per_pair = (acc.frame() for acc in (self.totals, self.pair_totals))
        mine = per_server[per_server["resp"].isin(servers)]  # type: ignore[index]
        self.server_flows = dict(zip(mine["resp"].tolist(), mine["flows"].tolist(), strict=True))
        mine = per_pair[per_pair["resp"].isin(servers)]  # type: ignore[index]
        pairs = zip(mine["orig"].tolist(), mine["resp"].tolist(), strict=True)
        self.pair_flows = dict(zip(pairs, mine["flows"].tolist(), strict=True))

    @staticmethod
    def _merged(entries: Iterable[_Server]) -> _Server:
        merged = _Server()
        for entry in entries:
            merged.merge(entry)
        return merged

    def _finding(self, servers: list[str], entry: _Server, severity: Severity, caveats: list[str]) -> Finding:
        counts = {signal: entry.flows[signal] for signal in SIGNALS}
        flows = sum(counts.values())
        total = max(sum(self.server_flows.get(server, 0) for server in servers), flows)
        parts = {
            "client_only": f"{counts['client_only']} showed only the client, which ACKed a SYN-ACK never captured",
            "server_only": (f"{counts['server_only']} showed only the server, which answered a SYN and ACKed data "
                            "never captured"),
            "iface_split": (f"{counts['iface_split']} had the SYN on one interface and the SYN-ACK and all server "
                            "packets on another"),
            "path_moved": f"{counts['path_moved']} had the server's packets switch interface mid-flow",
        }
        paths = sorted(entry.paths)
        via = "; server packets arrived via (interface, router MAC, TTL): " + ", ".join(
            f"if{i} {mac} ttl {ttl}" for i, mac, ttl in paths) if paths else ""
        blind = (f" ({entry.blind_acks} ACKs of packets that never crossed this capture point)"
                 if entry.blind_acks else "")
        clients = sorted({client for client, _ in entry.pairs})
        target = (f"{servers[0]} (port {', '.join(map(str, sorted(entry.ports)))})" if len(servers) == 1
                  else f"{len(servers)} servers ({', '.join(servers[:5])}{', ...' if len(servers) > 5 else ''})")
        summary = (f"Of {total} TCP connection(s) to {target} from {len(clients)} client(s) "
                   f"({', '.join(clients[:5])}{', ...' if len(clients) > 5 else ''}), "
                   + "; ".join(parts[s] for s in SIGNALS if counts[s]) + f"{blind}{via}.")
        if self.flows_seen["not_kept"]:
            caveats = [*caveats, f"{self.flows_seen['not_kept']} more asymmetric flows to other servers were "
                                 f"counted but not kept (evidence is kept for {MAX_EVIDENCE_SERVERS} servers)"]
        if counts["iface_split"]:
            caveats = [*caveats, f"{self.handshakes['split']} of {self.handshakes['single']} handshakes are split "
                                 "across interfaces; a capture with one interface per direction would split nearly "
                                 "all, so these splits are taken as routing, not as the capture layout"]
        frames = sorted(set(entry.frames))[:MAX_FRAMES]
        pairs = sorted(entry.pairs.items())[:MAX_FLOWS]
        return Finding(
            detector=self.id, layer=self.layer, severity=severity,
            title=self.title if severity > Severity.LOW else "Only one direction of TCP traffic captured "
                                                             "(one-way capture point or asymmetric routing)",
            summary=summary,
            evidence=Evidence(
                frames=frames, flows=entry.refs, hosts=[*servers[:MAX_FLOWS], *clients[:MAX_FLOWS]],
                window=(float(entry.window[0]), float(entry.window[1])),
                metrics={
                    "flows": total, "asymmetric_flows": flows, "share": round(flows / total, 3),
                    **{f"{s}_flows": counts[s] for s in SIGNALS},
                    "acks_of_unseen_packets": entry.blind_acks,
                    "pairs": [{"client": c, "server": srv, "flows": self.pair_flows.get((c, srv), n),
                               "asymmetric": n} for (c, srv), n in pairs],
                    "pairs_not_listed": len(entry.pairs) - len(pairs),
                    "flows_of_uncounted_pairs": entry.unlisted,
                    "server_paths": [{"iface": i, "mac": mac, "ttl": ttl} for i, mac, ttl in paths],
                }),
            filter=frame_filter(frames), remedy=REMEDY, owner=OWNER, caveats=caveats)
