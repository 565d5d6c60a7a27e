"""The numpy helpers behind token kinds equal the plain numpy they replace (speed only)."""

from __future__ import annotations

import numpy as np
import pytest

from vlmctl.collate.labels import _or_rows, isin


@pytest.mark.parametrize("n_values", [1, 5, 16, 17, 60])
def test_isin_equals_numpy_isin_for_few_and_many_ids(n_values):
    rng = np.random.default_rng(n_values)
    for _ in range(50):
        arr = rng.integers(-5, 700, (int(rng.integers(1, 9)), int(rng.integers(1, 120))))
        values = rng.choice(600, size=n_values, replace=False).astype(np.int64)
        assert np.array_equal(isin(arr, values), np.isin(arr, values))


def test_isin_with_negative_or_huge_ids_falls_back_to_numpy():
    arr = np.array([[-3, 0, 5, 1 << 23]])
    values = np.array([-3, *range(100, 120), 1 << 23])
    assert isin(arr, values).tolist() == [[True, False, False, True]]


def test_or_rows_equals_logical_or_at_with_repeated_rows():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, width, k = int(rng.integers(1, 6)), int(rng.integers(1, 50)), int(rng.integers(1, 10))
        rows = np.sort(rng.integers(0, n, k))
        hit = rng.random((k, width)) < 0.3
        expected = rng.random((n, width)) < 0.2
        got = expected.copy()
        np.logical_or.at(expected, rows, hit)
        _or_rows(got, rows, hit)
        assert np.array_equal(got, expected)
