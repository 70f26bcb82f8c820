"""Event streams: the sparse selections of a batch that detectors subscribe to.

Selection is done with masks over the decoded columns, so a detector sees only the packets it cares about
(ARP, broadcasts, ICMP errors, retransmissions, DNS, TLS handshakes, HTTP header segments) plus flow records.
Streams nobody subscribes to are never built. Deep payload decoding (DNS, TLS, HTTP) happens here, on the
selected packets only, through the hardened decoders; failures are counted per kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from pcapsense.decode.columns import ETH_ARP, ETH_IPV4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packets
from pcapsense.decode.dns import RCODE_NAMES, parse_dns
from pcapsense.decode.gather import Gather
from pcapsense.decode.http import METHOD_PREFIXES, find_header_end, parse_http_request_start
from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.decode.tls import parse_tls
from pcapsense.errors import MalformedPacket
from pcapsense.flowrecords import address_text
from pcapsense.flows import FlowInfo

DNS_PORTS = (53, 5353, 5355)
TLS_CONTENT_TYPES = (0x15, 0x16)  # alert, handshake: the records that tell how a handshake went
FRAME_HASH_BYTES = 64
HTTP_HEADER_LIMIT = 64 * 1024  # stop following a request's headers after this many bytes (slowloris-safe)
METHOD_WORDS = np.array([int.from_bytes(p[:4], "big") for p in METHOD_PREFIXES], dtype=np.int64)


def tls_record_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with a TLS alert or handshake record (content type 21/22, version major 3)."""
    return np.isin(head >> 24, TLS_CONTENT_TYPES) & (((head >> 16) & 0xFF) == 3)


def http_request_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with an HTTP/1 request method."""
    return np.isin(head, METHOD_WORDS)


def _addresses(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    return [address_text(h, low) for h, low in zip(hi.tolist(), lo.tolist(), strict=True)]


def frame_hashes(pk: Packets, rows: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a over the first bytes of each frame: identical frames (a loop) hash alike."""
    h = np.full(len(rows), 0xCBF29CE484222325, dtype=np.uint64)
    g = Gather(pk.data)
    start, length = pk.start[rows], pk.caplen[rows]
    with np.errstate(over="ignore"):
        for i in range(FRAME_HASH_BYTES):
            byte = np.where(i < length, g.u8(start + i), 0).astype(np.uint64)
            h = (h ^ byte) * np.uint64(0x100000001B3)
        h ^= length.astype(np.uint64)
    return h.view(np.int64)


class StreamBuilder:
    """Builds the subscribed streams of one batch. Holds the little cross-batch state streams need."""

    def __init__(self) -> None:
        self.malformed: Counter[str] = Counter()
        self.http_pending: dict[int, bytes] = {}  # conn_id -> last bytes of an unfinished request header
        self.http_seen: dict[int, int] = {}  # conn_id -> header bytes followed so far
        self.builders: dict[str, Callable[[Packets, FlowInfo, np.ndarray], pd.DataFrame | None]] = {
            "arp": self.arp,
            "broadcast": self.broadcast,
            "ndp": self.ndp,
            "icmp_errors": self.icmp_errors,
            "tcp_retransmissions": self.tcp_retransmissions,
            "dns": self.dns,
            "tls": self.tls,
            "http": self.http,
        }

    def build(self, name: str, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        """`row_of[batch_row]` is the FlowInfo index of a tracked packet, -1 otherwise. None: nothing selected."""
        return self.builders[name](pk, info, row_of)

    # -- L2 ---------------------------------------------------------------------------------------------------

    def arp(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        """Ethernet/IPv4 ARP only (hardware type 1, protocol 0x0800, address lengths 6 and 4)."""
        rows = np.flatnonzero((pk.net == ETH_ARP) & (pk.malformed == 0) & (pk.l3 >= 0))
        g = Gather(pk.data)
        l3 = pk.l3[rows]
        ether_ipv4 = (g.be16(l3) == 1) & (g.be16(l3 + 2) == ETH_IPV4) & (g.u8(l3 + 4) == 6) & (g.u8(l3 + 5) == 4)
        self.malformed["arp-not-ethernet-ipv4"] += int(np.count_nonzero(~ether_ipv4))
        rows, l3 = rows[ether_ipv4], l3[ether_ipv4]
        if not len(rows):
            return None
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "iface": pk.iface[rows],
            "op": g.be16(l3 + 6), "sha": g.be48(l3 + 8), "spa": g.be32(l3 + 14), "tha": g.be48(l3 + 18),
            "tpa": g.be32(l3 + 24), "src_mac": pk.src_mac[rows], "dst_mac": pk.dst_mac[rows],
            "frame_hash": frame_hashes(pk, rows),
        })

    def broadcast(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        rows = np.flatnonzero(pk.dst_mac == BROADCAST_MAC)
        if not len(rows):
            return None
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "src_mac": pk.src_mac[rows],
            "net": pk.net[rows], "frame_hash": frame_hashes(pk, rows),
        })

    def ndp(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        rows = np.flatnonzero((pk.proto == PROTO_ICMPV6) & np.isin(pk.icmp_type, (135, 136)) & (pk.payload_cap >= 16))
        if not len(rows):
            return None
        g, p = Gather(pk.data), pk.payload_off[rows]
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "type": pk.icmp_type[rows],
            "src": _addresses(pk.src_hi[rows], pk.src_lo[rows]),
            "target": _addresses(g.be64(p), g.be64(p + 8)), "src_mac": pk.src_mac[rows],
        })

    # -- L3 ---------------------------------------------------------------------------------------------------

    def icmp_errors(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        """ICMP/ICMPv6 errors with the 5-tuple of the packet they quote (which flow the router is talking about)."""
        v4 = (pk.proto == PROTO_ICMP) & np.isin(pk.icmp_type, (3, 4, 5, 11, 12))
        v6 = (pk.proto == PROTO_ICMPV6) & np.isin(pk.icmp_type, (1, 2, 3, 4))
        rows = np.flatnonzero((v4 | v6) & (pk.malformed == 0))
        if not len(rows):
            return None
        g = Gather(pk.data)
        inner = pk.payload_off[rows]  # the quoted packet starts right after the 8-byte ICMP header
        room = pk.payload_cap[rows]
        ver = g.u8(inner) >> 4
        ihl = np.where(ver == 4, (g.u8(inner) & 0xF) * 4, 40)
        proto = np.where(ver == 4, g.u8(inner + 9), g.u8(inner + 6))
        src_hi = np.where(ver == 4, 0, g.be64(inner + 8).astype(np.int64)).astype(np.uint64)
        v4_src = (np.uint64(0xFFFF << 32) | g.be32(inner + 12).astype(np.uint64))
        v4_dst = (np.uint64(0xFFFF << 32) | g.be32(inner + 16).astype(np.uint64))
        src_lo = np.where(ver == 4, v4_src, g.be64(inner + 16))
        dst_hi = np.where(ver == 4, 0, g.be64(inner + 24).astype(np.int64)).astype(np.uint64)
        dst_lo = np.where(ver == 4, v4_dst, g.be64(inner + 32))
        has_ports = (room >= ihl + 4) & np.isin(proto, (PROTO_TCP, PROTO_UDP))
        quoted_ok = ((ver == 4) & (room >= 20)) | ((ver == 6) & (room >= 40))
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "v6": pk.proto[rows] == PROTO_ICMPV6,
            "type": pk.icmp_type[rows], "code": pk.icmp_code[rows], "mtu": pk.icmp_mtu[rows],
            "reporter": _addresses(pk.src_hi[rows], pk.src_lo[rows]),
            "quoted": quoted_ok, "inner_proto": np.where(quoted_ok, proto, -1),
            "inner_src": _addresses(src_hi, src_lo), "inner_dst": _addresses(dst_hi, dst_lo),
            "inner_sport": np.where(has_ports, g.be16(inner + ihl), -1),
            "inner_dport": np.where(has_ports, g.be16(inner + ihl + 2), -1),
            "inner_len": np.where(ver == 4, g.be16(inner + 2), g.be16(inner + 4) + 40),
        })

    def tcp_retransmissions(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        sel = np.flatnonzero(info.retrans | info.fast_retrans | info.ooo | info.dupe)
        if not len(sel):
            return None
        rows = info.rows[sel]
        kind = np.where(info.dupe[sel], "duplicate", np.where(info.fast_retrans[sel], "fast-retransmission",
                        np.where(info.ooo[sel], "out-of-order", "retransmission")))
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "conn_id": info.conn_id[sel],
            "direction": info.direction[sel], "kind": kind, "rel_seq": info.rel_seq[sel],
            "seg_len": info.seg_len[sel], "payload_len": pk.payload_len[rows], "ip_len": pk.ip_len[rows],
            "df": pk.df[rows], "flags": pk.tcp_flags[rows], "ttl": pk.ttl[rows], "acked": info.acked[sel],
        })

    # -- application payloads ---------------------------------------------------------------------------------

    def _tracked(self, rows: np.ndarray, info: FlowInfo, row_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = row_of[rows]
        keep = idx >= 0
        return rows[keep], idx[keep]

    def dns(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        l4 = (pk.proto == PROTO_UDP) | (pk.proto == PROTO_TCP)
        rows = np.flatnonzero(l4 & (np.isin(pk.sport, DNS_PORTS) | np.isin(pk.dport, DNS_PORTS))
                              & (pk.payload_len > 0) & (pk.malformed == 0))
        rows, idx = self._tracked(rows, info, row_of)
        records = []
        for row, i in zip(rows.tolist(), idx.tolist(), strict=True):
            if pk.fragment[row]:
                self.malformed["dns-fragmented-not-reassembled"] += 1
                continue
            try:
                msg = parse_dns(pk.payload(row), over_tcp=bool(pk.proto[row] == PROTO_TCP))
            except MalformedPacket as exc:
                self.malformed[exc.kind] += 1
                continue
            records.append((int(pk.frame[row]), int(pk.ts_ns[row]) / 1e9, int(info.conn_id[i]),
                            address_text(int(pk.src_hi[row]), int(pk.src_lo[row])), int(pk.sport[row]),
                            address_text(int(pk.dst_hi[row]), int(pk.dst_lo[row])), int(pk.dport[row]),
                            "tcp" if pk.proto[row] == PROTO_TCP else "udp", msg.id, msg.is_response, msg.opcode,
                            msg.rcode, RCODE_NAMES.get(msg.rcode, str(msg.rcode)), msg.truncated, msg.qname,
                            msg.qtype, msg.ancount, ",".join(msg.answers)))
        if not records:
            return None
        return pd.DataFrame.from_records(records, columns=[
            "frame", "ts", "conn_id", "src", "sport", "dst", "dport", "transport", "id", "is_response", "opcode",
            "rcode", "rcode_name", "truncated", "qname", "qtype", "ancount", "answers"])

    def tls(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        rows = np.flatnonzero((pk.proto == PROTO_TCP) & (pk.payload_cap >= 5) & tls_record_start(pk.payload_head))
        rows, idx = self._tracked(rows, info, row_of)
        records = []
        for row, i in zip(rows.tolist(), idx.tolist(), strict=True):
            try:
                events = parse_tls(pk.payload(row))
            except MalformedPacket as exc:
                self.malformed[exc.kind] += 1
                continue
            for ev in events:
                records.append((int(pk.frame[row]), int(pk.ts_ns[row]) / 1e9, int(info.conn_id[i]),
                                int(info.direction[i]), int(pk.ttl[row]), ev.kind, ev.version, ev.sni,
                                ",".join(ev.alpn), ev.alert_level, ev.alert_description, ev.alert_name))
        if not records:
            return None
        return pd.DataFrame.from_records(records, columns=[
            "frame", "ts", "conn_id", "direction", "ttl", "kind", "version", "sni", "alpn", "alert_level",
            "alert_description", "alert_name"])

    def http(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        """Request starts, and each later segment of a request whose header block is not complete yet."""
        tcp_data = (pk.proto == PROTO_TCP) & (pk.payload_cap > 0) & (row_of >= 0)
        starts = tcp_data & http_request_start(pk.payload_head)
        # client segments of requests pending from earlier batches or starting in this one
        conn_of_row = np.full(len(pk), -1, dtype=np.int64)
        conn_of_row[info.rows] = info.conn_id
        from_client = np.zeros(len(pk), dtype=bool)
        from_client[info.rows] = info.direction == 0
        starts &= from_client
        watch = np.union1d(np.fromiter(self.http_pending, np.int64, len(self.http_pending)), conn_of_row[starts])
        rows = np.flatnonzero(starts | (tcp_data & from_client & np.isin(conn_of_row, watch)))
        records = []
        for row in rows.tolist():
            i = int(row_of[row])
            conn = int(info.conn_id[i])
            if not starts[row] and conn not in self.http_pending:
                continue  # the request's header block completed earlier in this batch
            payload = pk.payload(row, HTTP_HEADER_LIMIT)
            rec = self._http_segment(conn, payload, bool(starts[row]))
            if rec is not None:
                records.append((int(pk.frame[row]), int(pk.ts_ns[row]) / 1e9, conn, int(info.seg_len[i]), *rec))
        if not records:
            return None
        return pd.DataFrame.from_records(records, columns=[
            "frame", "ts", "conn_id", "bytes", "kind", "complete", "method", "target", "host", "user_agent"])

    def _http_segment(self, conn: int, payload: bytes, is_start: bool) -> tuple | None:
        if conn in self.http_pending and not is_start:
            end = find_header_end(self.http_pending[conn], payload)
            seen = self.http_seen.get(conn, 0) + len(payload)
            if end >= 0 or seen > HTTP_HEADER_LIMIT:
                del self.http_pending[conn]
                self.http_seen.pop(conn, None)
            else:
                self.http_pending[conn] = (self.http_pending[conn] + payload)[-3:]
                self.http_seen[conn] = seen
            return ("header-segment", end >= 0, None, None, None, None)
        try:
            req = parse_http_request_start(payload)
        except MalformedPacket as exc:
            self.malformed[exc.kind] += 1
            return None
        if req.headers_complete:
            self.http_pending.pop(conn, None)
        else:
            self.http_pending[conn] = payload[-3:]
            self.http_seen[conn] = len(payload)
        return ("request", req.headers_complete, req.method, req.target, req.host, req.user_agent)

    def forget(self, conn_ids: np.ndarray) -> None:
        """Drop per-connection state of flows that have left the flow table (memory stays bounded)."""
        for conn in conn_ids.tolist():
            self.http_pending.pop(conn, None)
            self.http_seen.pop(conn, None)

