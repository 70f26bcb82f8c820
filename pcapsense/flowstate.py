"""Columnar storage of flow state: one numpy array per field, one row (slot) per tracked flow.

Keeping state in arrays rather than one Python object per flow lets a batch gather and scatter the state of all
flows it touches at once. Per-direction fields are (capacity, 2) arrays: column 0 is the originator's side.
"""

from __future__ import annotations

import numpy as np

# name -> (dtype, initial value); "2" suffix in the spec marks per-direction fields
SLOT_FIELDS: dict[str, tuple[type, int]] = {
    "conn_id": (np.int64, -1),
    "key_hash": (np.uint64, 0),
    "in_overflow": (bool, False),
    "proto": (np.int64, -1),
    "orig_hi": (np.uint64, 0),
    "orig_lo": (np.uint64, 0),
    "orig_port": (np.int64, 0),
    "resp_hi": (np.uint64, 0),
    "resp_lo": (np.uint64, 0),
    "resp_port": (np.int64, 0),
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
    "rst_dir": (np.int64, -1),
    "rst_ttl": (np.int64, -1),
    "fin_first_dir": (np.int64, -1),
    "fin_frame": (np.int64, -1),
    "fin_ns": (np.int64, -1),
    "closed_ns": (np.int64, -1),
    "last_syn_seq": (np.int64, -1),
    "reuse_gap_ns": (np.int64, -1),
    "prev_closed": (np.int64, -1),
    "hist_mask": (np.int64, 0),
    "syn_count": (np.int64, 0),
    "synack_count": (np.int64, 0),
    "syn_retrans": (np.int64, 0),
    "synack_retrans": (np.int64, 0),
}
DIR_FIELDS: dict[str, tuple[type, int]] = {
    "pkts": (np.int64, 0),
    "bytes": (np.int64, 0),
    "payload": (np.int64, 0),
    "flags_or": (np.int64, 0),
    "have_seq": (bool, False),
    "raw0": (np.int64, 0),
    "last_raw": (np.int64, 0),
    "last_useq": (np.int64, 0),
    "nextseq": (np.int64, -(2**62)),
    "max_uack": (np.int64, -(2**62)),
    "last_ack_raw": (np.int64, -1),
    "last_win": (np.int64, -1),
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
    "max_seg": (np.int64, 0),
    "max_acked_seg": (np.int64, 0),
    "max_ip_len": (np.int64, 0),
    "mss": (np.int64, -1),
    "wscale": (np.int64, -1),
    "ttl_first": (np.int64, -1),
    "ttl_min": (np.int64, 256),
    "ttl_max": (np.int64, -1),
    "mac_first": (np.int64, -1),
    "mac_varies": (bool, False),
    "iface_first": (np.int64, -1),
    "iface_mask": (np.int64, 0),
}


class SlotStore:
    """Growable struct-of-arrays with a free list; a slot is reset to initial values when reused."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = 0
        self.cols: dict[str, np.ndarray] = {}
        self.free: list[int] = []
        self.active = np.zeros(0, dtype=bool)
        self._grow(capacity)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name, (dtype, init) in SLOT_FIELDS.items():
            self.cols[name] = self._extend(self.cols.get(name), (capacity,), dtype, init)
        for name, (dtype, init) in DIR_FIELDS.items():
            self.cols[name] = self._extend(self.cols.get(name), (capacity, 2), dtype, init)
        self.active = np.concatenate([self.active, np.zeros(capacity - old, dtype=bool)])
        self.free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    @staticmethod
    def _extend(arr: np.ndarray | None, shape: tuple[int, ...], dtype: type, init: int) -> np.ndarray:
        fresh = np.full(shape, init, dtype=dtype)
        if arr is not None:
            fresh[: len(arr)] = arr
        return fresh

    def allocate(self, n: int) -> np.ndarray:
        if n > len(self.free):
            self._grow(max(self.capacity * 2, self.capacity + n))
        slots = np.array(self.free[len(self.free) - n :][::-1], dtype=np.int64)
        del self.free[len(self.free) - n :]
        self.active[slots] = True
        return slots

    def release(self, slots: np.ndarray) -> None:
        for name, (_dtype, init) in SLOT_FIELDS.items():
            self.cols[name][slots] = init
        for name, (_dtype, init) in DIR_FIELDS.items():
            self.cols[name][slots] = init
        self.active[slots] = False
        self.free.extend(slots.tolist())

    @property
    def in_use(self) -> int:
        return self.capacity - len(self.free)
