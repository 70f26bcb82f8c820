"""Distinct values per key, exact while few and a HyperLogLog estimate beyond, whatever the batching.

A detector asks "how many distinct sources did this server:port see?" of a spoofed flood with a million sources
as well as of a handful of clients. Exact counting keeps one 64-bit hash per (key, value); a key that passes
EXACT_LIMIT distinct values moves to a HyperLogLog sketch of 2**HLL_BITS one-byte registers (4 KiB, ~1.6 %
standard error: Flajolet et al., "HyperLogLog", 2007). Registers are maxima, so a sketch does not depend on the
order or the batches its values came in, and a key is counted exactly precisely when its final number of
distinct values is within the limit: counts never depend on how flow records were split into deliveries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

EXACT_LIMIT = 4096  # distinct values a key is counted exactly up to (32 KiB of hashes)
HLL_BITS = 12  # 4096 registers: standard error 1.04 / sqrt(4096) = 1.6 %
_REGISTERS = 1 << HLL_BITS
_REST_BITS = 64 - HLL_BITS
_POWERS = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))  # 2**0 .. 2**63


def value_hashes(values: np.ndarray | pd.Series) -> np.ndarray:
    """Stable 64-bit hashes of any values (pandas' hash: the same value hashes alike in every run)."""
    return pd.util.hash_array(np.asarray(values, dtype=object))


def _add_to_sketch(registers: np.ndarray, hashes: np.ndarray) -> None:
    """HyperLogLog update: the top bits pick a register, which keeps the largest position of the first 1-bit
    seen in the remaining bits."""
    index = (hashes >> np.uint64(_REST_BITS)).astype(np.intp)
    rest = hashes & np.uint64((1 << _REST_BITS) - 1)
    bit_length = np.searchsorted(_POWERS, rest, side="right")  # exact, unlike a float log2
    np.maximum.at(registers, index, (_REST_BITS - bit_length + 1).astype(np.uint8))


def _estimate(registers: np.ndarray) -> int:
    """The HyperLogLog estimate with its small-range (linear counting) correction."""
    m = _REGISTERS
    raw = (0.7213 / (1 + 1.079 / m)) * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return round(m * math.log(m / zeros))
    return round(raw)


class DistinctCount:
    """Distinct values per integer key: exact up to EXACT_LIMIT, estimated beyond (see the module docstring)."""

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        self.exact_limit = exact_limit
        self._keys = np.zeros(0, dtype=np.int64)  # exact (key, hash) pairs, unique, sorted by key then hash
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._sketches: dict[int, np.ndarray] = {}

    def add(self, keys: np.ndarray, values: np.ndarray | pd.Series) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        hashes = value_hashes(values)
        if self._sketches:
            sketched = np.isin(keys, np.fromiter(self._sketches, np.int64, len(self._sketches)))
            for key in np.unique(keys[sketched]).tolist():
                _add_to_sketch(self._sketches[key], hashes[keys == key])
            keys, hashes = keys[~sketched], hashes[~sketched]
        self._merge(np.concatenate([self._keys, keys]), np.concatenate([self._hashes, hashes]))

    def _merge(self, keys: np.ndarray, hashes: np.ndarray) -> None:
        order = np.lexsort((hashes, keys))
        keys, hashes = keys[order], hashes[order]
        new = np.ones(len(keys), dtype=bool)
        new[1:] = (keys[1:] != keys[:-1]) | (hashes[1:] != hashes[:-1])
        keys, hashes = keys[new], hashes[new]
        found, counts = np.unique(keys, return_counts=True)
        over = found[counts > self.exact_limit]
        for key in over.tolist():  # a key past the limit moves to a sketch, its exact hashes first
            registers = np.zeros(_REGISTERS, dtype=np.uint8)
            _add_to_sketch(registers, hashes[keys == key])
            self._sketches[key] = registers
        if len(over):
            keep = ~np.isin(keys, over)
            keys, hashes = keys[keep], hashes[keep]
        self._keys, self._hashes = keys, hashes

    def count(self, key: int) -> tuple[int, bool]:
        """(distinct values of `key`, whether that is an estimate)."""
        if key in self._sketches:
            return _estimate(self._sketches[key]), True
        lo, hi = np.searchsorted(self._keys, [key, key + 1])
        return int(hi - lo), False

    def forget(self, keys: Iterable[int]) -> None:
        """Drop keys (their state goes; a key seen again starts from zero)."""
        gone = np.fromiter(keys, np.int64)
        for key in gone.tolist():
            self._sketches.pop(key, None)
        keep = ~np.isin(self._keys, gone)
        self._keys, self._hashes = self._keys[keep], self._hashes[keep]
