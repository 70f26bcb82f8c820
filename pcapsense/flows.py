"""The flow table: bidirectional connections rebuilt batch by batch, with Wireshark-style TCP analysis.

Per batch, packets are grouped by flow with one sort; state is gathered from and scattered back to columnar
slots (see flowstate.py); per-packet sequence analysis runs as grouped scans (see grouped.py). Python code runs
per *new* flow and per *new history letter*, never per packet.

TCP analysis follows Wireshark's `tcp.analysis` definitions (ChAdvTCPAnalysis): a segment whose sequence number
is below the next expected one is a retransmission, unless it arrives within the out-of-order window of the
segment that advanced the sequence (out-of-order) or follows two duplicate ACKs for it (fast retransmission);
a sequence number above the next expected one means the previous segment was not captured; an ACK above the
highest sequence the peer was seen sending acknowledges an unseen segment. Mirrored duplicates (the same packet,
same IP ID, again within microseconds, as a SPAN port produces) are counted as such and not as retransmissions.

Memory is bounded: idle timeouts per state and a hard cap on tracked flows (half-open ones evicted first).
Every flow leaves as a record with the reason it left; evictions are counted, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from pcapsense import grouped
from pcapsense.decode.columns import PROTO_TCP, PROTO_UDP, Packets
from pcapsense.flowindex import FlowIndex
from pcapsense.flowrecords import END_REASONS, HISTORY_LETTERS, build_records
from pcapsense.flowstate import SlotStore

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
NS = 1_000_000_000
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class FlowLimits:
    """Memory bounds of the flow table. Times are in capture (packet) time, not wall-clock time."""

    max_flows: int = 200_000  # about 1.7 KiB of state each: ~340 MB at the cap
    half_open_timeout_s: float = 64.0  # Linux drops SYN_RECV after tcp_synack_retries=5 (~63 s)
    established_timeout_s: float = 600.0  # Suricata flow-timeouts.tcp.established
    closed_timeout_s: float = 60.0  # Linux TCP_TIMEWAIT_LEN: closed tuples stay to reveal reuse inside TIME_WAIT
    udp_timeout_s: float = 60.0  # Zeek udp_inactivity_timeout
    other_timeout_s: float = 60.0  # Zeek icmp/unknown_ip_inactivity_timeout
    ooo_window_ms: float = 3.0  # Wireshark's default out-of-order RTT threshold
    mirror_window_us: float = 2000.0  # an identical packet again within this is a mirrored duplicate


@dataclass
class FlowInfo:
    """Per-packet flow annotations for the rows the table tracked (`rows` index the batch)."""

    rows: np.ndarray
    slot: np.ndarray
    conn_id: np.ndarray
    direction: np.ndarray  # 0 = from the originator
    rel_seq: np.ndarray  # TCP sequence relative to the direction's first seen sequence (SYN = 0)
    seg_len: np.ndarray
    retrans: np.ndarray
    fast_retrans: np.ndarray
    ooo: np.ndarray
    dupe: np.ndarray
    lost: np.ndarray
    ack_unseen: np.ndarray
    acked: np.ndarray  # data segment acknowledged by the end of this batch


@dataclass
class FlowStats:
    created: int = 0
    expired_idle: int = 0
    evicted_cap: int = 0
    reused_tuples: int = 0
    peak_tracked: int = 0
    untracked_packets: dict[str, int] = field(default_factory=dict)


@dataclass
class _Segments:
    """Per-row TCP facts of one batch in (flow, direction, frame) order, for the cross-direction pass."""

    slot: np.ndarray
    direction: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    seq_end: np.ndarray  # unwrapped end of the segment's sequence range
    raw0: np.ndarray  # raw sequence number at unwrapped position 0 of the row's direction
    run: np.ndarray  # consecutive duplicate ACKs ending at this row
    behind: np.ndarray  # below the next expected sequence (retransmission-like)
    ooo: np.ndarray
    has_ack: np.ndarray

    def reorder(self, order: np.ndarray) -> _Segments:
        return _Segments(*(getattr(self, f.name)[order] for f in fields(self)))


@dataclass
class _BatchOrder:
    """The sort orders a batch needs, computed once: rows by (slot, frame) and by (slot, direction, frame)."""

    by_slot: np.ndarray
    slot_starts: np.ndarray
    slots: np.ndarray
    by_key2: np.ndarray

    @classmethod
    def build(cls, slot: np.ndarray, direction: np.ndarray) -> _BatchOrder:
        by_slot = np.argsort(slot, kind="stable")
        sorted_slots = slot[by_slot]
        starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        by_key2 = by_slot[np.argsort(direction[by_slot], kind="stable")]
        by_key2 = by_key2[np.argsort(slot[by_key2], kind="stable")]
        return cls(by_slot, starts, sorted_slots[starts], by_key2)

    def first_where(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots, row of their first row in frame order where mask holds), without sorting."""
        n = len(self.by_slot)
        candidate = np.where(mask[self.by_slot], np.arange(n), n)
        firsts = np.minimum.reduceat(candidate, self.slot_starts)
        hit = firsts < n
        return self.slots[hit], self.by_slot[firsts[hit]]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash step."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class FlowTable:
    """Tracks connections across batches and emits flow records as they close, expire or are evicted."""

    def __init__(self, limits: FlowLimits | None = None) -> None:
        self.limits = limits or FlowLimits()
        self.store = SlotStore()
        self.index = FlowIndex()
        self.history: dict[int, str] = {}
        self.stats = FlowStats()
        self._next_conn = 1
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (slots, reason codes) to emit
        self._emitted: list[pd.DataFrame] = []  # records of flows evicted mid-batch to make room
        self._superseded: list[int] = []  # slots replaced by a new connection on the same tuple
        self.now_ns = 0

    # -- public ---------------------------------------------------------------------------------------------

    def update(self, pk: Packets) -> FlowInfo:
        """Account one decoded batch; returns per-packet annotations for the tracked rows."""
        rows = np.flatnonzero((pk.ipver > 0) & (pk.malformed == 0) & ~pk.later_fragment & (pk.proto >= 0))
        later = int(np.count_nonzero(pk.later_fragment))
        if later:
            self.stats.untracked_packets["ip-fragment-continuation"] = (
                self.stats.untracked_packets.get("ip-fragment-continuation", 0) + later
            )
        if len(pk.ts_ns):
            self.now_ns = max(self.now_ns, int(pk.ts_ns.max()))
        info = self._track(pk, rows)
        self.stats.peak_tracked = max(self.stats.peak_tracked, self.store.in_use)
        return info

    def expire(self) -> pd.DataFrame | None:
        """Emit flows idle past their state's timeout, plus flows superseded or evicted during the batch."""
        s = self.store
        slots = np.flatnonzero(s.active)
        if len(slots):
            idle = slots[(self.now_ns - s["last_ns"][slots]) > self._timeouts(slots)]
            if len(idle):
                self.stats.expired_idle += len(idle)
                self._pending.append((idle, np.full(len(idle), END_REASONS.index("idle-timeout"))))
        return self._flush()

    def drain(self) -> pd.DataFrame | None:
        """End of capture: every remaining flow becomes a record."""
        slots = np.flatnonzero(self.store.active)
        if self._pending:
            slots = np.setdiff1d(slots, np.concatenate([p for p, _ in self._pending]))
        if len(slots):
            self._pending.append((slots, np.full(len(slots), END_REASONS.index("end-of-capture"))))
        return self._flush()

    # -- slot assignment ------------------------------------------------------------------------------------

    def _track(self, pk: Packets, rows: np.ndarray) -> FlowInfo:
        n = len(rows)
        if not n:
            empty = np.zeros(0, dtype=np.int64)
            return FlowInfo(rows, empty, empty, empty, empty, empty, *(np.zeros(0, bool) for _ in range(7)))
        proto = pk.proto[rows]
        s_hi, s_lo, d_hi, d_lo = pk.src_hi[rows], pk.src_lo[rows], pk.dst_hi[rows], pk.dst_lo[rows]
        has_ports = (proto == PROTO_TCP) | (proto == PROTO_UDP)
        sp = np.where(has_ports, pk.sport[rows], 0)
        dp = np.where(has_ports, pk.dport[rows], 0)
        src_is_a = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
        a_hi, a_lo, a_p = np.where(src_is_a, s_hi, d_hi), np.where(src_is_a, s_lo, d_lo), np.where(src_is_a, sp, dp)
        b_hi, b_lo, b_p = np.where(src_is_a, d_hi, s_hi), np.where(src_is_a, d_lo, s_lo), np.where(src_is_a, dp, sp)
        key_cols = (proto, a_hi, a_lo, a_p, b_hi, b_lo, b_p)
        first_idx, inv, hashes = self._group(key_cols)
        slots_u, exact = self._lookup(key_cols, first_idx, hashes)
        new_u = np.flatnonzero(slots_u < 0)
        if len(new_u):
            self._make_room(len(new_u), protect=slots_u[slots_u >= 0])
            slots_u[new_u] = self._open(pk, rows, first_idx[new_u], src_is_a)
            self._register(slots_u[new_u], hashes[new_u], exact[new_u], key_cols, first_idx[new_u])
        slot = slots_u[inv]
        direction = (src_is_a != self.store["orig_is_a"][slot]).astype(np.int64)
        tcp = np.flatnonzero(proto == PROTO_TCP)
        if len(tcp):
            self._split_reused(pk, rows, tcp, slot, direction, src_is_a)
        order = _BatchOrder.build(slot, direction)
        self._account(pk, rows, slot, direction, order)
        info = self._tcp_analysis(pk, rows, proto == PROTO_TCP, slot, direction, order)
        self._histories(pk, rows, slot, direction, info, order)
        return info

    @staticmethod
    def _group(key_cols: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Group rows by exact key: hash to 64 bits, then verify and fall back to an exact sort on collision.
        Returns each group's first row, each row's group, and each group's hash."""
        h = np.zeros(len(key_cols[0]), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for col in key_cols:
                h = _mix(h ^ (col.astype(np.uint64) & _MASK64))
        uniq, first_idx, inv = np.unique(h, return_index=True, return_inverse=True)
        rep = first_idx[inv]
        if all(np.array_equal(col, col[rep]) for col in key_cols):
            return first_idx, inv, uniq
        exact = np.rec.fromarrays([c.astype(np.int64) if c.dtype != np.uint64 else c for c in key_cols])
        _, first_idx, inv = np.unique(exact, return_index=True, return_inverse=True)
        return first_idx, inv, h[first_idx]

    def _key_matches(self, slots: np.ndarray, key_cols: tuple[np.ndarray, ...], rows: np.ndarray) -> np.ndarray:
        """Whether each slot's stored flow has exactly the key of the given rows (guards against hash collisions)."""
        s = self.store
        oa = s["orig_is_a"][slots]
        stored = (s["proto"][slots],
                  np.where(oa, s["orig_hi"][slots], s["resp_hi"][slots]),
                  np.where(oa, s["orig_lo"][slots], s["resp_lo"][slots]),
                  np.where(oa, s["orig_port"][slots], s["resp_port"][slots]),
                  np.where(oa, s["resp_hi"][slots], s["orig_hi"][slots]),
                  np.where(oa, s["resp_lo"][slots], s["orig_lo"][slots]),
                  np.where(oa, s["resp_port"][slots], s["orig_port"][slots]))
        match = np.ones(len(slots), dtype=bool)
        for have, want in zip(stored, key_cols, strict=True):
            match &= have == want[rows]
        return match

    def _lookup(self, key_cols: tuple[np.ndarray, ...], first_idx: np.ndarray,
                hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the batch's flows (-1 for new ones), and which groups must be kept by exact key."""
        slots = self.index.lookup(hashes)
        found = np.flatnonzero(slots >= 0)
        exact = np.zeros(len(hashes), dtype=bool)
        mismatch = found[~self._key_matches(slots[found], key_cols, first_idx[found])]
        exact[mismatch] = True
        _, counts = np.unique(hashes, return_counts=True)
        if (counts > 1).any():  # two different keys of this batch share a hash
            dup = np.isin(hashes, np.unique(hashes)[counts > 1])
            exact |= dup
        if self.index.overflow:
            exact |= np.isin(hashes, self.store["key_hash"][list(self.index.overflow.values())])
        for u in np.flatnonzero(exact).tolist():
            slots[u] = self.index.overflow.get(self._exact_key(key_cols, int(first_idx[u])), -1)
        return slots, exact

    @staticmethod
    def _exact_key(key_cols: tuple[np.ndarray, ...], row: int) -> tuple[int, ...]:
        return tuple(int(col[row]) for col in key_cols)

    def _register(self, slots: np.ndarray, hashes: np.ndarray, exact: np.ndarray,
                  key_cols: tuple[np.ndarray, ...], rows: np.ndarray) -> None:
        self.store["key_hash"][slots] = hashes
        exact = exact | self.index.contains(hashes)
        self.store["in_overflow"][slots] = exact
        self.index.add(hashes[~exact], slots[~exact])
        for slot, row in zip(slots[exact].tolist(), rows[exact].tolist(), strict=True):
            self.index.overflow[self._exact_key(key_cols, row)] = slot

    def _stored_key(self, slot: int) -> tuple[int, ...]:
        s = self.store
        orig = (int(s["orig_hi"][slot]), int(s["orig_lo"][slot]), int(s["orig_port"][slot]))
        resp = (int(s["resp_hi"][slot]), int(s["resp_lo"][slot]), int(s["resp_port"][slot]))
        a, b = (orig, resp) if s["orig_is_a"][slot] else (resp, orig)
        return (int(s["proto"][slot]), *a, *b)

    def _unregister(self, slots: np.ndarray) -> None:
        s = self.store
        over = s["in_overflow"][slots]
        self.index.discard(s["key_hash"][slots[~over]], slots[~over])
        for slot in slots[over].tolist():
            key = self._stored_key(slot)
            if self.index.overflow.get(key) == slot:
                del self.index.overflow[key]

    def _open(self, pk: Packets, rows: np.ndarray, first_rows: np.ndarray, src_is_a: np.ndarray) -> np.ndarray:
        """Allocate slots for new flows; the originator is the sender of the first packet, except that a
        SYN-ACK or a reply from a well-known port reveals the other side as originator (Zeek's flip)."""
        s = self.store
        slots = s.allocate(len(first_rows))
        r = rows[first_rows]
        flags = pk.tcp_flags[r]
        tcp = pk.proto[r] == PROTO_TCP
        synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
        from_service = ~(tcp & ((flags & SYN) != 0)) & (pk.sport[r] < 1024) & (pk.dport[r] >= 1024)
        flip = synack | from_service
        orig_is_src = ~flip
        s["orig_is_a"][slots] = src_is_a[first_rows] == orig_is_src
        s["proto"][slots] = pk.proto[r]
        s["orig_hi"][slots] = np.where(orig_is_src, pk.src_hi[r], pk.dst_hi[r])
        s["orig_lo"][slots] = np.where(orig_is_src, pk.src_lo[r], pk.dst_lo[r])
        s["resp_hi"][slots] = np.where(orig_is_src, pk.dst_hi[r], pk.src_hi[r])
        s["resp_lo"][slots] = np.where(orig_is_src, pk.dst_lo[r], pk.src_lo[r])
        ports = (pk.proto[r] == PROTO_TCP) | (pk.proto[r] == PROTO_UDP)
        s["orig_port"][slots] = np.where(ports, np.where(orig_is_src, pk.sport[r], pk.dport[r]), 0)
        s["resp_port"][slots] = np.where(ports, np.where(orig_is_src, pk.dport[r], pk.sport[r]), 0)
        s["first_ns"][slots] = pk.ts_ns[r]
        s["first_frame"][slots] = pk.frame[r]
        ids = np.arange(self._next_conn, self._next_conn + len(slots))
        self._next_conn += len(slots)
        s["conn_id"][slots] = ids
        self.history.update(dict.fromkeys(slots.tolist(), ""))
        self.stats.created += len(slots)
        return slots

    def _make_room(self, incoming: int, protect: np.ndarray) -> None:
        """Evict flows when the cap would be exceeded: half-open and unanswered attempts first, oldest first."""
        s, cap = self.store, self.limits.max_flows
        pending = sum(len(p) for p, _ in self._pending)
        excess = s.in_use - pending + incoming - cap
        if excess <= 0:
            return
        excess += max(cap // 10, 1)  # headroom so that a flood does not evict on every batch
        busy = np.concatenate([protect, *(p for p, _ in self._pending)])
        active = np.setdiff1d(np.flatnonzero(s.active), busy)
        tcp = s["proto"][active] == PROTO_TCP
        established = np.where(tcp, s["ack3_frame"][active] >= 0, s["pkts"][active, 1] > 0)
        order = np.lexsort((s["last_ns"][active], established))
        victims = active[order[: min(excess, len(active))]]
        self.stats.evicted_cap += len(victims)
        self._pending.append((victims, np.full(len(victims), END_REASONS.index("evicted-flow-cap"))))
        # flushing now frees the slots for the new flows; the records wait in _emitted for the engine
        self._emitted.append(self._records_for_pending())

    def _split_reused(self, pk: Packets, rows: np.ndarray, tcp: np.ndarray, slot: np.ndarray,
                      direction: np.ndarray, src_is_a: np.ndarray) -> None:
        """A SYN with a new initial sequence number on a known 4-tuple starts a new connection (port reuse).

        Rows of the new connection move to a fresh slot; the old one is emitted as superseded. The new record
        keeps how long after the previous connection's last packet it came and whether that one had closed.
        """
        s = self.store
        order = tcp[np.argsort(slot[tcp], kind="stable")]
        r = rows[order]
        flags, seq = pk.tcp_flags[r], pk.seq[r]
        syn_only = (flags & (SYN | ACK)) == SYN
        if not syn_only.any():
            return
        first, _gid = grouped.group_index(slot[order])
        last_syn = grouped.last_index_where(syn_only, first)
        prev_syn = grouped.previous(last_syn, first, np.full(len(order), -1))
        prev_seq = np.where(prev_syn >= 0, seq[np.maximum(prev_syn, 0)], s["last_syn_seq"][slot[order]])
        boundary = syn_only & (prev_seq >= 0) & (seq != prev_seq)
        bpos = np.flatnonzero(boundary).tolist()
        group_end = np.r_[np.flatnonzero(first[1:] != first[:-1]) + 1, len(order)]
        end_of = group_end[np.searchsorted(group_end, np.arange(len(order)), side="right")]
        for i, b in enumerate(bpos):
            g_first = int(first[b])
            chained = i > 0 and int(first[bpos[i - 1]]) == g_first
            prev_start = bpos[i - 1] if chained else g_first
            stop = bpos[i + 1] if i + 1 < len(bpos) and int(first[bpos[i + 1]]) == g_first else int(end_of[b])
            old = int(slot[order[b - 1]]) if b > g_first else int(slot[order[b]])
            new = int(s.allocate(1)[0])
            self._copy_identity(old, new)
            members = order[b:stop]
            slot[members] = new
            s["orig_is_a"][new] = bool(src_is_a[order[b]])  # the SYN's sender originates the new connection
            direction[members] = (src_is_a[members] != s["orig_is_a"][new]).astype(np.int64)
            prev_rows = rows[order[prev_start:b]]
            prev_last_ns = int(pk.ts_ns[prev_rows[-1]]) if len(prev_rows) else int(s["last_ns"][old])
            prev_flags = int(np.bitwise_or.reduce(pk.tcp_flags[prev_rows])) if len(prev_rows) else 0
            prev_flags |= int(s["flags_or"][old, 0] | s["flags_or"][old, 1])
            boundary_row = r[b]
            s["reuse_gap_ns"][new] = int(pk.ts_ns[boundary_row]) - prev_last_ns
            # how the previous connection on this tuple ended: 2 reset (no TIME_WAIT), 1 FIN close, 0 still open
            s["prev_closed"][new] = 2 if prev_flags & RST else int(bool(prev_flags & FIN))
            s["first_ns"][new] = pk.ts_ns[boundary_row]
            s["first_frame"][new] = pk.frame[boundary_row]
            self._supersede(old, new)
        self._remember_syn(order, syn_only, seq, slot)

    def _remember_syn(self, order: np.ndarray, syn_only: np.ndarray, seq: np.ndarray, slot: np.ndarray) -> None:
        idx = np.flatnonzero(syn_only)
        self.store["last_syn_seq"][slot[order[idx]]] = seq[idx]

    def _copy_identity(self, old: int, new: int) -> None:
        s = self.store
        for name in ("proto", "orig_hi", "orig_lo", "orig_port", "resp_hi", "resp_lo", "resp_port"):
            s[name][new] = s[name][old]
        s["conn_id"][new] = self._next_conn
        self._next_conn += 1
        self.stats.created += 1
        self.stats.reused_tuples += 1

    def _supersede(self, old: int, new: int) -> None:
        s = self.store
        if s["orig_is_a"][new] != s["orig_is_a"][old]:
            for a, b in (("orig_hi", "resp_hi"), ("orig_lo", "resp_lo"), ("orig_port", "resp_port")):
                s[a][new], s[b][new] = s[b][old], s[a][old]
        s["key_hash"][new] = s["key_hash"][old]
        s["in_overflow"][new] = s["in_overflow"][old]
        if s["in_overflow"][old]:
            self.index.overflow[self._stored_key(old)] = new
        else:
            self.index.assign(s["key_hash"][[old]], np.array([new]))
        self.history[new] = ""
        self._superseded.append(old)

    # -- accounting -----------------------------------------------------------------------------------------

    def _account(self, pk: Packets, rows: np.ndarray, slot: np.ndarray, direction: np.ndarray,
                 batch_order: _BatchOrder) -> None:
        """Counters, first/last times, TTL/MAC/interface per direction, handshake frames."""
        s = self.store
        key2 = slot * 2 + direction
        order = batch_order.by_key2
        k = key2[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        gk = k[starts]
        gs, gd = gk // 2, gk % 2
        r = rows[order]
        new_dir = s["pkts"][gs, gd] == 0
        s["pkts"][gs, gd] += np.diff(np.r_[starts, len(k)])
        s["bytes"][gs, gd] += np.add.reduceat(pk.ip_len[r], starts)
        s["payload"][gs, gd] += np.add.reduceat(pk.payload_len[r], starts)
        s["flags_or"][gs, gd] |= np.bitwise_or.reduceat(pk.tcp_flags[r], starts)
        ttl = pk.ttl[r]
        s["ttl_min"][gs, gd] = np.minimum(s["ttl_min"][gs, gd], np.minimum.reduceat(ttl, starts))
        s["ttl_max"][gs, gd] = np.maximum(s["ttl_max"][gs, gd], np.maximum.reduceat(ttl, starts))
        s["max_ip_len"][gs, gd] = np.maximum(s["max_ip_len"][gs, gd], np.maximum.reduceat(pk.ip_len[r], starts))
        mac = pk.src_mac[r]
        iface_bits = np.left_shift(1, np.minimum(pk.iface[r], 62))
        s["iface_mask"][gs, gd] |= np.bitwise_or.reduceat(iface_bits, starts)
        first_new = starts[new_dir]
        s["ttl_first"][gs[new_dir], gd[new_dir]] = ttl[first_new]
        s["mac_first"][gs[new_dir], gd[new_dir]] = mac[first_new]
        s["iface_first"][gs[new_dir], gd[new_dir]] = pk.iface[r][first_new]
        ref_mac = s["mac_first"][k // 2, k % 2]
        varies = np.bitwise_or.reduceat((mac != ref_mac).astype(np.int64), starts) > 0
        s["mac_varies"][gs, gd] |= varies
        # per flow (both directions)
        sstarts, us = batch_order.slot_starts, batch_order.slots
        rs = rows[batch_order.by_slot]
        s["last_ns"][us] = np.maximum(s["last_ns"][us], np.maximum.reduceat(pk.ts_ns[rs], sstarts))
        s["last_frame"][us] = np.maximum(s["last_frame"][us], np.maximum.reduceat(pk.frame[rs], sstarts))
        self._handshake_frames(pk, rows, slot, direction, batch_order)

    def _handshake_frames(self, pk: Packets, rows: np.ndarray, slot: np.ndarray, direction: np.ndarray,
                          batch_order: _BatchOrder) -> None:
        s = self.store
        flags = pk.tcp_flags[rows]
        tcp = pk.proto[rows] == PROTO_TCP
        syn = tcp & ((flags & (SYN | ACK)) == SYN)
        synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
        for mask, frame_col, ns_col, count_col in ((syn & (direction == 0), "syn_frame", "syn_ns", "syn_count"),
                                                   (synack & (direction == 1), "synack_frame", "synack_ns",
                                                    "synack_count")):
            np.add.at(s[count_col], slot[mask], 1)
            us, first = batch_order.first_where(mask)
            unset = s[frame_col][us] < 0
            s[frame_col][us[unset]] = pk.frame[rows[first[unset]]]
            s[ns_col][us[unset]] = pk.ts_ns[rows[first[unset]]]
        completing = tcp & (direction == 0) & ((flags & ACK) != 0) & ((flags & (SYN | RST)) == 0)
        completing &= (s["synack_frame"][slot] >= 0) & (pk.frame[rows] > s["synack_frame"][slot])
        us, first = batch_order.first_where(completing)
        unset = s["ack3_frame"][us] < 0
        s["ack3_frame"][us[unset]] = pk.frame[rows[first[unset]]]
        s["ack3_ns"][us[unset]] = pk.ts_ns[rows[first[unset]]]
        rst = tcp & ((flags & RST) != 0)
        us, first = batch_order.first_where(rst)
        unset = s["rst_frame"][us] < 0
        s["rst_frame"][us[unset]] = pk.frame[rows[first[unset]]]
        s["rst_ns"][us[unset]] = pk.ts_ns[rows[first[unset]]]
        s["rst_dir"][us[unset]] = direction[first[unset]]
        s["rst_ttl"][us[unset]] = pk.ttl[rows[first[unset]]]
        fin = tcp & ((flags & FIN) != 0)
        us, first = batch_order.first_where(fin)
        unset = s["fin_first_dir"][us] < 0
        s["fin_first_dir"][us[unset]] = direction[first[unset]]
        s["fin_frame"][us[unset]] = pk.frame[rows[first[unset]]]
        s["fin_ns"][us[unset]] = pk.ts_ns[rows[first[unset]]]
        both_fin = ((s["flags_or"][:, 0] & FIN) != 0) & ((s["flags_or"][:, 1] & FIN) != 0)
        closing = np.unique(slot[fin | rst])
        done = closing[(s["closed_ns"][closing] < 0) & (both_fin[closing] | (s["rst_frame"][closing] >= 0))]
        s["closed_ns"][done] = s["last_ns"][done]

    # -- TCP sequence analysis --------------------------------------------------------------------------------

    def _tcp_analysis(self, pk: Packets, rows: np.ndarray, is_tcp: np.ndarray, slot: np.ndarray,
                      direction: np.ndarray, batch_order: _BatchOrder) -> FlowInfo:
        s = self.store
        n = len(rows)
        out = {name: np.zeros(n, dtype=bool) for name in ("retrans", "fast_retrans", "ooo", "dupe", "lost",
                                                          "ack_unseen", "acked")}
        rel_seq = np.zeros(n, dtype=np.int64)
        seg_len_all = np.zeros(n, dtype=np.int64)
        if is_tcp.any():
            order = batch_order.by_key2[is_tcp[batch_order.by_key2]]
            # the same TCP rows in (slot, frame) order, as positions into `order`
            position = np.empty(len(rows), dtype=np.int64)
            position[order] = np.arange(len(order))
            by_frame = position[batch_order.by_slot[is_tcp[batch_order.by_slot]]]
            self._sequence(pk, rows, order, by_frame, slot, direction, out, rel_seq, seg_len_all)
        return FlowInfo(rows, slot, s["conn_id"][slot], direction, rel_seq, seg_len_all, **out)

    def _sequence(self, pk: Packets, rows: np.ndarray, order: np.ndarray, by_frame: np.ndarray, slot: np.ndarray,
                  direction: np.ndarray, out: dict[str, np.ndarray], rel_seq: np.ndarray,
                  seg_len_all: np.ndarray) -> None:
        s, lim = self.store, self.limits
        r = rows[order]
        sl, d = slot[order], direction[order]
        first, gid = grouped.group_index(sl * 2 + d)
        is_first = first == np.arange(len(order))
        flags, seq, ack = pk.tcp_flags[r], pk.seq[r], pk.ack[r]
        ts = pk.ts_ns[r]
        have = s["have_seq"][sl, d]
        # unwrap 32-bit sequence numbers against the previous packet of the same direction
        prev_raw = grouped.previous(seq, first, s["last_raw"][sl, d])
        delta = ((seq - prev_raw + 2**31) % 2**32) - 2**31
        delta[is_first & ~have] = 0
        base = np.where(have, s["last_useq"][sl, d], 0)
        useq = base[first] + grouped.cumsum(delta, first)
        raw0 = np.where(have, s["raw0"][sl, d], seq[first])
        seg_len = pk.payload_len[r] + ((flags & SYN) != 0) + ((flags & FIN) != 0)
        seq_end = useq + seg_len
        carry_next = s["nextseq"][sl, d]
        incl = np.maximum(grouped.cummax(seq_end, gid), carry_next)
        next_before = grouped.previous(incl, first, carry_next)
        known = next_before > grouped.NEG
        # mirrored duplicate: same packet signature again within microseconds
        sig = (seq * 1_000_003 + ack * 7919 + pk.ip_id[r] * 31 + flags) ^ (pk.payload_len[r] << 40)
        prev_sig = grouped.previous(sig, first, s["last_sig"][sl, d])
        prev_ts = grouped.previous(ts, first, s["last_dir_ns"][sl, d])
        dupe = (sig == prev_sig) & ((ts - prev_ts) <= lim.mirror_window_us * 1000)
        keepalive = (seg_len <= 1) & (useq == next_before - 1) & ((flags & (SYN | FIN | RST)) == 0)
        behind = known & (seg_len > 0) & (useq < next_before) & ~keepalive & ~dupe
        advanced = seq_end > next_before
        adv_idx = grouped.last_index_where(advanced & ~dupe, first)
        prev_adv = grouped.previous(adv_idx, first, np.full(len(order), -1))
        last_adv_ns = np.where(prev_adv >= 0, ts[np.maximum(prev_adv, 0)], s["last_adv_ns"][sl, d])
        ooo = behind & ((ts - last_adv_ns) < lim.ooo_window_ms * 1e6)
        # duplicate ACKs (pure ACK, same ack and window as the previous packet of this direction)
        win = pk.win[r]
        pure_ack = ((flags & ACK) != 0) & (seg_len == 0) & ((flags & (SYN | FIN | RST)) == 0)
        prev_ack = grouped.previous(ack, first, s["last_ack_raw"][sl, d])
        prev_win = grouped.previous(win, first, s["last_win"][sl, d])
        dupack = pure_ack & (ack == prev_ack) & (win == prev_win) & ~dupe
        # run length of consecutive dup ACKs, continuing the carried run
        not_dup_idx = grouped.last_index_where(~dupack, first)
        run = np.where(not_dup_idx >= 0, np.arange(len(order)) - not_dup_idx,
                       np.arange(len(order)) - first + 1 + s["dupack_run"][sl, d])
        run = np.where(dupack, run, 0)
        has_ack = ((flags & ACK) != 0) & ((flags & RST) == 0)
        segs = _Segments(sl, d, seq, ack, flags, seq_end, raw0, run, behind, ooo, has_ack)
        self._cross_direction(order, by_frame, segs, out)
        lost = known & (useq > next_before) & ((flags & RST) == 0)
        out["retrans"][order] = behind & ~ooo & ~out["fast_retrans"][order]
        out["ooo"][order] = ooo
        out["dupe"][order] = dupe
        out["lost"][order] = lost
        rel_seq[order] = useq
        seg_len_all[order] = seg_len
        # scatter per-direction results
        last = np.flatnonzero(np.r_[first[1:] != first[:-1], True])
        gs, gd = sl[last], d[last]
        s["have_seq"][gs, gd] = True
        s["raw0"][gs, gd] = raw0[last]
        s["last_raw"][gs, gd] = seq[last]
        s["last_useq"][gs, gd] = useq[last]
        s["nextseq"][gs, gd] = incl[last]
        s["last_ack_raw"][gs, gd] = ack[last]
        s["last_win"][gs, gd] = win[last]
        s["dupack_run"][gs, gd] = run[last]
        s["last_sig"][gs, gd] = sig[last]
        s["last_dir_ns"][gs, gd] = ts[last]
        adv_last = adv_idx[last]
        s["last_adv_ns"][gs, gd] = np.where(adv_last >= 0, ts[np.maximum(adv_last, 0)], s["last_adv_ns"][gs, gd])
        starts = first[last]
        for name, values in (("retrans", out["retrans"][order]), ("fast_retrans", out["fast_retrans"][order]),
                             ("ooo", ooo), ("dupes", dupe), ("lost", lost), ("dupacks", dupack),
                             ("ack_unseen", out["ack_unseen"][order]),
                             ("zero_win", (win == 0) & ((flags & (SYN | RST)) == 0))):
            s[name][gs, gd] += np.add.reduceat(values.astype(np.int64), starts)
        s["max_seg"][gs, gd] = np.maximum(s["max_seg"][gs, gd], np.maximum.reduceat(pk.payload_len[r], starts))
        syn_row = (flags & SYN) != 0
        mss, wscale = pk.mss[r], pk.wscale[r]
        for name, values in (("mss", mss), ("wscale", wscale)):
            val = np.maximum.reduceat(np.where(syn_row, values, -1), starts)
            s[name][gs, gd] = np.where(val >= 0, val, s[name][gs, gd])
        synack = (flags & (SYN | ACK)) == (SYN | ACK)
        syn_only = (flags & (SYN | ACK)) == SYN
        np.add.at(s["syn_retrans"], sl[syn_only & behind], 1)
        np.add.at(s["synack_retrans"], sl[synack & behind], 1)
        # data acknowledged by the end of the batch: the largest such segment per direction
        acked = (seg_len > 0) & (seq_end <= s["max_uack"][sl, 1 - d])
        out["acked"][order] = acked
        s["max_acked_seg"][gs, gd] = np.maximum(
            s["max_acked_seg"][gs, gd], np.maximum.reduceat(np.where(acked, pk.payload_len[r], 0), starts)
        )

    def _cross_direction(self, order: np.ndarray, by_frame: np.ndarray, segs: _Segments,
                         out: dict[str, np.ndarray]) -> None:
        """Facts that need the other direction in frame order: fast retransmissions, ACKs of unseen data,
        and the highest ACK each direction sent (which decides what counts as acknowledged). The peer's state
        carried from earlier batches is combined with the peer's rows of this batch."""
        s = self.store
        f = segs.reorder(by_frame)
        fsl, fd = f.slot, f.direction
        first_f, gid_f = grouped.group_index(fsl)
        # latest row of each direction at or before each row (in frame order within the flow)
        latest = [grouped.last_index_where(fd == x, first_f) for x in (0, 1)]
        peer_latest = np.where(fd == 0, latest[1], latest[0])
        prev_peer = np.where(peer_latest >= 0, peer_latest, -1)
        # the peer's highest sequence end up to now: carried value, raised by batch rows of the peer
        peer_incl = [np.maximum(grouped.cummax(np.where(fd == x, f.seq_end, grouped.NEG), gid_f),
                                s["nextseq"][fsl, x]) for x in (0, 1)]
        peer_high = np.where(fd == 0, peer_incl[1], peer_incl[0])
        at_peer = np.maximum(prev_peer, 0)
        peer_raw0 = np.where(prev_peer >= 0, f.raw0[at_peer], s["raw0"][fsl, 1 - fd])
        peer_known = (peer_high > grouped.NEG) & ((prev_peer >= 0) | s["have_seq"][fsl, 1 - fd])
        # this packet's ACK unwrapped into the peer's sequence space
        ref = np.where(peer_known, peer_high, 0)
        uack = ref + (((f.ack - (peer_raw0 + ref)) + 2**31) % 2**32) - 2**31
        out["ack_unseen"][order[by_frame]] = f.has_ack & peer_known & (uack > peer_high)
        no_peer = f.has_ack & ~peer_known & ((f.flags & SYN) == 0)
        np.add.at(s["ack_no_peer"], (fsl[no_peer], fd[no_peer]), 1)
        # fast retransmission: the peer's latest packet is a duplicate ACK (2nd or later) for this sequence
        peer_run = np.where(prev_peer >= 0, f.run[at_peer], s["dupack_run"][fsl, 1 - fd])
        peer_ack = np.where(prev_peer >= 0, f.ack[at_peer], s["last_ack_raw"][fsl, 1 - fd])
        out["fast_retrans"][order[by_frame]] = f.behind & ~f.ooo & (peer_run >= 2) & (peer_ack == f.seq)
        # highest ACK per direction (in the peer's space), for "acknowledged" decisions
        valid = f.has_ack & peer_known
        if valid.any():
            key = fsl[valid] * 2 + fd[valid]
            np.maximum.at(s["max_uack"].reshape(-1), key, uack[valid])

    # -- history ----------------------------------------------------------------------------------------------

    def _histories(self, pk: Packets, rows: np.ndarray, slot: np.ndarray, direction: np.ndarray,
                   info: FlowInfo, batch_order: _BatchOrder) -> None:
        """Append Zeek history letters the first time each (flow, letter, direction) occurs, in frame order."""
        s = self.store
        flags = pk.tcp_flags[rows]
        tcp = pk.proto[rows] == PROTO_TCP
        payload = pk.payload_len[rows] > 0
        letters = {
            "S": tcp & ((flags & (SYN | ACK)) == SYN),
            "H": tcp & ((flags & (SYN | ACK)) == (SYN | ACK)),
            "A": tcp & ((flags & ACK) != 0) & ~payload & ((flags & (SYN | FIN | RST)) == 0),
            "D": payload,
            "F": tcp & ((flags & FIN) != 0),
            "R": tcp & ((flags & RST) != 0),
            "T": info.retrans | info.fast_retrans,
            "G": info.lost,
            "W": tcp & (pk.win[rows] == 0) & ((flags & (SYN | RST)) == 0),
        }
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for bit, letter in enumerate(HISTORY_LETTERS):
            mask = letters.get(letter)
            if mask is None:
                continue
            for dir_value in (0, 1):
                sel = mask & (direction == dir_value)
                if not sel.any():
                    continue
                us, first = batch_order.first_where(sel)
                bitval = 1 << (bit * 2 + dir_value)
                new = (s["hist_mask"][us] & bitval) == 0
                if new.any():
                    s["hist_mask"][us[new]] |= bitval
                    code = np.full(new.sum(), bit * 2 + dir_value)
                    found.append((us[new], pk.frame[rows[first[new]]], code))
        if not found:
            return
        us = np.concatenate([f[0] for f in found])
        frames = np.concatenate([f[1] for f in found])
        codes = np.concatenate([f[2] for f in found])
        order = np.lexsort((codes, frames))
        for slot_id, code in zip(us[order].tolist(), codes[order].tolist(), strict=True):
            letter = HISTORY_LETTERS[code // 2]
            self.history[slot_id] += letter if code % 2 == 0 else letter.lower()

    # -- emission -------------------------------------------------------------------------------------------

    def _timeouts(self, slots: np.ndarray) -> np.ndarray:
        s, lim = self.store, self.limits
        proto = s["proto"][slots]
        closed = s["closed_ns"][slots] >= 0
        established = s["ack3_frame"][slots] >= 0
        tcp = proto == PROTO_TCP
        seconds = np.where(
            tcp,
            np.where(closed, lim.closed_timeout_s,
                     np.where(established | (s["syn_frame"][slots] < 0), lim.established_timeout_s,
                              lim.half_open_timeout_s)),
            np.where(proto == PROTO_UDP, lim.udp_timeout_s, lim.other_timeout_s),
        )
        return (seconds * NS).astype(np.int64)

    def _records_for_pending(self) -> pd.DataFrame | None:
        if not self._pending:
            return None
        slots = np.concatenate([p for p, _ in self._pending])
        reasons = np.concatenate([r for _, r in self._pending])
        self._pending.clear()
        slots, keep = np.unique(slots, return_index=True)
        reasons = reasons[keep]
        histories = [self.history.pop(x, "") for x in slots.tolist()]
        frame = build_records(self.store, slots, histories, reasons)
        self._unregister(slots)
        self.store.release(slots)
        return frame

    def _flush(self) -> pd.DataFrame | None:
        if self._superseded:
            sup = np.array(self._superseded, dtype=np.int64)
            self._superseded.clear()
            self._pending.append((sup, np.full(len(sup), END_REASONS.index("superseded-by-reuse"))))
        parts = [*self._emitted, self._records_for_pending()]
        self._emitted.clear()
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return None
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
