"""Traffic statistics and capture-quality facts, accumulated per batch and per flow record.

These are the numbers the JSON `stats` block reports, the inputs of the triage ladder's "observed" test, and
the capture-quality caveats attached to findings (mirrored duplicates, snaplen truncation, segments larger
than the link MTU, ACKs of data the capture never saw).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pcapsense.decode.columns import (
    ETH_ARP,
    MALFORMED_KINDS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Packets,
)
from pcapsense.events import http_request_start, tls_record_start
from pcapsense.findings import Finding
from pcapsense.flows import ACK, SYN, FlowInfo, FlowLimits, FlowStats

ETHERNET_MTU = 1500
DNS_OUTSTANDING_CAP = 100_000  # queries waiting for an answer; beyond this the oldest are counted unanswered
CAVEAT_RATIO = 0.01  # a capture-quality problem worth mentioning once it touches 1% of the relevant packets
QUALITY_LAYERS = {  # which capture-quality problems weaken findings of which layer
    "duplicates": ("L3", "L4", "L7", "TLS"),
    "oversized": ("L3", "L4"),
    "truncated": ("DNS", "TLS", "L7", "L3"),
    "capture_loss": ("L3", "L4", "L7", "TLS"),
    "one_sided": ("L4", "L7", "TLS"),
}
ONE_SIDED_RATIO = 0.1  # Zeek capture-loss.zeek raises its notice at 10% missing


@dataclass
class TrafficStats:
    packets: int = 0
    wire_bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    link_packets: Counter[int] = field(default_factory=Counter)
    protocols: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    tcp: Counter[str] = field(default_factory=Counter)
    flows: Counter[str] = field(default_factory=Counter)
    dns: Counter[str] = field(default_factory=Counter)
    quality: Counter[str] = field(default_factory=Counter)
    _dns_outstanding: dict[tuple[str, str, int, str], float] = field(default_factory=dict)

    @property
    def first_ts(self) -> float | None:
        return None if self.first_ns is None else self.first_ns / 1e9

    @property
    def last_ts(self) -> float | None:
        return None if self.last_ns is None else self.last_ns / 1e9

    def add_batch(self, pk: Packets, info: FlowInfo) -> None:
        n = len(pk)
        if not n:
            return
        self.packets += n
        self.wire_bytes += int(pk.wirelen.sum())
        lo, hi = int(pk.ts_ns.min()), int(pk.ts_ns.max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        self._count_link_types(pk.linktype)
        malformed = np.bincount(pk.malformed, minlength=len(MALFORMED_KINDS))  # codes are small: count, no sort
        for code in np.flatnonzero(malformed[1:]).tolist():
            self.malformed[MALFORMED_KINDS[code + 1]] += int(malformed[code + 1])
        ok = pk.malformed == 0
        proto = pk.proto
        for name, mask in (("arp", pk.net == ETH_ARP), ("ipv4", pk.ipver == 4), ("ipv6", pk.ipver == 6),
                           ("tcp", proto == PROTO_TCP), ("udp", proto == PROTO_UDP), ("icmp", proto == PROTO_ICMP),
                           ("icmp6", proto == PROTO_ICMPV6), ("ip_fragments", pk.fragment),
                           ("vlan_tagged", pk.vlan_depth > 0), ("tunnelled", pk.tunnel_depth > 0),
                           ("unknown_link_type", pk.unknown_link)):
            self.protocols[name] += int(np.count_nonzero(mask & ok)) if name != "unknown_link_type" else int(
                np.count_nonzero(mask))
        tcp = (proto == PROTO_TCP) & ok
        flags, head = pk.tcp_flags[tcp], pk.payload_head[tcp]  # the TCP tests below look at TCP rows only
        self.tcp["syn"] += int(np.count_nonzero((flags & (SYN | ACK)) == SYN))
        self.tcp["syn_ack"] += int(np.count_nonzero((flags & (SYN | ACK)) == (SYN | ACK)))
        self.tcp["rst"] += int(np.count_nonzero((flags & 0x04) != 0))
        for name, mask in (("retransmissions", info.retrans), ("fast_retransmissions", info.fast_retrans),
                           ("out_of_order", info.ooo), ("mirrored_duplicates", info.dupe),
                           ("previous_segment_lost", info.lost), ("acked_unseen", info.ack_unseen)):
            self.tcp[name] += int(np.count_nonzero(mask))
        self.tcp["ack_bearing"] += int(np.count_nonzero((flags & ACK) != 0))
        self.tcp["tls_handshake_records"] += int(np.count_nonzero(tls_record_start(head)))
        self.tcp["http_request_starts"] += int(np.count_nonzero(http_request_start(head)))
        self.quality["truncated_by_snaplen"] += int(np.count_nonzero(pk.caplen < pk.wirelen))
        self.quality["oversized_segments"] += int(np.count_nonzero(tcp & (pk.ip_len > ETHERNET_MTU)
                                                                   & (pk.tunnel_depth == 0)))

    def _count_link_types(self, linktype: np.ndarray) -> None:
        """Packets per link type; a batch nearly always has one, which needs no sort."""
        first = int(linktype[0])
        if (linktype == first).all():
            self.link_packets[first] += len(linktype)
            return
        for lt, count in zip(*np.unique(linktype, return_counts=True), strict=True):
            self.link_packets[int(lt)] += int(count)

    def add_flows(self, records: pd.DataFrame) -> None:
        """Flow counts; the TCP ones select from the few columns they read, never copy the whole record."""
        proto = records["proto"].to_numpy()
        tcp = proto == PROTO_TCP
        tcp_flows, udp_flows = int(np.count_nonzero(tcp)), int(np.count_nonzero(proto == PROTO_UDP))
        self.flows["tcp"] += tcp_flows
        self.flows["udp"] += udp_flows
        self.flows["other"] += len(proto) - tcp_flows - udp_flows
        for name, count in records["handshake"][tcp].value_counts().items():
            self.tcp[f"handshake_{name.replace('-', '_')}"] += int(count)
        for name, count in records["state"][tcp].value_counts().items():
            self.tcp[f"state_{name}"] += int(count)
        self.tcp["reused_tuples"] += int(records["reuse_gap_s"][tcp].notna().sum())
        self.tcp["acks_without_peer"] += int(records["ack_no_peer_o"][tcp].sum() + records["ack_no_peer_r"][tcp].sum())
        for name, count in records["end_reason"].value_counts().items():
            self.flows[f"ended_{name.replace('-', '_')}"] += int(count)

    def add_dns(self, dns: pd.DataFrame | None) -> None:
        """Match queries to responses by (client, server, id, name) to count unanswered queries.

        The columns are turned into lists once: iterating a Series goes through pandas for every element.
        """
        if dns is None or not len(dns):
            return
        pending = self._dns_outstanding
        columns = (dns[name].tolist() for name in ("src", "dst", "id", "qname", "is_response", "rcode_name", "ts"))
        for src, dst, msg_id, qname, is_resp, rcode_name, ts in zip(*columns, strict=True):
            if is_resp:
                self.dns["responses"] += 1
                self.dns[f"rcode_{rcode_name}"] += 1
                pending.pop((dst, src, msg_id, qname), None)
            else:
                key = (src, dst, msg_id, qname)
                self.dns["queries"] += 1
                if key in pending:
                    self.dns["retried_queries"] += 1
                pending[key] = ts
                if len(pending) > DNS_OUTSTANDING_CAP:
                    pending.pop(next(iter(pending)))
                    self.dns["unanswered_evicted"] += 1

    def observed(self) -> dict[str, bool]:
        """Which rungs of the ladder have traffic to judge."""
        linked = sum(n for lt, n in self.link_packets.items() if lt in (1, 113, 276))
        return {
            "L2": linked > 0 or self.protocols["arp"] > 0,
            "L3": self.protocols["ipv4"] + self.protocols["ipv6"] > 0,
            "L4": self.protocols["tcp"] + self.protocols["udp"] > 0,
            "DNS": self.dns["queries"] + self.dns["responses"] > 0,
            "TLS": self.tcp["tls_handshake_records"] > 0,
            "L7": self.tcp["http_request_starts"] > 0,
        }

    def _quality_problems(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        tcp_packets = max(self.protocols["tcp"], 1)
        dupes = self.tcp["mirrored_duplicates"]
        if dupes and dupes / tcp_packets >= CAVEAT_RATIO:
            problems["duplicates"] = (f"{dupes} mirrored duplicate packets (same packet seen twice within "
                                      "microseconds, as from a SPAN port); they were not counted as retransmissions")
        if self.quality["oversized_segments"]:
            problems["oversized"] = (f"{self.quality['oversized_segments']} TCP segments larger than the "
                                     f"{ETHERNET_MTU}-byte link MTU: segmentation offload on the capture host, so "
                                     "on-capture sizes are not on-wire sizes")
        if self.quality["truncated_by_snaplen"]:
            problems["truncated"] = (f"{self.quality['truncated_by_snaplen']} frames truncated by the snapshot "
                                     "length; payload-level evidence may be incomplete")
        acks = max(self.tcp["ack_bearing"], 1)
        if self.tcp["acked_unseen"] / acks >= CAVEAT_RATIO:
            problems["capture_loss"] = (f"{self.tcp['acked_unseen']} ACKs acknowledge data the capture never saw "
                                        f"({100 * self.tcp['acked_unseen'] / acks:.1f}% of ACKs): capture loss or "
                                        "a one-sided capture point")
        without_peer = self.tcp["acks_without_peer"]
        if without_peer / acks >= ONE_SIDED_RATIO:
            problems["one_sided"] = (f"{without_peer} ACK-bearing packets ({100 * without_peer / acks:.0f}%) belong "
                                     "to connections whose other direction the capture never saw: a one-sided "
                                     "capture point (or asymmetric routing, see L3)")
        return problems

    def caveats_for(self, finding: Finding) -> list[str]:
        return [text for name, text in self._quality_problems().items() if finding.layer in QUALITY_LAYERS[name]]

    def to_dict(self, flow_stats: FlowStats, deep_malformed: Counter[str], limits: FlowLimits) -> dict[str, Any]:
        unanswered = len(self._dns_outstanding) + self.dns["unanswered_evicted"]
        return {
            "packets_by_link_type": {str(k): v for k, v in sorted(self.link_packets.items())},
            "protocols": dict(self.protocols),
            "malformed": dict(self.malformed + deep_malformed),
            "tcp": dict(self.tcp) | {"connections": self.flows["tcp"]},
            "flows": dict(self.flows) | {
                "created": flow_stats.created, "expired_idle": flow_stats.expired_idle,
                "evicted_flow_cap": flow_stats.evicted_cap, "peak_tracked": flow_stats.peak_tracked,
                "max_flows": limits.max_flows,
            },
            "untracked_packets": dict(flow_stats.untracked_packets),
            "dns": dict(self.dns) | {"unanswered": unanswered},
            "capture_quality": dict(self.quality) | {
                "mirrored_duplicates": self.tcp["mirrored_duplicates"], "acked_unseen": self.tcp["acked_unseen"],
                "acks_without_peer": self.tcp["acks_without_peer"],
            },
        }
