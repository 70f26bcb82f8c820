"""Which flow each packet of a batch belongs to, from the packets alone: the first step of flow tracking.

Rows are grouped by their exact bidirectional key (protocol and both endpoints, the lower endpoint first) with a
64-bit hash and a hash table, verified against the keys, with an exact sort as the fallback on a collision.
Nothing here reads the flow table (see prepare.py): the flow table only looks the groups up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pcapsense.decode.columns import PROTO_TCP, PROTO_UDP, Packets, tracked_rows


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash step."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass
class FlowKeys:
    """The tracked rows of a batch grouped by flow; per-row columns are in row order, per-group ones in group
    order (groups numbered in order of first appearance, or in key order after a hash collision)."""

    rows: np.ndarray  # tracked rows of the batch
    proto: np.ndarray  # per row: IP protocol
    flags: np.ndarray  # per row: TCP flags (0 on other protocols)
    src_is_a: np.ndarray  # per row: the sender is the key's lower endpoint
    inv: np.ndarray  # per row: its group
    first_idx: np.ndarray  # per group: its first row (an index into `rows`)
    hashes: np.ndarray  # per group: key hash (may repeat after a collision)
    keys: tuple[np.ndarray, ...]  # per group: the exact key (proto, a_hi, a_lo, a_port, b_hi, b_lo, b_port)
    exact: bool  # a hash collision forced an exact grouping

    @classmethod
    def of(cls, pk: Packets) -> FlowKeys:
        rows = tracked_rows(pk)
        proto = pk.proto[rows]
        has_ports = (proto == PROTO_TCP) | (proto == PROTO_UDP)
        s_hi, s_lo, d_hi, d_lo = pk.src_hi[rows], pk.src_lo[rows], pk.dst_hi[rows], pk.dst_lo[rows]
        sp = np.where(has_ports, pk.sport[rows], 0)
        dp = np.where(has_ports, pk.dport[rows], 0)
        src_is_a = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
        columns = (proto, np.where(src_is_a, s_hi, d_hi), np.where(src_is_a, s_lo, d_lo), np.where(src_is_a, sp, dp),
                   np.where(src_is_a, d_hi, s_hi), np.where(src_is_a, d_lo, s_lo), np.where(src_is_a, dp, sp))
        inv, first_idx, hashes, exact = _group(columns)
        keys = tuple(c[first_idx] for c in columns)
        return cls(rows, proto, pk.tcp_flags[rows], src_is_a, inv, first_idx, hashes, keys, exact)

    def key(self, group: int) -> tuple[int, ...]:
        """The exact key of one group, as the flow index's overflow dict keeps it."""
        return tuple(int(col[group]) for col in self.keys)


def _group(columns: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(group of each row, first row of each group, hash of each group, exact): hash to 64 bits and number the
    distinct hashes in order of first appearance (a hash table: no sort), then verify, and fall back to an
    exact sort on a collision."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            h = _mix(h ^ col.astype(np.uint64, copy=False))
    inv, hashes = pd.factorize(h)
    first_idx = np.flatnonzero(np.r_[True, inv[1:] > np.maximum.accumulate(inv)[:-1]]) if len(h) else \
        np.zeros(0, dtype=np.int64)  # where a number is new
    rep = first_idx[inv]
    if all(np.array_equal(col, col[rep]) for col in columns):
        return inv.astype(np.int64, copy=False), first_idx, hashes, False
    exact = np.rec.fromarrays([c.astype(np.int64) if c.dtype != np.uint64 else c for c in columns])
    _, first_idx, inv = np.unique(exact, return_index=True, return_inverse=True)
    return inv.reshape(-1), first_idx, h[first_idx], True
