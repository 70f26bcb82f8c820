"""Event streams: the sparse selections of a batch that detectors subscribe to, as frames.

Selection is done with masks over the decoded columns, so a detector sees only the packets it cares about
(ARP, broadcasts, ICMP errors, retransmissions, DNS, TLS handshakes, HTTP header segments) plus flow records.
Streams nobody subscribes to are never built. The streams that need only the packets are selected before the
flow table runs (packetstreams.py via prepare.py); this module builds the ones that need flow state
(retransmissions, TLS and HTTP by connection) and adds the connection to DNS messages. Deep payload decoding
(TLS, HTTP) happens here, on the selected packets only, through the hardened decoders; failures are counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from pcapsense.decode.columns import PROTO_TCP, Packets, any_of
from pcapsense.decode.http import METHOD_PREFIXES, find_header_end, parse_http_request_start
from pcapsense.decode.tls import parse_tls
from pcapsense.errors import MalformedPacket
from pcapsense.flows import FlowInfo
from pcapsense.prepare import Prepared

TLS_CONTENT_TYPES = (0x15, 0x16)  # alert, handshake: the records that tell how a handshake went
TLS_RECORD_PREFIXES = tuple(content_type << 8 | 3 for content_type in TLS_CONTENT_TYPES)  # type, version major 3
HTTP_HEADER_LIMIT = 64 * 1024  # stop following a request's headers after this many bytes (slowloris-safe)
METHOD_WORDS = np.array([int.from_bytes(p[:4], "big") for p in METHOD_PREFIXES], dtype=np.int64)
Builder = Callable[[Packets, FlowInfo, np.ndarray, Prepared], pd.DataFrame | None]


def tls_record_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with a TLS alert or handshake record (content type 21/22, version major 3).

    `head` is the first four payload bytes (or -1), so its top 16 bits are exactly content type and major.
    """
    return any_of(head >> 16, TLS_RECORD_PREFIXES)


def http_request_start(head: np.ndarray) -> np.ndarray:
    """Payloads that open with an HTTP/1 request method."""
    return np.isin(head, METHOD_WORDS)


class StreamBuilder:
    """Builds the subscribed streams of one batch. Holds the little cross-batch state streams need."""

    def __init__(self) -> None:
        self.malformed: Counter[str] = Counter()
        self.http_pending: dict[int, bytes] = {}  # conn_id -> last bytes of an unfinished request header
        self.http_seen: dict[int, int] = {}  # conn_id -> header bytes followed so far
        self.builders: dict[str, Builder] = {
            "arp": self._packet_stream("arp"),
            "broadcast": self._packet_stream("broadcast"),
            "ndp": self._packet_stream("ndp"),
            "icmp_errors": self._packet_stream("icmp_errors"),
            "tcp_retransmissions": self.tcp_retransmissions,
            "dns": self.dns,
            "tls": self.tls,
            "http": self.http,
        }

    def build(self, name: str, pk: Packets, info: FlowInfo, row_of: np.ndarray,
              prepared: Prepared) -> pd.DataFrame | None:
        """`row_of[batch_row]` is the FlowInfo index of a tracked packet, -1 otherwise. None: nothing selected."""
        return self.builders[name](pk, info, row_of, prepared)

    def count_prepared(self, prepared: Prepared) -> None:
        """Take over the deep-decoding failures counted where the batch was prepared."""
        self.malformed.update(prepared.malformed)

    @staticmethod
    def _packet_stream(name: str) -> Builder:
        def build(pk: Packets, info: FlowInfo, row_of: np.ndarray, prepared: Prepared) -> pd.DataFrame | None:
            columns = prepared.streams.get(name)
            return None if columns is None else pd.DataFrame(columns)
        return build

    def tcp_retransmissions(self, pk: Packets, info: FlowInfo, row_of: np.ndarray,
                            prepared: Prepared) -> pd.DataFrame | None:
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

    def dns(self, pk: Packets, info: FlowInfo, row_of: np.ndarray, prepared: Prepared) -> pd.DataFrame | None:
        """One row per decoded message (decoded where the batch was prepared), with its connection."""
        if prepared.dns is None:
            return None
        rows, columns = prepared.dns
        frame = pd.DataFrame(columns)
        frame.insert(2, "conn_id", info.conn_id[row_of[rows]])  # after frame and ts, as in every stream
        return frame

    def tls(self, pk: Packets, info: FlowInfo, row_of: np.ndarray, prepared: Prepared) -> pd.DataFrame | None:
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

    def http(self, pk: Packets, info: FlowInfo, row_of: np.ndarray, prepared: Prepared) -> pd.DataFrame | None:
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
        """Drop per-connection state of flows that have left the flow table (memory stays bounded). Usually no
        request is under way, and the flows leave by the ten thousand at the end of a capture: nothing to do."""
        if not (self.http_pending or self.http_seen):
            return
        for conn in conn_ids.tolist():
            self.http_pending.pop(conn, None)
            self.http_seen.pop(conn, None)

