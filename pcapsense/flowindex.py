"""Flow-key hash -> slot lookup as sorted numpy arrays, so a batch finds all its flows in one vector step.

A Python dict keyed by 5-tuples costs a tuple build and a lookup per flow per batch, which dominates when
tens of thousands of flows are active at once. Here keys are 64-bit hashes kept sorted; the flow table checks
every hit against the exact key it stores, and the rare keys whose hash collides with another live flow's are
kept, exactly, in a small dict.
"""

from __future__ import annotations

import numpy as np


class FlowIndex:
    def __init__(self) -> None:
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._slots = np.zeros(0, dtype=np.int64)
        self.overflow: dict[tuple[int, ...], int] = {}

    def __len__(self) -> int:
        return len(self._hashes) + len(self.overflow)

    def _positions(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(self._hashes, hashes), max(len(self._hashes) - 1, 0))
        hit = self._hashes[pos] == hashes if len(self._hashes) else np.zeros(len(hashes), dtype=bool)
        return pos, hit

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Slot of each hash, -1 where absent."""
        pos, hit = self._positions(hashes)
        return np.where(hit, self._slots[pos] if len(self._slots) else -1, -1)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        return self._positions(hashes)[1]

    def add(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        """Insert hashes that are absent and distinct from each other."""
        order = np.argsort(hashes)
        hashes, slots = hashes[order], slots[order]
        pos = np.searchsorted(self._hashes, hashes)
        self._hashes = np.insert(self._hashes, pos, hashes)
        self._slots = np.insert(self._slots, pos, slots)

    def assign(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        """Point existing hashes at new slots (a reused tuple's new connection)."""
        pos, hit = self._positions(hashes)
        self._slots[pos[hit]] = slots[hit]

    def discard(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        """Remove entries that still map these hashes to these slots."""
        if not len(self._hashes) or not len(hashes):
            return
        pos, hit = self._positions(hashes)
        hit &= self._slots[pos] == slots
        keep = np.ones(len(self._hashes), dtype=bool)
        keep[pos[hit]] = False
        self._hashes, self._slots = self._hashes[keep], self._slots[keep]
