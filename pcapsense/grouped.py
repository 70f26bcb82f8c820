"""Grouped scans over sorted arrays: the vector form of "for each flow, walk its packets in order".

Rows are sorted so that each group (a flow, or a flow direction) is contiguous and in frame order; these
helpers then compute per-row running values without a Python loop per packet. The group structure is computed
once per sort order (`Groups.of`) and shared by every scan over that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG = np.iinfo(np.int64).min // 4  # "nothing yet": below any real value, safe to add small offsets to
_SPAN = 2**42  # every grouped value must lie in (-2**41, 2**41); rows per batch stay below 2**20


@dataclass(frozen=True)
class Groups:
    """Contiguous groups of equal keys: where each group starts and ends, and each row's group and group start."""

    starts: np.ndarray  # first row of each group
    ends: np.ndarray  # last row of each group
    gid: np.ndarray  # group number of each row
    first: np.ndarray  # first row of each row's group

    @classmethod
    def of(cls, sorted_keys: np.ndarray) -> Groups:
        n = len(sorted_keys)
        is_start = np.ones(n, dtype=bool)
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=is_start[1:])
        starts = np.flatnonzero(is_start)
        gid = np.cumsum(is_start) - 1
        return cls(starts, np.append(starts[1:] - 1, n - 1) if n else starts, gid, starts[gid])

    @property
    def sizes(self) -> np.ndarray:
        return self.ends - self.starts + 1


def stable_order(keys: np.ndarray) -> np.ndarray:
    """np.argsort(keys, kind="stable") for non-negative integer keys below 2**32, as 16-bit radix passes: numpy
    radix-sorts 16-bit integers in linear time but sorts wider ones by comparison, several times slower."""
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = keys[order] >> 16
    if high.any():
        order = order[np.argsort(high.astype(np.uint16), kind="stable")]
    return order


def cumsum(values: np.ndarray, groups: Groups) -> np.ndarray:
    """Inclusive running sum within each group."""
    total = np.cumsum(values)
    return total - (total - values)[groups.first]


def cummax(values: np.ndarray, groups: Groups) -> np.ndarray:
    """Inclusive running maximum within each group; values must lie within +-2**41 (or be NEG)."""
    lift = groups.gid * _SPAN
    lifted = np.maximum(values, -(2**41) + 1) + lift
    out = np.maximum.accumulate(lifted) - lift
    return np.where(out <= -(2**41) + 1, NEG, out)


def previous(values: np.ndarray, groups: Groups, carry: np.ndarray) -> np.ndarray:
    """The value of the previous row in the same group; for a group's first row, that group's `carry`."""
    out = np.empty_like(values)
    out[1:] = values[:-1]
    out[groups.starts] = carry
    return out


def latest(candidates: np.ndarray, at: np.ndarray, groups: Groups, *, inclusive: bool) -> np.ndarray:
    """For each row in `at`, the latest row of the sorted `candidates` before it (or at it, when `inclusive`)
    in the same group, else -1. Costs a search per row of `at`: the scan for when `at` is a few rows."""
    i = np.searchsorted(candidates, at, side="right" if inclusive else "left") - 1
    found = candidates[i] if len(candidates) else i
    return np.where((i >= 0) & (found >= groups.first[at]), found, -1)


def last_index_where(mask: np.ndarray, groups: Groups) -> np.ndarray:
    """For each row, the index of the latest row at or before it in its group where `mask` holds, else -1."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    out = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(out >= groups.first, out, -1)
