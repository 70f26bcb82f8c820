"""DistinctCount: exact below its limit, a HyperLogLog estimate above, the same whatever the batching."""

from __future__ import annotations

import numpy as np

from pcapsense.distinct import EXACT_LIMIT, DistinctCount


def _fed(keys: np.ndarray, values: np.ndarray, splits: int, seed: int = 0) -> DistinctCount:
    """A counter fed the (key, value) rows in `splits` random-sized batches of a shuffled order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    cuts = np.sort(rng.choice(np.arange(1, len(keys)), splits - 1, replace=False)) if splits > 1 else []
    counter = DistinctCount()
    for part in np.split(order, cuts):
        counter.add(keys[part], values[part])
    return counter


def test_exact_counts_ignore_repeats_across_batches() -> None:
    keys = np.array([1, 1, 1, 2, 2, 1, 3])
    values = np.array(["a", "b", "a", "a", "a", "b", "c"], dtype=object)
    counter = DistinctCount()
    for k, v in zip(keys, values, strict=True):
        counter.add(np.array([k]), np.array([v], dtype=object))
    assert [counter.count(k) for k in (1, 2, 3, 4)] == [(2, False), (1, False), (1, False), (0, False)]


def test_counts_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(1)
    # key 0: 3,000 distinct values (exact), key 1: 60,000 (estimated), both with repeats
    values = np.concatenate([rng.integers(0, 3_000, 20_000), 10**9 + rng.integers(0, 60_000, 200_000)])
    keys = np.concatenate([np.zeros(20_000, np.int64), np.ones(200_000, np.int64)])
    truth = [len(np.unique(values[keys == k])) for k in (0, 1)]
    results = {tuple(_fed(keys, values, splits, seed).count(k) for k in (0, 1))
               for splits, seed in ((1, 0), (7, 1), (300, 2))}
    assert len(results) == 1, results  # identical, exact and estimated alike
    (exact, exact_is_estimate), (estimate, is_estimate) = results.pop()
    assert (exact, exact_is_estimate) == (truth[0], False)
    assert is_estimate and abs(estimate - truth[1]) <= 0.05 * truth[1], (estimate, truth[1])


def test_the_limit_decides_exact_or_estimated() -> None:
    counter = DistinctCount()
    counter.add(np.full(EXACT_LIMIT, 5), np.arange(EXACT_LIMIT))
    assert counter.count(5) == (EXACT_LIMIT, False)
    counter.add(np.array([5]), np.array([EXACT_LIMIT]))
    n, estimated = counter.count(5)
    assert estimated and abs(n - (EXACT_LIMIT + 1)) <= 0.05 * EXACT_LIMIT


def test_estimates_hold_from_small_to_large_sets() -> None:
    for n in (5_000, 50_000, 1_000_000):
        counter = DistinctCount()
        counter.add(np.zeros(n, np.int64), np.arange(n) * 7919)
        estimate, estimated = counter.count(0)
        assert estimated and abs(estimate - n) <= 0.05 * n, (n, estimate)


def test_forgotten_keys_start_again() -> None:
    counter = DistinctCount()
    counter.add(np.array([1] * 5000 + [2] * 3), np.arange(5003))
    counter.forget([1, 2])
    assert counter.count(1) == (0, False) and counter.count(2) == (0, False)
    counter.add(np.array([1]), np.array([42]))
    assert counter.count(1) == (1, False)
