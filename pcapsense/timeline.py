"""Health figures: bounded per-layer time series and point samples for the report's charts.

A layer with no finding still has to show its numbers (clean is a result), and a broken layer has to make its
signature visible: ARP and broadcast rates with recirculated frames for a loop, segment sizes that are never
ACKed for a path-MTU black hole, half-open connections piling up on one server:port for a SYN flood, source
ports sweeping the ephemeral range for port exhaustion, DNS response times and rcodes, TLS handshake outcomes,
HTTP header blocks that never complete for slowloris.

Memory stays bounded whatever the capture length:

* time bins adapt: they start at START_BIN_S and, when a timestamp would need more than MAX_BINS bins, the width
  doubles and neighbouring bins merge (counts add, maxima take the larger; half-open connections are kept as
  start and end histograms, which merge exactly, rather than as a running count, which would not);
* point lists are uniform reservoir samples (Algorithm R) of at most MAX_POINTS rows with the number left out;
* keyed series (server:ports, client->server pairs) keep the heaviest MAX_KEYS keys and count the rest;
* per-connection state (pending TLS handshakes and HTTP header blocks) lives only until the connection's flow
  record arrives, so it is bounded by the flow table; pending DNS queries are capped like the core's statistics.

Times in `to_dict()` are seconds since `t0`, the first packet's timestamp: bin `i` covers
`[t0 + i*bin_s, t0 + (i+1)*bin_s)`. Text taken from packets (DNS names, SNI, Host) is passed on as the decoders
made it (printable, length-capped); escaping for HTML is the report's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from pcapsense.decode.columns import PROTO_TCP, Packets
from pcapsense.flows import ACK, SYN, FlowInfo
from pcapsense.stats import DNS_OUTSTANDING_CAP

START_BIN_S = 0.01  # 10 ms: a 3-second storm still gets 300 bins
MAX_BINS = 2000  # even, so bins merge in pairs
MAX_POINTS = 2000  # points per sampled list
MAX_KEYS = 64  # server:ports whose half-open series are followed at once
SIZES_KEPT = 256  # distinct segment sizes reported per histogram (the most common)
MAX_PAIRS = 100_000  # client->server:port pairs counted; beyond, the lighter half is dropped (counted as untracked)
PAIR = ("orig", "resp", "resp_port")  # flow-record columns naming a client -> server:port pair
SAMPLED_PAIRS = 8  # pairs whose source ports are sampled (a pair entering this top later starts its sample then)
TOP_SERVERS = 5  # half-open series reported
MAX_SNI = 10_000  # (server name, outcome) pairs counted; names come from packets, so their number is capped
MAX_HASHES = 65_536  # broadcast frame hashes remembered for the duplicate test
DUPLICATE_WINDOW_S = 0.1  # Wireshark's ARP storm period: a loop recirculates a frame within it, a retry timer not
DNS_RTT_EDGES_MS = np.array([m * 10.0**e for e in range(-1, 5) for m in (1, 2, 5)] + [1e5])  # 0.1 ms .. 100 s, 1-2-5
LABEL_CHARS = 120  # packet-derived labels kept per point (the report cuts further for display)
ICMP_MTU_TYPES = ((False, 3, 4), (True, 2, 0))  # (IPv6, type, code): frag-needed, packet-too-big
RETRANSMISSION_KINDS = ("retransmission", "fast-retransmission")
TLS_OUTCOMES = ("ServerHello", "fatal alert", "reset", "no answer")
FATAL = 2


class _Bins:
    """Fixed-length per-bin arrays sharing one adaptive width; each array merges with its own reducer."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.width = START_BIN_S
        self.used = 0
        self.arrays: dict[Any, tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]] = {}

    def index(self, ts: np.ndarray) -> np.ndarray:
        """Bin index of each timestamp, widening the bins first if the latest would not fit."""
        ts = np.asarray(ts, dtype=np.float64)
        if self.t0 is None:
            self.t0 = float(ts.min())
        idx = np.floor((ts - self.t0) / self.width).astype(np.int64)
        np.maximum(idx, 0, out=idx)  # a timestamp before the first packet (out-of-order capture) joins bin 0
        top = int(idx.max())
        while top >= MAX_BINS:
            self._merge()
            idx //= 2
            top //= 2
        self.used = max(self.used, top + 1)
        return idx

    def _merge(self) -> None:
        self.width *= 2
        for name, (arr, reduce) in self.arrays.items():
            merged = np.zeros_like(arr)
            merged[: MAX_BINS // 2] = reduce(arr.reshape(-1, 2))
            self.arrays[name] = (merged, reduce)
        self.used = (self.used + 1) // 2

    def _array(self, name: Any, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = (np.zeros(MAX_BINS, dtype=np.int64), reduce)
        return self.arrays[name][0]

    def count(self, name: Any, ts: Iterable[float] | np.ndarray) -> None:
        ts = np.asarray(ts, dtype=np.float64)
        ts = ts[~np.isnan(ts)]
        if len(ts):
            idx = self.index(ts)  # first: it may merge, replacing the arrays
            self._array(name, _pair_sum)[:] += np.bincount(idx, minlength=MAX_BINS)

    def maximum(self, name: Any, ts: np.ndarray, values: np.ndarray) -> None:
        if len(ts):
            idx = self.index(ts)
            np.maximum.at(self._array(name, _pair_max), idx, values.astype(np.int64))

    def drop(self, name: Any) -> None:
        self.arrays.pop(name, None)

    def series(self, name: Any) -> list[int]:
        arr = self.arrays.get(name)
        return arr[0][: self.used].tolist() if arr is not None else [0] * self.used

    def active(self, starts: Any, ends: Any) -> list[int]:
        """Intervals overlapping each bin, from the histograms of their start and end bins."""
        opened = np.cumsum(self.arrays[starts][0][: self.used]) if starts in self.arrays else np.zeros(self.used)
        closed = np.cumsum(self.arrays[ends][0][: self.used]) if ends in self.arrays else np.zeros(self.used)
        return (opened - np.concatenate([[0], closed[:-1]])).astype(np.int64).tolist()

    def relative(self, ts: float) -> float:
        return round(ts - (self.t0 or 0.0), 6)


def _pair_sum(pairs: np.ndarray) -> np.ndarray:
    return pairs.sum(axis=1)


def _pair_max(pairs: np.ndarray) -> np.ndarray:
    return pairs.max(axis=1)


class _Reservoir:
    """A uniform sample (Algorithm R) of at most `cap` rows, with how many rows were offered."""

    def __init__(self, columns: tuple[str, ...], cap: int = MAX_POINTS, seed: int = 0) -> None:
        self.columns = columns
        self.cap = cap
        self.rows: list[list[Any]] = []
        self.offered = 0
        self.rng = np.random.default_rng(seed)

    def add(self, columns: dict[str, Iterable[Any]]) -> None:
        rows = [list(r) for r in zip(*(columns[c] for c in self.columns), strict=True)]
        room = max(self.cap - len(self.rows), 0)
        self.rows.extend(rows[:room])
        rest = rows[room:]
        if rest:
            seen = self.offered + room + np.arange(len(rest))
            slots = np.floor(self.rng.random(len(rest)) * (seen + 1)).astype(np.int64)
            for i in np.flatnonzero(slots < self.cap).tolist():
                self.rows[slots[i]] = rest[i]
        self.offered += len(rows)

    def to_dict(self, relative: Callable[[float], float]) -> dict[str, Any]:
        """Columns in time order (column "t", made relative), plus rows offered and rows left out."""
        t = self.columns.index("t")
        rows = sorted(self.rows, key=lambda r: r[t])
        out: dict[str, Any] = {c: [r[i] for r in rows] for i, c in enumerate(self.columns)}
        out["t"] = [relative(t) for t in out["t"]]
        return out | {"total": self.offered, "omitted": self.offered - len(rows)}


class _TopKeys:
    """Per-key series for the heaviest keys: at most MAX_KEYS tracked, the lightest evicted for a heavier one."""

    def __init__(self, bins: _Bins, kinds: tuple[str, ...]) -> None:
        self.bins = bins
        self.kinds = kinds  # the per-bin arrays each key owns
        self.totals: Counter[str] = Counter()
        self.omitted = 0

    def admit(self, key: str, weight: int) -> bool:
        """Count `weight` for `key`; False when the key is not followed (its weight goes to `omitted`)."""
        if key in self.totals or len(self.totals) < MAX_KEYS:
            self.totals[key] += weight
            return True
        lightest, low = min(self.totals.items(), key=lambda kv: kv[1])
        if weight <= low:
            self.omitted += weight
            return False
        del self.totals[lightest]
        self.omitted += low
        for kind in self.kinds:
            self.bins.drop((kind, lightest))
        self.totals[key] = weight
        return True

    def top(self, n: int) -> list[tuple[str, int]]:
        return self.totals.most_common(n)


class Timeline:
    """Accumulates the series the report's charts draw; fed by the engine batch by batch."""

    wants: tuple[str, ...] = ("arp", "broadcast", "ndp", "icmp_errors", "tcp_retransmissions", "dns", "tls", "http")

    def __init__(self) -> None:
        self.bins = _Bins()
        self.broadcast_seen: dict[int, float] = {}
        self.retransmissions = _Reservoir(("t", "size", "acked", "kind", "conn_id", "direction"), seed=1)
        self.icmp_mtu = _Reservoir(("t", "mtu", "reporter"), seed=2)
        self.largest_acked: Counter[int] = Counter()
        self.never_acked: Counter[int] = Counter()
        self.half_open = _TopKeys(self.bins, ("half_open_start", "half_open_end"))
        self.pairs: Counter[tuple[str, str, int]] = Counter()
        self.untracked_pairs = 0
        self.port_samples: dict[tuple[str, str, int], _Reservoir] = {}
        self.all_ports = _Reservoir(("t", "port"), seed=6)
        self.dns_pending: dict[tuple[str, str, int, str], float] = {}
        self.dns_rtt = _Reservoir(("t", "ms", "rcode", "qname"), seed=3)
        self.dns_rtt_hist = np.zeros(len(DNS_RTT_EDGES_MS) + 1, dtype=np.int64)
        self.dns_rcodes: Counter[str] = Counter()
        self.dns_unanswered_evicted = 0
        self.tls_pending: dict[int, dict[str, Any]] = {}
        self.tls_outcomes: Counter[str] = Counter()
        self.tls_alerts: Counter[str] = Counter()
        self.tls_sni: Counter[tuple[str, str]] = Counter()
        self.http_pending: dict[int, dict[str, Any]] = {}
        self.http_requests = _Reservoir(("t", "seconds", "complete", "segments", "host", "method", "target"),
                                        seed=4)
        self.handlers: dict[str, Callable[[pd.DataFrame], None]] = {name: getattr(self, f"_on_{name}")
                                                                    for name in self.wants}

    # -- feeding ------------------------------------------------------------------------------------------------

    def add_batch(self, pk: Packets, info: FlowInfo) -> None:
        """Per-packet figures: packets, TCP segment size and SYN / SYN-ACK rates."""
        if not len(pk):
            return
        ts = pk.ts_ns / 1e9
        self.bins.count("packets", ts)
        tcp = (pk.proto == PROTO_TCP) & (pk.malformed == 0)
        self.bins.maximum("max_segment", ts[tcp], pk.payload_len[tcp])
        flags = pk.tcp_flags & (SYN | ACK)
        self.bins.count("syn", ts[tcp & (flags == SYN)])
        self.bins.count("synack", ts[tcp & (flags == (SYN | ACK))])

    def add_stream(self, name: str, df: pd.DataFrame) -> None:
        """One event stream of one batch (names as in `wants`)."""
        if df is not None and len(df):
            self.handlers[name](df)

    def add_flows(self, records: pd.DataFrame) -> None:
        """Flow records: handshake completions, half-open spans, source ports, ACKed sizes, connection ends."""
        if records is None or not len(records):
            return
        tcp = records[records["proto"] == PROTO_TCP]
        if len(tcp):
            self.bins.count("ack3", tcp["ack3_ts"].to_numpy())
            self._half_open(tcp)
            self._source_ports(tcp)
            self._acked_sizes(tcp)
        ended = records["conn_id"].to_numpy()
        self._tls_ended(records, ended)
        self._http_ended(records, ended)

    # -- L2 -----------------------------------------------------------------------------------------------------

    def _on_arp(self, df: pd.DataFrame) -> None:
        self.bins.count("arp_request", df["ts"].to_numpy()[df["op"].to_numpy() == 1])
        self.bins.count("arp_reply", df["ts"].to_numpy()[df["op"].to_numpy() == 2])

    def _on_ndp(self, df: pd.DataFrame) -> None:
        self.bins.count("ndp_solicit", df["ts"].to_numpy()[df["type"].to_numpy() == 135])
        self.bins.count("ndp_advert", df["ts"].to_numpy()[df["type"].to_numpy() == 136])

    def _on_broadcast(self, df: pd.DataFrame) -> None:
        """Count broadcasts, and those repeating a byte-identical broadcast within DUPLICATE_WINDOW_S (a loop)."""
        ts, hashes = df["ts"].to_numpy(), df["frame_hash"].to_numpy()
        self.bins.count("broadcast", ts)
        order = np.lexsort((ts, hashes))
        ts, hashes = ts[order], hashes[order]
        same = np.r_[False, hashes[1:] == hashes[:-1]]
        previous = np.r_[np.nan, ts[:-1]]
        firsts = np.flatnonzero(~same)
        previous[firsts] = [self.broadcast_seen.get(h, np.nan) for h in hashes[firsts].tolist()]
        self.bins.count("broadcast_duplicate", ts[(ts - previous) < DUPLICATE_WINDOW_S])
        lasts = np.r_[firsts[1:] - 1, len(ts) - 1]
        for h, t in zip(hashes[lasts].tolist(), ts[lasts].tolist(), strict=True):
            self.broadcast_seen.pop(h, None)
            self.broadcast_seen[h] = t
        while len(self.broadcast_seen) > MAX_HASHES:
            self.broadcast_seen.pop(next(iter(self.broadcast_seen)))

    # -- L3 -----------------------------------------------------------------------------------------------------

    def _on_icmp_errors(self, df: pd.DataFrame) -> None:
        self.bins.count("icmp_errors", df["ts"].to_numpy())
        keys = zip(df["v6"].tolist(), df["type"].tolist(), df["code"].tolist(), strict=True)
        mtu = df[[key in ICMP_MTU_TYPES for key in keys]]
        if len(mtu):
            self.icmp_mtu.add({"t": mtu["ts"].tolist(), "mtu": mtu["mtu"].astype(int).tolist(),
                               "reporter": mtu["reporter"].tolist()})

    def _on_tcp_retransmissions(self, df: pd.DataFrame) -> None:
        df = df[df["kind"].isin(RETRANSMISSION_KINDS) & (df["payload_len"] > 0)]  # SYN retries have no size
        if len(df):
            self.retransmissions.add({
                "t": df["ts"].tolist(), "size": df["payload_len"].astype(int).tolist(),
                "acked": df["acked"].astype(bool).tolist(), "kind": df["kind"].tolist(),
                "conn_id": df["conn_id"].astype(int).tolist(), "direction": df["direction"].astype(int).tolist(),
            })

    def _acked_sizes(self, tcp: pd.DataFrame) -> None:
        """Per connection and direction: the largest ACKed segment, and the largest sent if it was never ACKed.

        A sampled retransmission also counts as ACKed once a segment at least as large was ACKed on its
        connection and direction (the stream's own flag only knows about ACKs in the same batch)."""
        largest: dict[int, np.ndarray] = {}
        for d, suffix in enumerate(("_o", "_r")):
            sent, acked = tcp[f"max_seg{suffix}"].to_numpy(), tcp[f"max_acked_seg{suffix}"].to_numpy()
            self.largest_acked.update(acked[acked > 0].tolist())
            self.never_acked.update(sent[sent > acked].tolist())
            largest[d] = acked
        rows = self.retransmissions.rows
        if not rows:
            return
        col = {c: i for i, c in enumerate(self.retransmissions.columns)}
        conns = np.fromiter((r[col["conn_id"]] for r in rows), np.int64, len(rows))
        ids = tcp["conn_id"].to_numpy()
        for i in np.flatnonzero(np.isin(conns, ids)).tolist():
            row = rows[i]
            at = int(np.flatnonzero(ids == row[col["conn_id"]])[0])
            row[col["acked"]] = bool(row[col["acked"]] or row[col["size"]] <= largest[row[col["direction"]]][at])

    # -- L4 -----------------------------------------------------------------------------------------------------

    def _half_open(self, tcp: pd.DataFrame) -> None:
        """Half-open handshakes (SYN answered, never ACKed) as spans from the SYN to the last packet."""
        for name, handshake in (("half_open", "half-open"), ("syn_only", "syn-only")):
            sel = tcp[tcp["handshake"] == handshake]
            if not len(sel):
                continue
            start = sel["syn_ts"].fillna(sel["first_ts"]).to_numpy()
            self.bins.count(f"{name}_start", start)
            self.bins.count(f"{name}_end", sel["last_ts"].to_numpy())
        sel = tcp[tcp["handshake"] == "half-open"]
        if not len(sel):
            return
        keys = [_endpoint(a, p) for a, p in zip(sel["resp"].tolist(), sel["resp_port"].tolist(), strict=True)]
        sel = sel.assign(key=keys)
        for key, group in sel.groupby("key", sort=False):
            if self.half_open.admit(str(key), len(group)):
                self.bins.count(("half_open_start", key), group["syn_ts"].fillna(group["first_ts"]).to_numpy())
                self.bins.count(("half_open_end", key), group["last_ts"].to_numpy())

    def _source_ports(self, tcp: pd.DataFrame) -> None:
        """Source ports over time: sampled over all connections, and for the busiest client -> server:port pairs.

        Pair counts are bounded: past MAX_PAIRS pairs, the lighter half is dropped and its connections counted as
        untracked (a busy pair keeps its count)."""
        self.all_ports.add({"t": tcp["first_ts"].tolist(), "port": tcp["orig_port"].astype(int).tolist()})
        self.pairs.update(tcp.groupby(list(PAIR), sort=False).size().to_dict())
        if len(self.pairs) > MAX_PAIRS:
            kept = dict(self.pairs.most_common(MAX_PAIRS // 2))
            self.untracked_pairs += self.pairs.total() - sum(kept.values())
            self.pairs = Counter(kept)
        top = [pair for pair, _ in self.pairs.most_common(SAMPLED_PAIRS)]
        for pair in set(self.port_samples) - set(top):
            del self.port_samples[pair]
        busy = tcp[pd.MultiIndex.from_frame(tcp[list(PAIR)]).isin(top)]
        for pair, group in busy.groupby(list(PAIR), sort=False):
            sample = self.port_samples.setdefault(pair, _Reservoir(("t", "port"), seed=5))
            sample.add({"t": group["first_ts"].tolist(), "port": group["orig_port"].astype(int).tolist()})

    # -- DNS ----------------------------------------------------------------------------------------------------

    def _on_dns(self, df: pd.DataFrame) -> None:
        """Match responses to the first query of the same (client, server, id, name): what the client waited."""
        responses = df["is_response"].to_numpy(dtype=bool)
        rtt: dict[str, list[Any]] = {"t": [], "ms": [], "rcode": [], "qname": []}
        pending = self.dns_pending
        for src, dst, msg_id, qname, is_resp, rcode, ts in zip(
                df["src"].tolist(), df["dst"].tolist(), df["id"].tolist(), df["qname"].tolist(), responses.tolist(),
                df["rcode_name"].tolist(), df["ts"].tolist(), strict=True):
            if not is_resp:
                pending.setdefault((src, dst, int(msg_id), qname), ts)
                if len(pending) > DNS_OUTSTANDING_CAP:
                    pending.pop(next(iter(pending)))
                    self.dns_unanswered_evicted += 1
                continue
            self.dns_rcodes[rcode] += 1
            sent = pending.pop((dst, src, int(msg_id), qname), None)
            if sent is not None:
                for column, value in zip(rtt, (sent, round((ts - sent) * 1e3, 3), rcode,
                                               _label(qname)), strict=True):
                    rtt[column].append(value)
        if rtt["t"]:
            self.dns_rtt.add(rtt)
            self.dns_rtt_hist += np.bincount(np.searchsorted(DNS_RTT_EDGES_MS, rtt["ms"], side="right"),
                                             minlength=len(self.dns_rtt_hist))

    # -- TLS ----------------------------------------------------------------------------------------------------

    def _on_tls(self, df: pd.DataFrame) -> None:
        """Per connection: the ClientHello, whether a ServerHello came, and any fatal alert (and who sent it)."""
        for conn, kind, direction, ts, sni, level, name in zip(
                df["conn_id"].tolist(), df["kind"].tolist(), df["direction"].tolist(), df["ts"].tolist(),
                df["sni"].tolist(), df["alert_level"].tolist(), df["alert_name"].tolist(), strict=True):
            state = self.tls_pending.get(conn)
            if kind == "client_hello" and state is None:
                self.tls_pending[conn] = {"t": ts, "sni": _label(sni) if isinstance(sni, str) else "",
                                          "server_hello": False, "alert": None}
            elif state is None:
                continue
            elif kind == "server_hello":
                state["server_hello"] = True
            elif kind == "alert" and level == FATAL and state["alert"] is None:
                said = name if isinstance(name, str) else "unknown"
                state["alert"] = f"{said} from {'server' if direction else 'client'}"

    def _tls_ended(self, records: pd.DataFrame, ended: np.ndarray) -> None:
        """A connection's record closes its handshake: ServerHello, fatal alert, reset or no answer."""
        done = [c for c in ended.tolist() if c in self.tls_pending]
        if not done:
            return
        reset = dict(zip(records["conn_id"].tolist(), records["history"].str.contains("[Rr]").tolist(), strict=True))
        for conn in done:
            state = self.tls_pending.pop(conn)
            outcome = _tls_outcome(state, reset[conn])
            self.tls_outcomes[outcome] += 1
            if state["alert"]:
                self.tls_alerts[state["alert"]] += 1
            if len(self.tls_sni) < MAX_SNI or (state["sni"], outcome) in self.tls_sni:
                self.tls_sni[(state["sni"], outcome)] += 1

    # -- L7 -----------------------------------------------------------------------------------------------------

    def _on_http(self, df: pd.DataFrame) -> None:
        """Header-completion time per request: from its first segment to the one that ends the header block."""
        done: dict[str, list[Any]] = {c: [] for c in self.http_requests.columns}
        for conn, kind, complete, ts, host, method, target in zip(
                df["conn_id"].tolist(), df["kind"].tolist(), df["complete"].tolist(), df["ts"].tolist(),
                df["host"].tolist(), df["method"].tolist(), df["target"].tolist(), strict=True):
            if kind == "request":
                if conn in self.http_pending:  # a new request while the previous header block was still open
                    previous = self.http_pending[conn]
                    _append(done, previous, ts - previous["t"], False)
                self.http_pending[conn] = {"t": ts, "segments": 0, "host": _label(host), "method": _label(method),
                                           "target": _label(target)}
            state = self.http_pending.get(conn)
            if state is None:
                continue
            state["segments"] += 1
            if complete:
                _append(done, self.http_pending.pop(conn), ts - state["t"], True)
        if done["t"]:
            self.http_requests.add(done)

    def _http_ended(self, records: pd.DataFrame, ended: np.ndarray) -> None:
        """A request whose header block was still open when its connection ended never completed: it waited from
        its first segment to the connection's last packet (a lower bound if the capture ended first)."""
        done: dict[str, list[Any]] = {c: [] for c in self.http_requests.columns}
        last = None
        for conn in ended.tolist():
            state = self.http_pending.pop(conn, None)
            if state is None:
                continue
            if last is None:
                last = dict(zip(records["conn_id"].tolist(), records["last_ts"].tolist(), strict=True))
            _append(done, state, last[conn] - state["t"], False)
        if done["t"]:
            self.http_requests.add(done)

    # -- output -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable series per layer (see the module docstring for the time base)."""
        b = self.bins
        rel = b.relative
        return {
            "t0": b.t0, "bin_s": b.width, "bins": b.used,
            "packets": b.series("packets"),
            "L2": {name: b.series(name) for name in
                   ("arp_request", "arp_reply", "ndp_solicit", "ndp_advert", "broadcast", "broadcast_duplicate")}
            | {"duplicate_window_s": DUPLICATE_WINDOW_S},
            "L3": {
                "max_segment": b.series("max_segment"), "icmp_errors": b.series("icmp_errors"),
                "retransmissions": _drop(self.retransmissions.to_dict(rel), "conn_id", "direction"),
                "icmp_mtu": self.icmp_mtu.to_dict(rel),
                "largest_acked": _sizes(self.largest_acked), "never_acked": _sizes(self.never_acked),
            },
            "L4": {
                "syn": b.series("syn"), "synack": b.series("synack"), "ack3": b.series("ack3"),
                "half_open_total": b.active("half_open_start", "half_open_end"),
                "syn_only_total": b.active("syn_only_start", "syn_only_end"),
                "half_open": [{"server": key, "connections": n,
                               "series": b.active(("half_open_start", key), ("half_open_end", key))}
                              for key, n in self.half_open.top(TOP_SERVERS)],
                "half_open_omitted": self.half_open.omitted
                + sum(n for _, n in self.half_open.top(MAX_KEYS)[TOP_SERVERS:]),
                "source_ports": self._ports_dict(),
            },
            "DNS": {
                "rtt": self.dns_rtt.to_dict(rel),
                "rtt_histogram": {"edges_ms": DNS_RTT_EDGES_MS.tolist(), "counts": self.dns_rtt_hist.tolist()},
                "rcodes": dict(self.dns_rcodes.most_common()),
                "unanswered": len(self.dns_pending) + self.dns_unanswered_evicted,
            },
            "TLS": {
                "outcomes": {o: self.tls_outcomes[o] for o in TLS_OUTCOMES},
                "alerts": dict(self.tls_alerts.most_common(20)),
                "by_sni": [{"sni": sni, "outcome": o, "count": n} for (sni, o), n in self.tls_sni.most_common(20)],
            },
            "L7": {"requests": self.http_requests.to_dict(rel)},
        }

    def _ports_dict(self) -> dict[str, Any]:
        everyone = {"all": self.all_ports.to_dict(self.bins.relative), "untracked": self.untracked_pairs}
        if not self.pairs:
            return everyone
        (client, server, port), connections = self.pairs.most_common(1)[0]
        sample = self.port_samples.get((client, server, port))
        return everyone | {"client": client, "server": _endpoint(server, port), "connections": connections,
                           "points": sample.to_dict(self.bins.relative) if sample else None}


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _label(text: object) -> str:
    return text[:LABEL_CHARS] if isinstance(text, str) else ""


def _sizes(counter: Counter[int]) -> dict[str, int]:
    """Segment-size counts, the most common SIZES_KEPT sizes (JSON keys are strings)."""
    return {str(size): n for size, n in sorted(counter.most_common(SIZES_KEPT))}


def _drop(points: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {k: v for k, v in points.items() if k not in columns}


def _append(points: dict[str, list[Any]], state: dict[str, Any], seconds: float, complete: bool) -> None:
    row = {"t": state["t"], "seconds": round(seconds, 6), "complete": complete, "segments": state["segments"],
           "host": state["host"], "method": state["method"], "target": state["target"]}
    for column, values in points.items():
        values.append(row[column])


def _tls_outcome(state: dict[str, Any], reset: bool) -> str:
    if state["alert"]:
        return "fatal alert"
    if state["server_hello"]:
        return "ServerHello"
    return "reset" if reset else "no answer"
