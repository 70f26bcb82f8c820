"""Grouped scans over sorted arrays: the vector form of "for each flow, walk its packets in order".

Rows are sorted so that each group (a flow, or a flow direction) is contiguous and in frame order; these
helpers then compute per-row running values without a Python loop per packet.
"""

from __future__ import annotations

import numpy as np

NEG = np.iinfo(np.int64).min // 4  # "nothing yet": below any real value, safe to add small offsets to
_SPAN = 2**42  # every grouped value must lie in (-2**41, 2**41); rows per batch stay below 2**20


def group_index(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each row's group, group number of each row) for contiguous groups of equal keys."""
    n = len(sorted_keys)
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    gid = np.cumsum(starts) - 1
    first_rows = np.flatnonzero(starts)
    return first_rows[gid], gid


def cumsum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Inclusive running sum within each group (`first` is each row's group start from group_index)."""
    total = np.cumsum(values)
    return total - total[first] + values[first]


def cummax(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Inclusive running maximum within each group; values must lie within +-2**41 (or be NEG)."""
    clipped = np.maximum(values, -(2**41) + 1)
    lifted = clipped + gid * _SPAN
    out = np.maximum.accumulate(lifted) - gid * _SPAN
    return np.where(out <= -(2**41) + 1, NEG, out)


def previous(values: np.ndarray, first: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """The value of the previous row in the same group; for a group's first row, that group's `carry`."""
    out = np.empty_like(values)
    out[1:] = values[:-1]
    is_first = first == np.arange(len(values))
    out[is_first] = carry[is_first]
    return out


def last_index_where(mask: np.ndarray, first: np.ndarray) -> np.ndarray:
    """For each row, the index of the latest row at or before it in its group where `mask` holds, else -1."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    out = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(out >= first, out, -1)
