"""``pipeline.kernels.hashing.factorize_keys``: the bucketed factorisation of the ids'
integer keys gives exactly ``pd.factorize``'s codes and values (numbered in order of first
appearance, which the cohort's ids and every table built on them rely on)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kernels import hashing
from pipeline.kernels.arrow import text_codes
from pipeline.kernels.hashing import factorize_keys

KEYS = st.lists(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**64 - 1]),
                          st.integers(0, 5)), max_size=200)


def _assert_as_pandas(keys: np.ndarray) -> None:
    codes, positions = factorize_keys(keys)
    expected, values = pd.factorize(keys)
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(keys[positions], values)
    np.testing.assert_array_equal(positions, np.sort(positions))  # each value's first place


@settings(max_examples=200, deadline=None)
@given(keys=KEYS)
def test_factorize_keys_in_buckets_is_pandas_factorize(keys: list[int]) -> None:
    with mock.patch.object(hashing, "BUCKETS_FROM", 0):  # the buckets on small keys too
        _assert_as_pandas(np.array(keys, dtype=np.uint64))


@pytest.mark.parametrize("distinct", [7, 300_000, 2_000_000], ids=["few", "some", "most"])
def test_factorize_keys_on_millions_of_ids(distinct: int) -> None:
    rng = np.random.default_rng(11)
    ids = rng.integers(0, distinct, hashing.BUCKETS_FROM + 12_345).astype(np.uint64)
    _assert_as_pandas(ids * np.uint64(0x100000001B3))  # spread over the high bits too


def test_text_codes_in_buckets_keep_missing_cells_out() -> None:
    """Missing ids take no code and no value, wherever the first one falls."""
    text = pa.array([None, "0042", "0007", None, "0042", "", "0007", "9"])
    with mock.patch.object(hashing, "BUCKETS_FROM", 0):
        codes, values = text_codes(text)
    assert codes.tolist() == [-1, 0, 1, -1, 0, 2, 1, 3]
    assert values.to_pylist() == ["0042", "0007", "", "9"]
