"""Columnar storage of flow state: one numpy array per field, one row (slot) per tracked flow.

Keeping state in arrays rather than one Python object per flow lets a batch gather and scatter the state of all
flows it touches at once. Per-direction fields are (capacity, 2) arrays: column 0 is the originator's side.

The store is the bulk of the flow table's memory (it holds up to `FlowLimits.max_flows` rows), so each field is as
narrow as the values it can ever hold, "not seen yet" sentinel included: a header field gets the smallest type
that holds the header field (int8 for directions and small codes, int16 for TTL, window scale and the 9 TCP flag
bits, int32 for ports, MSS, window and IP lengths, uint32 for raw sequence numbers). Anything that grows with the
length of a capture stays 64-bit: packet and byte counters and every per-packet event count (one flow may carry
more than 2**31 packets), frame numbers, times and unwrapped sequence numbers.
"""

from __future__ import annotations

import mmap

import numpy as np

WAITING_ACKS = 2  # unacknowledged data segments carried per direction (flows.FlowTable._settle_acks)

# name -> (dtype, initial value)
SLOT_FIELDS: dict[str, tuple[type, int]] = {
    "conn_id": (np.int64, -1),
    "key_hash": (np.uint64, 0),
    "in_overflow": (bool, False),
    "proto": (np.int16, -1),
    "orig_hi": (np.uint64, 0),
    "orig_lo": (np.uint64, 0),
    "orig_port": (np.int32, 0),
    "resp_hi": (np.uint64, 0),
    "resp_lo": (np.uint64, 0),
    "resp_port": (np.int32, 0),
    "orig_is_a": (bool, False),
    "first_ns": (np.int64, 0),
    "last_ns": (np.int64, 0),
    "first_frame": (np.int64, -1),
    "last_frame": (np.int64, -1),
    "syn_frame": (np.int64, -1),
    "syn_ns": (np.int64, -1),
    "synack_frame": (np.int64, -1),
    "synack_ns": (np.int64, -1),
    "ack3_frame": (np.int64, -1),
    "ack3_ns": (np.int64, -1),
    "rst_frame": (np.int64, -1),
    "rst_ns": (np.int64, -1),
    "rst_dir": (np.int8, -1),
    "rst_ttl": (np.int16, -1),
    "fin_first_dir": (np.int8, -1),
    "fin_frame": (np.int64, -1),
    "fin_ns": (np.int64, -1),
    "closed_ns": (np.int64, -1),
    "last_syn_seq": (np.int64, -1),
    "reuse_gap_ns": (np.int64, -1),
    "prev_closed": (np.int8, -1),
    "hist_mask": (np.int32, 0),  # which history codes (letter x direction) the flow has shown
    "hist_len": (np.int8, 0),  # how many: at most 20, one per code
    "hist_lo": (np.int64, 0),  # the codes in the order they appeared, 5 bits each: the first 12 here...
    "hist_hi": (np.int64, 0),  # ...the rest here
    "syn_count": (np.int64, 0),
    "synack_count": (np.int64, 0),
    "syn_retrans": (np.int64, 0),
    "synack_retrans": (np.int64, 0),
}
DIR_FIELDS: dict[str, tuple[type, int]] = {
    "pkts": (np.int64, 0),
    "bytes": (np.int64, 0),
    "payload": (np.int64, 0),
    "flags_or": (np.int16, 0),
    "have_seq": (bool, False),
    "raw0": (np.uint32, 0),
    "last_raw": (np.uint32, 0),
    "last_useq": (np.int64, 0),
    "nextseq": (np.int64, -(2**62)),
    "max_uack": (np.int64, -(2**62)),
    "last_ack_raw": (np.int64, -1),
    "last_win": (np.int32, -1),
    "dupack_run": (np.int64, 0),
    "last_adv_ns": (np.int64, -(2**62)),
    "last_sig": (np.int64, -1),
    "last_dir_ns": (np.int64, -(2**62)),
    "retrans": (np.int64, 0),
    "fast_retrans": (np.int64, 0),
    "ooo": (np.int64, 0),
    "lost": (np.int64, 0),
    "ack_unseen": (np.int64, 0),
    "ack_no_peer": (np.int64, 0),
    "dupes": (np.int64, 0),
    "dupacks": (np.int64, 0),
    "zero_win": (np.int64, 0),
    "max_seg": (np.int32, 0),
    "max_acked_seg": (np.int32, 0),
    # data segments not ACKed yet that could still raise max_acked_seg: (sequence end, size), largest first
    **{f"wait_end{i}": (np.int64, 0) for i in range(WAITING_ACKS)},
    **{f"wait_size{i}": (np.int32, 0) for i in range(WAITING_ACKS)},
    "max_ip_len": (np.int32, 0),
    "mss": (np.int32, -1),
    "wscale": (np.int16, -1),
    "ttl_first": (np.int16, -1),
    "ttl_min": (np.int16, 256),
    "ttl_max": (np.int16, -1),
    "mac_first": (np.int64, -1),
    "mac_varies": (bool, False),
    "iface_first": (np.int64, -1),
    "iface_mask": (np.int64, 0),
}


def _mapped(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An array in an anonymous mapping of its own rather than on the heap. When the store grows, the replaced
    array's pages go back to the system at once instead of staying resident as a hole in the heap; and the
    mapping is shared (mmap's default), so a helper process forked later (read-ahead) keeps sharing the pages
    instead of holding private copies of every page this process writes afterwards."""
    count = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1)), dtype=dtype,
                         count=count).reshape(shape)


class SlotStore:
    """Growable struct-of-arrays with a free list; a slot is reset to initial values when released.

    Capacity doubles up to `limit` (the flow cap) and stops there, growing past it only by what a batch needs
    beyond the cap: doubling from 131,072 straight to 262,144 slots would keep a third of the store allocated for
    slots the cap never lets the table use. Growing replaces one field at a time, so the old and new copies of
    only one array coexist, and each field lives in a mapping of its own (see `_mapped`). Free slots are a stack
    (an array, not a list of Python ints); the lowest new slot is handed out first.
    """

    def __init__(self, limit: int, capacity: int = 1024) -> None:
        self.limit = limit
        self.capacity = 0
        self.cols: dict[str, np.ndarray] = {}
        self._free = np.zeros(0, dtype=np.int64)
        self._n_free = 0
        self.active = np.zeros(0, dtype=bool)
        self._grow(capacity)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def flat(self, name: str) -> np.ndarray:
        """A per-direction field as one array indexed by slot * 2 + direction (a view: writes go to the store).
        One flat index gathers and scatters much faster than a (slot, direction) pair of index arrays."""
        return self.cols[name].reshape(-1)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name, (dtype, init) in SLOT_FIELDS.items():
            self.cols[name] = self._extend(self.cols.get(name), (capacity,), dtype, init)
        for name, (dtype, init) in DIR_FIELDS.items():
            self.cols[name] = self._extend(self.cols.get(name), (capacity, 2), dtype, init)
        self.active = np.concatenate([self.active, np.zeros(capacity - old, dtype=bool)])
        free = np.empty(capacity, dtype=np.int64)
        free[: self._n_free] = self._free[: self._n_free]
        free[self._n_free : self._n_free + capacity - old] = np.arange(capacity - 1, old - 1, -1)
        self._free, self._n_free = free, self._n_free + capacity - old
        self.capacity = capacity

    @staticmethod
    def _extend(arr: np.ndarray | None, shape: tuple[int, ...], dtype: type, init: int) -> np.ndarray:
        """The field at a larger capacity: the old values, then the initial value. A fresh mapping reads as
        zeros, so a field that starts at zero is only copied: its new pages are touched when slots are used,
        not all at once (growing the store to 32,768 slots took 0.08 s, most of it filling pages)."""
        fresh = _mapped(shape, dtype)
        kept = 0 if arr is None else len(arr)
        if kept:
            fresh[:kept] = arr
        if init:
            fresh[kept:] = init
        return fresh

    def _next_capacity(self, n: int) -> int:
        needed = self.capacity + n
        if needed <= self.limit:
            return min(max(2 * self.capacity, needed), self.limit)
        return max(needed, self.capacity + self.capacity // 8)  # past the cap: in steps, not one slot at a time

    def allocate(self, n: int) -> np.ndarray:
        if n > self._n_free:
            self._grow(self._next_capacity(n))
        top = self._n_free
        slots = self._free[top - n : top][::-1].copy()
        self._n_free = top - n
        self.active[slots] = True
        return slots

    def release(self, slots: np.ndarray) -> None:
        for name, (_dtype, init) in SLOT_FIELDS.items():
            self.cols[name][slots] = init
        for name, (_dtype, init) in DIR_FIELDS.items():
            self.cols[name][slots] = init
        self.active[slots] = False
        self._free[self._n_free : self._n_free + len(slots)] = slots
        self._n_free += len(slots)

    def take(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """A copy of every field of the given slots, in their order (the state of flows about to be released)."""
        return {name: col[slots] for name, col in self.cols.items()}

    @property
    def in_use(self) -> int:
        return self.capacity - self._n_free
