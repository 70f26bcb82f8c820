"""Bounded, vectorised per-key aggregation for detectors: counters and evidence that pile up batch by batch.

Mechanics every counting detector needs (the policy of what to count stays in the detector): rows reduced with
one groupby once enough are pending, stable integer ids for composite keys, and per-key time bins with the
busiest sliding window, all with hard bounds on the number of keys and rows kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import pandas as pd


class Accumulator:
    """Rows of a DataFrame that pile up batch by batch and are reduced, vectorised, once enough are pending.

    `reduce` maps the concatenation of the reduced state and the pending rows to the new reduced state (a
    groupby-sum, a per-key head, ...); it must be idempotent, so reducing early or late gives the same result.
    """

    def __init__(self, reduce: Callable[[pd.DataFrame], pd.DataFrame], pending_limit: int = 200_000) -> None:
        self.reduce = reduce
        self.pending_limit = pending_limit
        self.parts: list[pd.DataFrame] = []
        self.pending = 0

    def add(self, rows: pd.DataFrame) -> bool:
        """Queue rows; True when this call reduced the state."""
        self.parts.append(rows)
        self.pending += len(rows)
        if self.pending < self.pending_limit:
            return False
        self.frame()
        return True

    def frame(self) -> pd.DataFrame | None:
        """The reduced state (None before any row arrived)."""
        if len(self.parts) > 1 or self.pending:
            self.parts = [self.reduce(pd.concat(self.parts, ignore_index=True))]
            self.pending = 0
        return self.parts[0] if self.parts else None

    def keep(self, mask: Callable[[pd.DataFrame], np.ndarray]) -> None:
        """Reduce, then keep only the rows where `mask(frame)` holds."""
        frame = self.frame()
        if frame is not None:
            self.parts = [frame[mask(frame)].reset_index(drop=True)]


def sum_by(columns: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Sum every other column per key (counters)."""
    return lambda df: df.groupby(columns, sort=False, as_index=False).sum()


def head_by(columns: str | list[str], n: int, order: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Keep the first `n` rows per key after sorting by `order` (capped evidence)."""
    return lambda df: df.sort_values(order, kind="stable").groupby(columns, sort=False).head(n)


def factorize_rows(columns: Sequence[pd.Series | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A code per row of the equally long `columns`, equal for equal rows and numbered in order of first
    appearance, and the position of each code's first row. One factorize per column and one per combination of
    integer codes: much cheaper than hashing a tuple per row (a MultiIndex), which matters with string columns."""
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        column_codes, uniques = pd.factorize(column, use_na_sentinel=False)
        codes, _ = pd.factorize(codes * len(uniques) + column_codes)  # re-numbered: stays below len(codes) ** 2
    seen = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.r_[True, codes[1:] > seen[:-1]]) if len(codes) else codes  # where codes are new
    return codes, first


class KeyIds:
    """Stable int64 ids for composite keys (server:port, client -> server:port), so that every later reduction
    groups on one integer column instead of several object ones. Forgotten keys give their id up for good."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.ids: dict[tuple[object, ...], int] = {}
        self.keys: dict[int, tuple[object, ...]] = {}
        self.next_id = 0

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """The id of each row's key; keys not seen before get the next ids, in order of first appearance.

        The keys are looked up with map() (a loop in C): flows leave by the ten thousand at the end of a
        capture, each with a key of its own, and a Python loop over them was the largest cost left there."""
        codes, first = factorize_rows([df[column] for column in self.columns])
        uniques = list(zip(*(df[column].to_numpy()[first].tolist() for column in self.columns), strict=True))
        ids = np.fromiter(map(self.ids.get, uniques, repeat(-1)), dtype=np.int64, count=len(uniques))
        fresh = np.flatnonzero(ids < 0)
        ids[fresh] = np.arange(self.next_id, self.next_id + len(fresh))
        new, numbers = [uniques[i] for i in fresh.tolist()], ids[fresh].tolist()
        self.ids.update(zip(new, numbers, strict=True))
        self.keys.update(zip(numbers, new, strict=True))
        self.next_id += len(fresh)
        return ids[codes]

    def key(self, kid: int) -> tuple[object, ...]:
        return self.keys[kid]

    def forget(self, kids: np.ndarray) -> None:
        for kid in kids.tolist():
            self.ids.pop(self.keys.pop(kid))


@dataclass(frozen=True)
class Rank:
    """How windows are compared (a window's score is its channel sums @ `weights`) and which channels' events
    delimit the reported window."""

    weights: tuple[int, ...]
    span: tuple[str, ...]


@dataclass
class WindowedBins:
    """Per-key event counts in fixed time bins, and per key the busiest sliding window of a given length.

    Flow records leave the flow table out of time order (when they close, idle out or are evicted), so a running
    window cannot be kept: counts go into (key id, bin) rows, and windows are evaluated for all keys at once with
    one sort and one cumulative sum. Memory is bounded twice: beyond `max_keys` keys the ones with the least
    `weight` are dropped (the caller is told which, to forget them too), and beyond `max_rows` rows every key's
    best window so far is kept aside and bins older than two windows before the newest are folded away (a record
    arriving later for a folded bin is still counted, in a fresh bin); if every key is busy right now, the
    quieter half of the keys goes.
    """

    channels: tuple[str, ...]
    bin_s: float
    window_s: float
    ranks: dict[str, Rank]
    weight: tuple[str, ...]  # channels whose total decides which keys to drop first
    max_keys: int
    max_rows: int = 500_000
    dropped_keys: int = 0
    bins: Accumulator = field(init=False)
    totals: Accumulator = field(init=False)
    best: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bins = Accumulator(sum_by(["kid", "bin"]))
        self.totals = Accumulator(sum_by(["kid"]))

    @property
    def width(self) -> int:
        return max(1, round(self.window_s / self.bin_s))

    def add(self, kids: np.ndarray, times: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Add one row of channel counts per event (`kids`: key ids, `times`: seconds). Returns the ids of the
        keys dropped to respect the bounds (usually none)."""
        rows = pd.DataFrame(counts, columns=list(self.channels)).assign(
            kid=kids, bin=np.floor(times / self.bin_s).astype(np.int64))
        rows = sum_by(["kid", "bin"])(rows)
        self.totals.add(rows.drop(columns="bin"))
        if not self.bins.add(rows):
            return np.zeros(0, dtype=np.int64)
        dropped = [self._bound_keys(self.max_keys)]
        if len(self.bins.frame()) > self.max_rows:  # type: ignore[arg-type]
            self._fold()
        if len(self.bins.frame()) > self.max_rows:  # type: ignore[arg-type]
            dropped.append(self._bound_keys(len(self.totals.frame()) - 1))  # type: ignore[arg-type]
        return np.concatenate(dropped)

    def _bound_keys(self, limit: int) -> np.ndarray:
        """Beyond `limit` keys, keep the busiest `limit // 2` by `weight` and forget the others."""
        totals = self.totals.frame()
        if totals is None or len(totals) <= limit:
            return np.zeros(0, dtype=np.int64)
        order = np.argsort(-totals[list(self.weight)].sum(axis=1).to_numpy(), kind="stable")
        dropped = totals["kid"].to_numpy()[order[limit // 2 :]]
        for acc in (self.bins, self.totals):
            acc.keep(lambda f: ~np.isin(f["kid"].to_numpy(), dropped))
        self.best = {rank: best[~np.isin(best["kid"].to_numpy(), dropped)] for rank, best in self.best.items()}
        self.dropped_keys += len(dropped)
        return dropped

    def _fold(self) -> None:
        self.best = {rank: self.peaks(rank) for rank in self.ranks}
        newest = self.bins.frame()["bin"].max()  # type: ignore[index]
        self.bins.keep(lambda f: (f["bin"] > newest - 2 * self.width).to_numpy())

    def peaks(self, rank: str) -> pd.DataFrame:
        """Per key, the window with the highest score for `rank`: `kid`, `score`, the channel sums of that
        window and its `start`/`end` in seconds (as the rank's span channels delimit it)."""
        frame = self.bins.frame()
        columns = ["kid", "score", *self.channels, "start", "end"]
        if frame is None or not len(frame):
            return self.best.get(rank, pd.DataFrame(columns=columns))
        f = frame.sort_values(["kid", "bin"], kind="stable").reset_index(drop=True)
        kid, bins = f["kid"].to_numpy(), f["bin"].to_numpy()
        rel = bins - bins.min()
        pos = (np.r_[0, np.cumsum(kid[1:] != kid[:-1])]) * (int(rel.max()) + self.width + 1) + rel  # keys apart
        mat = f[list(self.channels)].to_numpy(np.int64)
        cum = np.vstack([np.zeros((1, mat.shape[1]), dtype=np.int64), np.cumsum(mat, axis=0)])
        n = len(f)
        start = np.searchsorted(pos, pos - self.width + 1)
        sums = cum[1:] - cum[start]
        spec = self.ranks[rank]
        score = sums @ np.array(spec.weights)
        order = np.lexsort((-score, kid))  # per key: best score first, earliest window on ties
        top = order[np.r_[True, kid[order][1:] != kid[order][:-1]]]
        # the window as the span channels delimit it: first/last bin inside it where they counted something
        active = mat[:, np.isin(self.channels, spec.span)].any(axis=1)
        idx = np.arange(n)
        last_active = np.maximum.accumulate(np.where(active, idx, -1))
        next_active = np.minimum.accumulate(np.where(active, idx, n)[::-1])[::-1]
        lo = np.where(next_active[start[top]] <= top, next_active[start[top]], top)
        hi = np.where(last_active[top] >= start[top], last_active[top], top)
        result = pd.DataFrame(sums[top], columns=list(self.channels)).assign(
            kid=kid[top], score=score[top], start=np.round(bins[lo] * self.bin_s, 6),
            end=np.round((bins[hi] + 1) * self.bin_s, 6))
        if rank in self.best and len(self.best[rank]):
            both = pd.concat([self.best[rank], result], ignore_index=True)
            result = both.sort_values("score", ascending=False, kind="stable").drop_duplicates("kid")
        return result[columns].reset_index(drop=True)

    def rows(self, kid: int) -> pd.DataFrame:
        """The (still unfolded) bins of one key, in time order."""
        frame = self.bins.frame()
        if frame is None:
            return pd.DataFrame(columns=["kid", "bin", *self.channels])
        return frame[frame["kid"] == kid].sort_values("bin")

    def total(self, kid: int) -> dict[str, int]:
        """Channel totals of one key over the whole capture."""
        frame = self.totals.frame()
        row = frame.loc[frame["kid"] == kid, list(self.channels)].sum()  # type: ignore[union-attr,index]
        return {c: int(row[c]) for c in self.channels}
