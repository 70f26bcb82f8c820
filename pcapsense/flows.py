"""The flow table: bidirectional connections rebuilt batch by batch, with Wireshark-style TCP analysis.

Per batch, packets are grouped by flow with a hash table and put in (flow, direction, frame) order with one
linear radix sort; counters accumulate straight into columnar slots (see flowstate.py); per-packet sequence
analysis runs as grouped scans over that order (see grouped.py), reading carried state once per flow direction;
what only few rows can show (SYNs, retransmissions, new history letters) is computed on those rows alone.
Python code runs per port-reuse boundary and per hash collision only, never per packet or per flow.

TCP analysis follows Wireshark's `tcp.analysis` definitions (ChAdvTCPAnalysis): a segment whose sequence number
is below the next expected one is a retransmission, unless it arrives within the out-of-order window of the
segment that advanced the sequence (out-of-order) or follows two duplicate ACKs for it (fast retransmission);
a sequence number above the next expected one means the previous segment was not captured; an ACK above the
highest sequence the peer was seen sending acknowledges an unseen segment. Mirrored duplicates (the same packet,
same IP ID, again within microseconds, as a SPAN port produces) are counted as such and not as retransmissions.

Memory is bounded: idle timeouts per state and a hard cap on tracked flows (half-open ones evicted first).
Every flow leaves as a record with the reason it left; evictions are counted, never silent. Records are handed
over in frames of at most RECORD_SLICE rows, and a flow's slot is released as its frame is built, so flows leaving
all at once (a flood evicted, or the whole table at the end of the capture) never exist twice in full.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pcapsense import grouped
from pcapsense.decode.columns import PROTO_TCP, PROTO_UDP, Packets
from pcapsense.flowindex import FlowIndex
from pcapsense.flowkeys import FlowKeys
from pcapsense.flowlimits import FlowLimits
from pcapsense.flowrecords import CODE_BITS, END_REASONS, HISTORY_LETTERS, LO_CODES, build_records
from pcapsense.flowstate import WAITING_ACKS, SlotStore

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
NS = 1_000_000_000
_WRAP = 0xFFFFFFFF  # x & _WRAP is x mod 2**32, also for negative x (two's complement), and cheaper than %
RECORD_SLICE = 20_000  # rows per flow-record frame (~25 MB): the most flow records that exist at once


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
class _Departed:
    """Flows that have left the table (their slots are free again) but whose records are not built yet."""

    state: dict[str, np.ndarray]  # SlotStore.take of the departed slots
    reasons: np.ndarray

    def records(self) -> pd.DataFrame:
        return build_records(self.state, self.reasons)


@dataclass
class _Segments:
    """Per-row TCP facts of one batch in (flow, direction, frame) order, for the cross-direction pass."""

    groups: grouped.Groups  # one group per flow direction
    key: np.ndarray  # slot * 2 + direction: where the row's direction lives in per-direction state
    row: np.ndarray  # row of the batch (rows are in frame order)
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    incl: np.ndarray  # highest unwrapped sequence end of the direction so far, this row included
    raw0: np.ndarray  # raw sequence number at unwrapped position 0 of the row's direction
    run: np.ndarray  # consecutive duplicate ACKs ending at this row
    behind: np.ndarray  # below the next expected sequence (retransmission-like)
    ooo: np.ndarray
    has_ack: np.ndarray


@dataclass
class _Rows:
    """The tracked rows of one batch and the columns several steps read, each gathered once (in row order)."""

    pk: Packets
    rows: np.ndarray
    proto: np.ndarray
    tcp: np.ndarray
    flags: np.ndarray  # TCP flags (0 on other protocols)

    @classmethod
    def of(cls, pk: Packets, keys: FlowKeys) -> _Rows:
        return cls(pk, keys.rows, keys.proto, keys.proto == PROTO_TCP, keys.flags)


def _by_direction(groups: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Rows by (flow, direction), frame order within: group numbers are small, so this is a linear radix sort
    (flows come in the order of their group numbers, which no step depends on)."""
    return grouped.stable_order(groups * 2 + direction)


def _first_rows(hits: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, the first of their rows among `hits`): rows are in frame order, so a stable unique of the hits'
    keys finds them, at the cost of the (usually few) hits rather than of the batch."""
    found, first = np.unique(keys[hits], return_index=True)
    return found, hits[first]


def _row_codes(facts: int) -> int:
    """History codes (of direction 0: bit 2 * letter) a row shows, from its facts: bits FIN, SYN, RST, ACK,
    payload, TCP, zero window (in this order). Retransmission and gap letters come from the sequence analysis."""
    fin, syn, rst, ack, payload, tcp, zero_win = (bool((facts >> i) & 1) for i in range(7))
    shown = {"S": tcp and syn and not ack, "H": tcp and syn and ack, "D": payload, "F": tcp and fin, "R": tcp and rst,
             "A": tcp and ack and not (payload or syn or fin or rst), "W": tcp and zero_win and not (syn or rst)}
    return sum(1 << (2 * HISTORY_LETTERS.index(letter)) for letter, on in shown.items() if on)


_ROW_CODES = np.array([_row_codes(facts) for facts in range(1 << 7)], dtype=np.int64)
_CODE_T, _CODE_G = 1 << (2 * HISTORY_LETTERS.index("T")), 1 << (2 * HISTORY_LETTERS.index("G"))


class FlowTable:
    """Tracks connections across batches and emits flow records as they close, expire or are evicted."""

    def __init__(self, limits: FlowLimits | None = None) -> None:
        self.limits = limits or FlowLimits()
        self.store = SlotStore(self.limits.max_flows)
        self.index = FlowIndex()
        self.stats = FlowStats()
        self._next_conn = 1
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (slots, reason codes) to emit
        self._departed: deque[_Departed] = deque()  # flows evicted mid-batch to make room, records not built yet
        self._superseded: list[int] = []  # slots replaced by a new connection on the same tuple
        self.now_ns = 0
        lim = self.limits  # flows idle for less than the shortest timeout need no closer look
        self._shortest_timeout_ns = int(min(lim.half_open_timeout_s, lim.established_timeout_s, lim.closed_timeout_s,
                                            lim.udp_timeout_s, lim.other_timeout_s) * NS)

    # -- public ---------------------------------------------------------------------------------------------

    def update(self, pk: Packets, keys: FlowKeys) -> FlowInfo:
        """Account one decoded batch, grouped by flow in `keys` (prepare.py); returns per-packet annotations for
        the tracked rows."""
        later = int(np.count_nonzero(pk.later_fragment))
        if later:
            self.stats.untracked_packets["ip-fragment-continuation"] = (
                self.stats.untracked_packets.get("ip-fragment-continuation", 0) + later
            )
        if len(pk.ts_ns):
            self.now_ns = max(self.now_ns, int(pk.ts_ns.max()))
        info = self._track(pk, keys)
        self.stats.peak_tracked = max(self.stats.peak_tracked, self.store.in_use)
        return info

    def expire_records(self) -> Iterator[pd.DataFrame]:
        """Records of flows idle past their state's timeout, plus flows superseded or evicted during the batch,
        in frames of at most RECORD_SLICE rows. Each frame's flows leave the table as it is built: consume the
        frames before the next update."""
        slots = np.flatnonzero(self.store.active)
        idle_ns = self.now_ns - self.store["last_ns"][slots]
        slots, idle_ns = slots[idle_ns > self._shortest_timeout_ns], idle_ns[idle_ns > self._shortest_timeout_ns]
        if len(slots):
            idle = slots[idle_ns > self._timeouts(slots)]
            if len(idle):
                self.stats.expired_idle += len(idle)
                self._pending.append((idle, np.full(len(idle), END_REASONS.index("idle-timeout"))))
        return self._leave()

    def drain_records(self) -> Iterator[pd.DataFrame]:
        """End of capture: every remaining flow becomes a record, in frames as in `expire_records`."""
        slots = np.flatnonzero(self.store.active)
        if self._pending:
            slots = np.setdiff1d(slots, np.concatenate([p for p, _ in self._pending]))
        if len(slots):
            self._pending.append((slots, np.full(len(slots), END_REASONS.index("end-of-capture"))))
        return self._leave()

    # -- slot assignment ------------------------------------------------------------------------------------

    def _track(self, pk: Packets, keys: FlowKeys) -> FlowInfo:
        rows, src_is_a = keys.rows, keys.src_is_a
        if not len(rows):
            empty = np.zeros(0, dtype=np.int64)
            return FlowInfo(rows, empty, empty, empty, empty, empty, *(np.zeros(0, bool) for _ in range(7)))
        b = _Rows.of(pk, keys)
        slots_u, exact = self._lookup(keys)
        new_u = np.flatnonzero(slots_u < 0)
        if not keys.exact:  # new flows get slots and connection ids in hash order, as they always have
            new_u = new_u[np.argsort(keys.hashes[new_u])]
        if len(new_u):
            self._make_room(len(new_u), protect=slots_u[slots_u >= 0])
            slots_u[new_u] = self._open(pk, rows, keys.first_idx[new_u], src_is_a)
            self._register(slots_u[new_u], exact[new_u], keys, new_u)
        slot = slots_u[keys.inv]
        direction = (src_is_a != self.store["orig_is_a"][slot]).astype(np.int64)
        moved = self._split_reused(b, slot, direction, src_is_a)
        by_key2 = _by_direction(pd.factorize(slot)[0] if moved else keys.inv, direction)
        self._account(b, slot, direction)
        info = self._tcp_analysis(b, slot, direction, by_key2)
        self._histories(b, slot, direction, info)
        return info

    def _key_matches(self, slots: np.ndarray, keys: FlowKeys, groups: np.ndarray) -> np.ndarray:
        """Whether each slot's stored flow has exactly the key of the given groups (guards against hash
        collisions)."""
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
        for have, want in zip(stored, keys.keys, strict=True):
            match &= have == want[groups]
        return match

    def _lookup(self, keys: FlowKeys) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the batch's flows (-1 for new ones), and which groups must be kept by exact key."""
        hashes = keys.hashes
        slots = self.index.lookup(hashes)
        found = np.flatnonzero(slots >= 0)
        exact = np.zeros(len(hashes), dtype=bool)
        mismatch = found[~self._key_matches(slots[found], keys, found)]
        exact[mismatch] = True
        if keys.exact:  # two different keys of this batch may share a hash
            uniq, counts = np.unique(hashes, return_counts=True)
            exact |= np.isin(hashes, uniq[counts > 1])
        if self.index.overflow:
            exact |= np.isin(hashes, self.store["key_hash"][list(self.index.overflow.values())])
        for u in np.flatnonzero(exact).tolist():
            slots[u] = self.index.overflow.get(keys.key(u), -1)
        return slots, exact

    def _register(self, slots: np.ndarray, exact: np.ndarray, keys: FlowKeys, groups: np.ndarray) -> None:
        hashes = keys.hashes[groups]
        self.store["key_hash"][slots] = hashes
        exact = exact | self.index.contains(hashes)
        self.store["in_overflow"][slots] = exact
        self.index.add(hashes[~exact], slots[~exact])
        for slot, group in zip(slots[exact].tolist(), groups[exact].tolist(), strict=True):
            self.index.overflow[keys.key(group)] = slot

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
        # the slots are needed now, the records only when the engine asks: keep the (narrow) state meanwhile
        victims = np.sort(victims)
        reason = END_REASONS.index("evicted-flow-cap")
        for start in range(0, len(victims), RECORD_SLICE):
            part = victims[start : start + RECORD_SLICE]
            self._departed.append(self._depart(part, np.full(len(part), reason)))

    def _split_reused(self, b: _Rows, slot: np.ndarray, direction: np.ndarray, src_is_a: np.ndarray) -> bool:
        """A SYN with a new initial sequence number on a known 4-tuple starts a new connection (port reuse).
        Returns whether rows moved to new connections.

        Only SYNs can start one, so they are checked first on their own (few rows); the rows of the batch are
        walked only when a new connection does start."""
        s = self.store
        syn = np.flatnonzero(b.tcp & ((b.flags & (SYN | ACK)) == SYN))
        if not len(syn):
            return False
        order = syn[np.argsort(slot[syn], kind="stable")]
        groups = grouped.Groups.of(slot[order])
        seq = b.pk.seq[b.rows[order]]
        prev_seq = grouped.previous(seq, groups, s["last_syn_seq"][slot[order[groups.starts]]])
        if ((prev_seq >= 0) & (seq != prev_seq)).any():
            self._split_connections(b, slot, direction, src_is_a)
            return True
        s["last_syn_seq"][slot[order[groups.ends]]] = seq[groups.ends]
        return False

    def _split_connections(self, b: _Rows, slot: np.ndarray, direction: np.ndarray, src_is_a: np.ndarray) -> None:
        """Rows of each new connection move to a fresh slot; the old one is emitted as superseded. The new record
        keeps how long after the previous connection's last packet it came and whether that one had closed."""
        s, pk, rows = self.store, b.pk, b.rows
        tcp = np.flatnonzero(b.tcp)
        order = tcp[np.argsort(slot[tcp], kind="stable")]
        r = rows[order]
        flags, seq = b.flags[order], pk.seq[r]
        syn_only = (flags & (SYN | ACK)) == SYN
        groups = grouped.Groups.of(slot[order])
        first = groups.first
        last_syn = grouped.last_index_where(syn_only, groups)
        prev_syn = grouped.previous(last_syn, groups, np.full(len(groups.starts), -1))
        prev_seq = np.where(prev_syn >= 0, seq[np.maximum(prev_syn, 0)], s["last_syn_seq"][slot[order]])
        boundary = syn_only & (prev_seq >= 0) & (seq != prev_seq)
        bpos = np.flatnonzero(boundary).tolist()
        end_of = groups.ends[groups.gid] + 1
        for i, b_at in enumerate(bpos):
            g_first = int(first[b_at])
            chained = i > 0 and int(first[bpos[i - 1]]) == g_first
            prev_start = bpos[i - 1] if chained else g_first
            stop = bpos[i + 1] if i + 1 < len(bpos) and int(first[bpos[i + 1]]) == g_first else int(end_of[b_at])
            old = int(slot[order[b_at - 1]]) if b_at > g_first else int(slot[order[b_at]])
            new = int(s.allocate(1)[0])
            self._copy_identity(old, new)
            members = order[b_at:stop]
            slot[members] = new
            s["orig_is_a"][new] = bool(src_is_a[order[b_at]])  # the SYN's sender originates the new connection
            direction[members] = (src_is_a[members] != s["orig_is_a"][new]).astype(np.int64)
            prev_rows = rows[order[prev_start:b_at]]
            prev_last_ns = int(pk.ts_ns[prev_rows[-1]]) if len(prev_rows) else int(s["last_ns"][old])
            prev_flags = int(np.bitwise_or.reduce(pk.tcp_flags[prev_rows])) if len(prev_rows) else 0
            prev_flags |= int(s["flags_or"][old, 0] | s["flags_or"][old, 1])
            boundary_row = r[b_at]
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
        self._superseded.append(old)

    # -- accounting -----------------------------------------------------------------------------------------

    def _account(self, b: _Rows, slot: np.ndarray, direction: np.ndarray) -> None:
        """Counters, first/last times, TTL/MAC/interface per direction, handshake frames.

        Accumulated straight into the store, row by row (ufunc.at on one flat index per row: cheaper than
        grouping rows first when most flows show up once or twice per batch). Per-row values are cast to the
        field's type first, which keeps numpy on its fast path."""
        s, pk, rows = self.store, b.pk, b.rows
        k = slot * 2 + direction
        pkts = s.flat("pkts")
        fresh, first = _first_rows(np.flatnonzero(pkts[k] == 0), k)  # directions new to the table, first rows
        np.add.at(pkts, k, 1)
        ip_len, ttl, mac, iface = pk.ip_len[rows], pk.ttl[rows], pk.src_mac[rows], pk.iface[rows]
        for name, accumulate, values in (("bytes", np.add, ip_len), ("payload", np.add, pk.payload_len[rows]),
                                         ("ttl_min", np.minimum, ttl), ("ttl_max", np.maximum, ttl),
                                         ("max_ip_len", np.maximum, ip_len)):
            field_ = s.flat(name)
            accumulate.at(field_, k, values.astype(field_.dtype))
        for name, values in (("flags_or", b.flags), ("iface_mask", np.left_shift(1, np.minimum(iface, 62)))):
            field_ = s.flat(name)
            adds = np.flatnonzero(values & ~field_[k])  # only rows that bring a new bit (few)
            np.bitwise_or.at(field_, k[adds], values[adds].astype(field_.dtype))
        s.flat("ttl_first")[fresh] = ttl[first]
        s.flat("mac_first")[fresh] = mac[first]
        s.flat("iface_first")[fresh] = iface[first]
        s.flat("mac_varies")[k[mac != s.flat("mac_first")[k]]] = True
        # per flow (both directions)
        np.maximum.at(s["last_ns"], slot, pk.ts_ns[rows])
        np.maximum.at(s["last_frame"], slot, pk.frame[rows])
        self._handshake_frames(b, slot, direction)

    def _handshake_frames(self, b: _Rows, slot: np.ndarray, direction: np.ndarray) -> None:
        s, pk, rows, flags, tcp = self.store, b.pk, b.rows, b.flags, b.tcp
        syn = tcp & ((flags & (SYN | ACK)) == SYN)
        synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
        for mask, frame_col, ns_col, count_col in ((syn & (direction == 0), "syn_frame", "syn_ns", "syn_count"),
                                                   (synack & (direction == 1), "synack_frame", "synack_ns",
                                                    "synack_count")):
            np.add.at(s[count_col], slot[mask], 1)
            us, first = _first_rows(np.flatnonzero(mask), slot)
            unset = s[frame_col][us] < 0
            s[frame_col][us[unset]] = pk.frame[rows[first[unset]]]
            s[ns_col][us[unset]] = pk.ts_ns[rows[first[unset]]]
        # the completing ACK: only flows not yet established can have one, which leaves few rows to look at
        acks = np.flatnonzero(tcp & (direction == 0) & ((flags & ACK) != 0) & ((flags & (SYN | RST)) == 0))
        acks = acks[s["ack3_frame"][slot[acks]] < 0]
        synack_frame = s["synack_frame"][slot[acks]]
        acks = acks[(synack_frame >= 0) & (pk.frame[rows[acks]] > synack_frame)]
        us, first = _first_rows(acks, slot)
        s["ack3_frame"][us] = pk.frame[rows[first]]
        s["ack3_ns"][us] = pk.ts_ns[rows[first]]
        rst = tcp & ((flags & RST) != 0)
        us, first = _first_rows(np.flatnonzero(rst), slot)
        unset = s["rst_frame"][us] < 0
        s["rst_frame"][us[unset]] = pk.frame[rows[first[unset]]]
        s["rst_ns"][us[unset]] = pk.ts_ns[rows[first[unset]]]
        s["rst_dir"][us[unset]] = direction[first[unset]]
        s["rst_ttl"][us[unset]] = pk.ttl[rows[first[unset]]]
        fin = tcp & ((flags & FIN) != 0)
        us, first = _first_rows(np.flatnonzero(fin), slot)
        unset = s["fin_first_dir"][us] < 0
        s["fin_first_dir"][us[unset]] = direction[first[unset]]
        s["fin_frame"][us[unset]] = pk.frame[rows[first[unset]]]
        s["fin_ns"][us[unset]] = pk.ts_ns[rows[first[unset]]]
        closing = np.unique(slot[fin | rst])
        flags_or = s["flags_or"][closing]
        both_fin = ((flags_or[:, 0] & FIN) != 0) & ((flags_or[:, 1] & FIN) != 0)
        done = closing[(s["closed_ns"][closing] < 0) & (both_fin | (s["rst_frame"][closing] >= 0))]
        s["closed_ns"][done] = s["last_ns"][done]

    # -- TCP sequence analysis --------------------------------------------------------------------------------

    def _tcp_analysis(self, b: _Rows, slot: np.ndarray, direction: np.ndarray, by_key2: np.ndarray) -> FlowInfo:
        s = self.store
        n = len(b.rows)
        out = {name: np.zeros(n, dtype=bool) for name in ("retrans", "fast_retrans", "ooo", "dupe", "lost",
                                                          "ack_unseen", "acked")}
        rel_seq = np.zeros(n, dtype=np.int64)
        seg_len_all = np.zeros(n, dtype=np.int64)
        if b.tcp.any():
            order = by_key2[b.tcp[by_key2]]
            self._sequence(b, order, slot, direction, out, rel_seq, seg_len_all)
        return FlowInfo(b.rows, slot, s["conn_id"][slot], direction, rel_seq, seg_len_all, **out)

    def _sequence(self, b: _Rows, order: np.ndarray, slot: np.ndarray, direction: np.ndarray,
                  out: dict[str, np.ndarray], rel_seq: np.ndarray, seg_len_all: np.ndarray) -> None:
        """Per-row sequence analysis over the TCP rows in (flow, direction, frame) order. State carried from
        earlier batches is read once per flow direction (`carry`) and written back from each one's last row."""
        s, lim, pk = self.store, self.limits, b.pk
        r = b.rows[order]
        sl, d = slot[order], direction[order]
        key = sl * 2 + d
        g = grouped.Groups.of(key)
        gkey, gid = key[g.starts], g.gid
        carry = {name: s.flat(name)[gkey] for name in ("have_seq", "raw0", "last_raw", "last_useq", "nextseq",
                                                        "last_sig", "last_dir_ns", "last_adv_ns", "last_ack_raw",
                                                        "last_win", "dupack_run")}
        have = carry["have_seq"]
        flags, seq, ack, ts, payload = b.flags[order], pk.seq[r], pk.ack[r], pk.ts_ns[r], pk.payload_len[r]
        # unwrap 32-bit sequence numbers against the previous packet of the same direction
        prev_raw = grouped.previous(seq, g, carry["last_raw"])
        delta = ((seq - prev_raw + 2**31) & _WRAP) - 2**31
        delta[g.starts[~have]] = 0
        useq = np.where(have, carry["last_useq"], 0)[gid] + grouped.cumsum(delta, g)
        raw0 = np.where(have, carry["raw0"], seq[g.starts])
        seg_len = payload + ((flags & SYN) != 0) + ((flags & FIN) != 0)
        seq_end = useq + seg_len
        incl = np.maximum(grouped.cummax(seq_end, g), carry["nextseq"][gid])
        next_before = grouped.previous(incl, g, carry["nextseq"])
        known = next_before > grouped.NEG
        # mirrored duplicate: same packet signature again within microseconds
        sig = (seq * 1_000_003 + ack * 7919 + pk.ip_id[r] * 31 + flags) ^ (payload << 40)
        prev_sig = grouped.previous(sig, g, carry["last_sig"])
        prev_ts = grouped.previous(ts, g, carry["last_dir_ns"])
        dupe = (sig == prev_sig) & ((ts - prev_ts) <= lim.mirror_window_us * 1000)
        no_syn_fin_rst = (flags & (SYN | FIN | RST)) == 0
        keepalive = (seg_len <= 1) & (useq == next_before - 1) & no_syn_fin_rst
        behind = known & (seg_len > 0) & (useq < next_before) & ~keepalive & ~dupe
        # out of order: behind, but within the window of the latest segment before it that advanced the sequence
        advancing = np.flatnonzero((seq_end > next_before) & ~dupe)
        late = np.flatnonzero(behind)
        prev_adv = grouped.latest(advancing, late, g, inclusive=False)
        last_adv_ns = np.where(prev_adv >= 0, ts[prev_adv], carry["last_adv_ns"][gid[late]])
        ooo = np.zeros(len(order), dtype=bool)
        ooo[late] = (ts[late] - last_adv_ns) < lim.ooo_window_ms * 1e6
        # duplicate ACKs (pure ACK, same ack and window as the previous packet of this direction)
        win = pk.win[r]
        pure_ack = ((flags & ACK) != 0) & (seg_len == 0) & no_syn_fin_rst
        prev_ack = grouped.previous(ack, g, carry["last_ack_raw"])
        prev_win = grouped.previous(win, g, carry["last_win"])
        dupack = pure_ack & (ack == prev_ack) & (win == prev_win) & ~dupe
        # run length of consecutive dup ACKs, continuing the carried run
        dup = np.flatnonzero(dupack)
        run = np.zeros(len(order), dtype=np.int64)
        not_dup = grouped.latest(np.flatnonzero(~dupack), dup, g, inclusive=False)
        run[dup] = np.where(not_dup >= 0, dup - not_dup, dup - g.first[dup] + 1 + carry["dupack_run"][gid[dup]])
        has_ack = ((flags & ACK) != 0) & ((flags & RST) == 0)
        segs = _Segments(g, key, r, seq, ack, flags, incl, raw0[gid], run, behind, ooo, has_ack)
        fast, ack_unseen = self._cross_direction(segs, len(b.pk.ts_ns))
        out["fast_retrans"][order] = fast
        out["ack_unseen"][order] = ack_unseen
        lost = known & (useq > next_before) & ((flags & RST) == 0)
        retrans = behind & ~ooo & ~fast
        out["retrans"][order] = retrans
        out["ooo"][order] = ooo
        out["dupe"][order] = dupe
        out["lost"][order] = lost
        rel_seq[order] = useq
        seg_len_all[order] = seg_len
        # scatter per-direction results: the state after each direction's last row
        ends = g.ends
        adv_last = grouped.latest(advancing, ends, g, inclusive=True)
        for name, values in (("have_seq", True), ("raw0", raw0), ("last_raw", seq[ends]),
                             ("last_useq", useq[ends]), ("nextseq", incl[ends]), ("last_ack_raw", ack[ends]),
                             ("last_win", win[ends]), ("dupack_run", run[ends]), ("last_sig", sig[ends]),
                             ("last_dir_ns", ts[ends]),
                             ("last_adv_ns", np.where(adv_last >= 0, ts[adv_last], carry["last_adv_ns"]))):
            s.flat(name)[gkey] = values
        for name, mask in (("retrans", retrans), ("fast_retrans", fast), ("ooo", ooo), ("dupes", dupe),
                           ("lost", lost), ("dupacks", dupack), ("ack_unseen", ack_unseen),
                           ("zero_win", (win == 0) & ((flags & (SYN | RST)) == 0))):
            np.add.at(s.flat(name), key[mask], 1)
        np.maximum.at(s.flat("max_seg"), key, payload.astype(s["max_seg"].dtype))
        self._syn_options(pk, r, flags, gid, gkey)
        synack = (flags & (SYN | ACK)) == (SYN | ACK)
        syn_only = (flags & (SYN | ACK)) == SYN
        np.add.at(s["syn_retrans"], sl[syn_only & behind], 1)
        np.add.at(s["synack_retrans"], sl[synack & behind], 1)
        # data acknowledged by the end of the batch: the largest such segment per direction
        data = np.flatnonzero(seg_len > 0)
        peer_ack = s.flat("max_uack")[key[data] ^ 1]
        acked = data[seq_end[data] <= peer_ack]
        out["acked"][order[acked]] = True
        np.maximum.at(s.flat("max_acked_seg"), key[acked], payload[acked].astype(s["max_acked_seg"].dtype))
        waiting = data[seq_end[data] > peer_ack]
        self._settle_acks(gkey, key[waiting], seq_end[waiting], payload[waiting])

    def _settle_acks(self, gkey: np.ndarray, key: np.ndarray, end: np.ndarray, size: np.ndarray) -> None:
        """Keep a direction's largest ACKed segment independent of where batches are cut: a data segment whose
        ACK comes in a later batch counts too.

        The segments not ACKed by the end of their batch (`key`, `end`, `size`) that could still raise it are
        carried to later batches as a staircase of (sequence end, size), both rising (a segment ending no later
        and at least as large makes another one irrelevant), at most WAITING_ACKS per direction: the largest,
        since a large segment getting through is what the PMTUD detector asks about. Each batch settles the
        carried segments of the directions it saw, or whose peer it saw acknowledging."""
        s = self.store
        max_acked = s.flat("max_acked_seg")
        ends = [s.flat(f"wait_end{i}") for i in range(WAITING_ACKS)]
        sizes = [s.flat(f"wait_size{i}") for i in range(WAITING_ACKS)]
        seen = np.concatenate([gkey, gkey ^ 1])
        carried = np.unique(seen[sizes[0][seen] > 0])  # the largest is kept first: no entry, no entries
        have = [carried[z[carried] > 0] for z in sizes]
        k = np.concatenate([*have, key])
        e = np.concatenate([*(ends[i][h] for i, h in enumerate(have)), end])
        z = np.concatenate([*(sizes[i][h] for i, h in enumerate(have)), size]).astype(np.int64)
        for i in range(WAITING_ACKS):
            ends[i][carried], sizes[i][carried] = 0, 0
        covered = e <= s.flat("max_uack")[k ^ 1]
        np.maximum.at(max_acked, k[covered], z[covered].astype(max_acked.dtype))
        left = np.flatnonzero(~covered)
        left = left[z[left] > max_acked[k[left]]]
        if not len(left):
            return
        order = left[np.lexsort((-z[left], e[left], k[left]))]  # by direction, end, the largest first on a tie
        k, e, z = k[order], e[order], z[order]
        g = grouped.Groups.of(k)
        rises = z > grouped.previous(grouped.cummax(z, g), g, np.zeros(len(g.starts), dtype=np.int64))
        k, e, z = k[rises], e[rises], z[rises]
        g = grouped.Groups.of(k)
        rank = g.ends[g.gid] - np.arange(len(k))  # 0: the largest (last) of its direction
        for i in range(WAITING_ACKS):
            at = rank == i
            ends[i][k[at]], sizes[i][k[at]] = e[at], z[at]

    def _syn_options(self, pk: Packets, r: np.ndarray, flags: np.ndarray, gid: np.ndarray,
                     gkey: np.ndarray) -> None:
        """MSS and window scale per direction: the largest announced by the direction's SYNs in this batch, when
        one announced any. Read from the SYN rows only (a handful) rather than from every row."""
        syn = np.flatnonzero((flags & SYN) != 0)
        if not len(syn):
            return
        groups = grouped.Groups.of(gid[syn])
        targets = gkey[gid[syn[groups.starts]]]
        for name in ("mss", "wscale"):
            announced = np.maximum.reduceat(getattr(pk, name)[r[syn]], groups.starts)
            self.store.flat(name)[targets[announced >= 0]] = announced[announced >= 0]

    def _cross_direction(self, segs: _Segments, batch_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Facts that need the other direction in frame order: fast retransmissions and ACKs of unseen data
        (returned, per row), and the highest ACK each direction sent (which decides what counts as acknowledged).

        A row's peer is the latest row of the other direction before it. The other direction's group is the
        neighbouring one in (flow, direction) order, so one search by (group, row) finds that row; when there is
        none, the other direction's state carried from earlier batches stands in."""
        s, g, key = self.store, segs.groups, segs.key
        flow_of_group = key[g.starts] >> 1
        peer_group = np.clip(g.gid + 1 - 2 * (key & 1), 0, len(g.starts) - 1)
        position = np.searchsorted(g.gid * batch_rows + segs.row, peer_group * batch_rows + segs.row) - 1
        seen = (flow_of_group[peer_group] == key >> 1) & (peer_group != g.gid) & (position >= g.starts[peer_group])
        peer = np.where(seen, position, 0)
        other = key ^ 1
        peer_high = np.where(seen, segs.incl[peer], s.flat("nextseq")[other])
        peer_raw0 = np.where(seen, segs.raw0[peer], s.flat("raw0")[other])
        peer_known = (peer_high > grouped.NEG) & (seen | s.flat("have_seq")[other])
        # this packet's ACK unwrapped into the peer's sequence space
        ref = np.where(peer_known, peer_high, 0)
        uack = ref + (((segs.ack - (peer_raw0 + ref)) + 2**31) & _WRAP) - 2**31
        ack_unseen = segs.has_ack & peer_known & (uack > peer_high)
        np.add.at(s.flat("ack_no_peer"), key[segs.has_ack & ~peer_known & ((segs.flags & SYN) == 0)], 1)
        # fast retransmission: the peer's latest packet is a duplicate ACK (2nd or later) for this sequence
        retx = np.flatnonzero(segs.behind & ~segs.ooo)
        peer_run = np.where(seen[retx], segs.run[peer[retx]], s.flat("dupack_run")[other[retx]])
        peer_ack = np.where(seen[retx], segs.ack[peer[retx]], s.flat("last_ack_raw")[other[retx]])
        fast = np.zeros(len(key), dtype=bool)
        fast[retx] = (peer_run >= 2) & (peer_ack == segs.seq[retx])
        # highest ACK per direction (in the peer's space), for "acknowledged" decisions
        valid = segs.has_ack & peer_known
        if valid.any():
            np.maximum.at(s.flat("max_uack"), key[valid], uack[valid])
        return fast, ack_unseen

    # -- history ----------------------------------------------------------------------------------------------

    def _histories(self, b: _Rows, slot: np.ndarray, direction: np.ndarray, info: FlowInfo) -> None:
        """Append Zeek history letters the first time each (flow, letter, direction) occurs, in frame order.

        Each row's letters become a bit mask of history codes (one table lookup); only codes its flow has not
        shown yet are looked at, so established flows (every letter seen long ago) cost that mask and no more."""
        s, pk, flags = self.store, b.pk, b.flags
        facts = ((flags & (FIN | SYN | RST)) | ((flags & ACK) >> 1) | (pk.payload_len[b.rows] > 0) * 16
                 | b.tcp * 32 | (pk.win[b.rows] == 0) * 64)
        codes = _ROW_CODES[facts] | (info.retrans | info.fast_retrans) * _CODE_T | info.lost * _CODE_G
        new = (codes << direction) & ~s["hist_mask"][slot]
        hits = np.flatnonzero(new)
        if not len(hits):
            return
        bits = np.unpackbits(new[hits].astype("<u4").view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
        hit_row, code = np.nonzero(bits[:, : 2 * len(HISTORY_LETTERS)])  # in frame order, then code order
        us = slot[hits[hit_row]]
        _, first = np.unique(us * (2 * len(HISTORY_LETTERS)) + code, return_index=True)  # per (flow, code)
        first.sort()
        us, code = us[first], code[first]
        np.bitwise_or.at(s["hist_mask"], us, 1 << code)
        by_flow = np.argsort(us, kind="stable")
        self._append_history(us[by_flow], code[by_flow])

    def _append_history(self, us: np.ndarray, codes: np.ndarray) -> None:
        """Append new history codes to each flow's packed history; `us` holds each flow's codes together, in the
        order they occurred."""
        s = self.store
        groups = grouped.Groups.of(us)
        pos = s["hist_len"][us] + (np.arange(len(us)) - groups.first)
        flows = us[groups.starts]
        for name, lo, hi in (("hist_lo", 0, LO_CODES), ("hist_hi", LO_CODES, 2 * len(HISTORY_LETTERS))):
            inside = (pos >= lo) & (pos < hi)
            bits = np.where(inside, codes << (CODE_BITS * np.clip(pos - lo, 0, hi - lo - 1)), 0)
            s[name][flows] |= np.bitwise_or.reduceat(bits, groups.starts)
        s["hist_len"][flows] += groups.sizes.astype(np.int8)

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

    def _depart(self, slots: np.ndarray, reasons: np.ndarray) -> _Departed:
        """Take the flows' state out of the table and free their slots."""
        departed = _Departed(self.store.take(slots), reasons)
        self._unregister(slots)
        self.store.release(slots)
        return departed

    def _leave(self) -> Iterator[pd.DataFrame]:
        """Records of the evicted flows, then of the pending ones (each flow once, with the first reason it was
        given, in slot order), RECORD_SLICE rows at a time; pending flows leave the table slice by slice."""
        if self._superseded:
            sup = np.array(self._superseded, dtype=np.int64)
            self._superseded.clear()
            self._pending.append((sup, np.full(len(sup), END_REASONS.index("superseded-by-reuse"))))
        while self._departed:
            yield self._departed.popleft().records()
        if not self._pending:
            return
        slots = np.concatenate([p for p, _ in self._pending])
        reasons = np.concatenate([r for _, r in self._pending])
        slots, keep = np.unique(slots, return_index=True)
        self._pending = [(slots, reasons[keep])]
        while self._pending:
            slots, reasons = self._pending.pop()
            if len(slots) > RECORD_SLICE:
                self._pending.append((slots[RECORD_SLICE:], reasons[RECORD_SLICE:]))
            yield self._depart(slots[:RECORD_SLICE], reasons[:RECORD_SLICE]).records()
