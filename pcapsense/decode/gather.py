"""Vectorised field access into a chunk of packet bytes.

Every field of every packet is read with one numpy fancy-index per byte, so decoding costs a few nanoseconds
per field instead of a Python call per packet. Positions past the chunk are clamped; callers decide validity
with their own bounds masks (a clamped read is garbage and must be masked out).
"""

from __future__ import annotations

import numpy as np


class Gather:
    """Big-endian integer reads at arbitrary per-packet positions of one byte buffer."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data if len(data) else np.zeros(1, dtype=np.uint8)

    def _at(self, pos: np.ndarray) -> np.ndarray:
        return np.take(self.data, pos, mode="clip")

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self._at(pos).astype(np.int64)

    def be16(self, pos: np.ndarray) -> np.ndarray:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def be32(self, pos: np.ndarray) -> np.ndarray:
        return (self.be16(pos) << 16) | self.be16(pos + 2)

    def be48(self, pos: np.ndarray) -> np.ndarray:
        return (self.be16(pos) << 32) | self.be32(pos + 2)

    def be64(self, pos: np.ndarray) -> np.ndarray:
        hi = self.be32(pos).astype(np.uint64)
        return (hi << np.uint64(32)) | self.be32(pos + 4).astype(np.uint64)

    def le32(self, pos: np.ndarray) -> np.ndarray:
        return self.u8(pos) | (self.u8(pos + 1) << 8) | (self.u8(pos + 2) << 16) | (self.u8(pos + 3) << 24)
