"""Event streams: the sparse selections of a batch that detectors subscribe to.

Selection is done with masks over the decoded columns, so a detector sees only the packets it cares about
(ARP, broadcasts, ICMP errors, retransmissions, DNS, TLS handshakes, HTTP header segments) plus flow records.
Streams nobody subscribes to are never built. A selection tests its rarest condition over the whole batch and
the others only on the rows that passed it: a pass over a batch column costs far more than the few rows kept.
Deep payload decoding (DNS, TLS, HTTP) happens here, on the selected packets only, through the hardened
decoders; failures are counted per kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pcapsense.decode.columns import ETH_ARP, ETH_IPV4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packets
from pcapsense.decode.dns import RCODE_NAMES, DnsMessage, parse_dns
from pcapsense.decode.gather import Gather
from pcapsense.decode.http import METHOD_PREFIXES, find_header_end, parse_http_request_start
from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.decode.tls import parse_tls
from pcapsense.errors import MalformedPacket
from pcapsense.flowrecords import address_text
from pcapsense.flows import FlowInfo

DNS_PORTS = (53, 5353, 5355)
TLS_CONTENT_TYPES = (0x15, 0x16)  # alert, handshake: the records that tell how a handshake went
TLS_RECORD_PREFIXES = tuple(content_type << 8 | 3 for content_type in TLS_CONTENT_TYPES)  # type, version major 3
ARP_IPV4_BYTES = 28  # an ARP packet for IPv4 over Ethernet
ARP_ETHER_IPV4 = 1 << 32 | ETH_IPV4 << 16 | 6 << 8 | 4  # hardware type 1 (Ethernet), IPv4, address lengths 6, 4
FRAME_HASH_BYTES = 64
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3  # 64-bit FNV-1a
HTTP_HEADER_LIMIT = 64 * 1024  # stop following a request's headers after this many bytes (slowloris-safe)
METHOD_WORDS = np.array([int.from_bytes(p[:4], "big") for p in METHOD_PREFIXES], dtype=np.int64)


def _any_of(values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    """`np.isin` for a handful of constants: a few comparisons cost less than its sort or lookup table."""
    mask = values == choices[0]
    for choice in choices[1:]:
        mask |= values == choice
    return mask


def tls_record_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with a TLS alert or handshake record (content type 21/22, version major 3).

    `head` is the first four payload bytes (or -1), so its top 16 bits are exactly content type and major.
    """
    return _any_of(head >> 16, TLS_RECORD_PREFIXES)


def http_request_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with an HTTP/1 request method."""
    return np.isin(head, METHOD_WORDS)


def _addresses(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    return [address_text(h, low) for h, low in zip(hi.tolist(), lo.tolist(), strict=True)]


def _be_field(block: np.ndarray, start: int, width: int) -> np.ndarray:
    """Big-endian integer in bytes `start`..`start + width` of each row of a gathered (row, byte) block.

    Gathering a whole header once and slicing fields from it takes a few numpy calls instead of a gather
    per byte of every field.
    """
    return block[:, start : start + width] @ (256 ** np.arange(width - 1, -1, -1))


def frame_hashes(pk: Packets, rows: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a over the first bytes of each frame: identical frames (a loop) hash alike.

    The bytes are gathered in one (byte index, row) matrix, zero past each frame's end, so each sequential
    FNV step is two in-place operations over all rows. A step over a zero byte only multiplies by the prime,
    so the steps past the longest frame (ARP frames are 42 bytes) collapse into one multiplication.
    """
    start, length = pk.start[rows], pk.caplen[rows]
    hashed = min(FRAME_HASH_BYTES, int(length.max(initial=0)))
    offsets = np.arange(hashed)[:, None]
    frame_bytes = np.where(offsets < length, Gather(pk.data).u8(start + offsets), 0).astype(np.uint64)
    h = np.full(len(rows), FNV_OFFSET, dtype=np.uint64)
    prime = np.full(len(rows), FNV_PRIME, dtype=np.uint64)  # an array operand: a numpy scalar costs more per step
    with np.errstate(over="ignore"):
        for byte in frame_bytes:
            h ^= byte
            h *= prime
        h *= np.uint64(pow(FNV_PRIME, FRAME_HASH_BYTES - hashed, 1 << 64))
        h ^= length.astype(np.uint64)
    return h.view(np.int64)


def _message_columns(messages: list[DnsMessage]) -> dict[str, Any]:
    """The DNS stream's columns taken from the decoded messages.

    Integer and boolean columns are built as typed arrays because pandas infers the type of a list element by
    element; qtype stays a list so that a None (no question) still turns it into floats with NaN.
    """
    field = dict(zip(DnsMessage._fields, zip(*messages, strict=True), strict=True))
    return {
        "id": np.array(field["id"], dtype=np.int64),
        "is_response": np.array(field["is_response"], dtype=bool),
        "opcode": np.array(field["opcode"], dtype=np.int64),
        "rcode": np.array(field["rcode"], dtype=np.int64),
        "rcode_name": [RCODE_NAMES.get(rcode, str(rcode)) for rcode in field["rcode"]],
        "truncated": np.array(field["truncated"], dtype=bool),
        "qname": list(field["qname"]),
        "qtype": list(field["qtype"]),
        "ancount": np.array(field["ancount"], dtype=np.int64),
        "answers": [",".join(answers) for answers in field["answers"]],
    }


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
        rows = np.flatnonzero(pk.net == ETH_ARP)
        rows = rows[(pk.malformed[rows] == 0) & (pk.l3[rows] >= 0)]
        header = Gather(pk.data).u8(pk.l3[rows][:, None] + np.arange(ARP_IPV4_BYTES))
        ether_ipv4 = _be_field(header, 0, 6) == ARP_ETHER_IPV4
        self.malformed["arp-not-ethernet-ipv4"] += int(np.count_nonzero(~ether_ipv4))
        rows, header = rows[ether_ipv4], header[ether_ipv4]
        if not len(rows):
            return None
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "iface": pk.iface[rows],
            "op": _be_field(header, 6, 2), "sha": _be_field(header, 8, 6), "spa": _be_field(header, 14, 4),
            "tha": _be_field(header, 18, 6), "tpa": _be_field(header, 24, 4), "src_mac": pk.src_mac[rows],
            "dst_mac": pk.dst_mac[rows], "frame_hash": frame_hashes(pk, rows),
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
        rows = np.flatnonzero(pk.proto == PROTO_ICMPV6)
        rows = rows[_any_of(pk.icmp_type[rows], (135, 136)) & (pk.payload_cap[rows] >= 16)]
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
        icmp = np.flatnonzero(((pk.proto == PROTO_ICMP) | (pk.proto == PROTO_ICMPV6)) & (pk.malformed == 0))
        kind, v6 = pk.icmp_type[icmp], pk.proto[icmp] == PROTO_ICMPV6
        rows = icmp[np.where(v6, _any_of(kind, (1, 2, 3, 4)), _any_of(kind, (3, 4, 5, 11, 12)))]
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
        """One row per decoded message; the per-packet columns are gathered with numpy for the kept rows."""
        rows = np.flatnonzero(_any_of(pk.sport, DNS_PORTS) | _any_of(pk.dport, DNS_PORTS))
        l4 = _any_of(pk.proto[rows], (PROTO_UDP, PROTO_TCP))
        rows = rows[l4 & (pk.payload_len[rows] > 0) & (pk.malformed[rows] == 0)]
        rows, idx = self._tracked(rows, info, row_of)
        kept, messages = self._parse_dns(pk, rows)
        if not messages:
            return None
        rows, idx = rows[kept], idx[kept]
        return pd.DataFrame({
            "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "conn_id": info.conn_id[idx],
            "src": _addresses(pk.src_hi[rows], pk.src_lo[rows]), "sport": pk.sport[rows],
            "dst": _addresses(pk.dst_hi[rows], pk.dst_lo[rows]), "dport": pk.dport[rows],
            "transport": ["tcp" if tcp else "udp" for tcp in (pk.proto[rows] == PROTO_TCP).tolist()],
            **_message_columns(messages),
        })

    def _parse_dns(self, pk: Packets, rows: np.ndarray) -> tuple[list[int], list[DnsMessage]]:
        """Decode the selected payloads; return the positions in `rows` that decoded and their messages."""
        kept: list[int] = []
        messages: list[DnsMessage] = []
        flags = zip(rows.tolist(), pk.fragment[rows].tolist(), (pk.proto[rows] == PROTO_TCP).tolist(), strict=True)
        for pos, (row, fragment, over_tcp) in enumerate(flags):
            if fragment:
                self.malformed["dns-fragmented-not-reassembled"] += 1
                continue
            try:
                messages.append(parse_dns(pk.payload(row), over_tcp=over_tcp))
            except MalformedPacket as exc:
                self.malformed[exc.kind] += 1
                continue
            kept.append(pos)
        return kept, messages

    def tls(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        rows = np.flatnonzero(tls_record_start(pk.payload_head))
        rows = rows[(pk.proto[rows] == PROTO_TCP) & (pk.payload_cap[rows] >= 5)]
        rows, idx = self._tracked(rows, info, row_of)
        records = []
        columns = zip(rows.tolist(), pk.frame[rows].tolist(), pk.ts_ns[rows].tolist(), info.conn_id[idx].tolist(),
                      info.direction[idx].tolist(), pk.ttl[rows].tolist(), strict=True)
        for row, frame, ts_ns, conn, direction, ttl in columns:
            try:
                events = parse_tls(pk.payload(row))
            except MalformedPacket as exc:
                self.malformed[exc.kind] += 1
                continue
            for ev in events:
                records.append((frame, ts_ns / 1e9, conn, direction, ttl, ev.kind, ev.version, ev.sni,
                                ",".join(ev.alpn), ev.alert_level, ev.alert_description, ev.alert_name))
        if not records:
            return None
        return pd.DataFrame.from_records(records, columns=[
            "frame", "ts", "conn_id", "direction", "ttl", "kind", "version", "sni", "alpn", "alert_level",
            "alert_description", "alert_name"])

    def http(self, pk: Packets, info: FlowInfo, row_of: np.ndarray) -> pd.DataFrame | None:
        """Request starts, and each later segment of a request whose header block is not complete yet."""
        request_head = http_request_start(pk.payload_head)
        if not self.http_pending and not request_head.any():
            return None  # the usual batch: no request under way, none starting
        tcp_data = (pk.proto == PROTO_TCP) & (pk.payload_cap > 0) & (row_of >= 0)
        starts = tcp_data & request_head
        # client segments of requests pending from earlier batches or starting in this one
        conn_of_row = np.full(len(pk), -1, dtype=np.int64)
        conn_of_row[info.rows] = info.conn_id
        from_client = np.zeros(len(pk), dtype=bool)
        from_client[info.rows] = info.direction == 0
        starts &= from_client
        watch = np.union1d(np.fromiter(self.http_pending, np.int64, len(self.http_pending)), conn_of_row[starts])
        rows = np.flatnonzero(starts | (tcp_data & from_client & np.isin(conn_of_row, watch)))
        records = []
        idx = row_of[rows]
        columns = zip(rows.tolist(), info.conn_id[idx].tolist(), starts[rows].tolist(), pk.frame[rows].tolist(),
                      pk.ts_ns[rows].tolist(), info.seg_len[idx].tolist(), strict=True)
        for row, conn, is_start, frame, ts_ns, seg_len in columns:
            if not is_start and conn not in self.http_pending:
                continue  # the request's header block completed earlier in this batch
            payload = pk.payload(row, HTTP_HEADER_LIMIT)
            rec = self._http_segment(conn, payload, is_start)
            if rec is not None:
                records.append((frame, ts_ns / 1e9, conn, seg_len, *rec))
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

