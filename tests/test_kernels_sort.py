"""``pipeline.kernels.sort.stable_order``: the radix sort gives exactly numpy's stable
order (``np.lexsort``) for integer and boolean keys of every width and sign, with ties in
position order -- the order the classification, the cohort and the worklists rely on."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kernels import sort
from pipeline.kernels.arrow import text_order
from pipeline.kernels.sort import stable_order

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.bool_]


def _keys(dtype: type, n: int) -> st.SearchStrategy[np.ndarray]:
    """``n`` keys of ``dtype`` over its whole range, few distinct values likely (ties)."""
    if dtype is np.bool_:
        return st.lists(st.booleans(), min_size=n, max_size=n).map(
            lambda v: np.array(v, dtype=np.bool_))
    info = np.iinfo(dtype)
    value = st.one_of(st.integers(info.min, info.max), st.sampled_from([info.min, 0, info.max]))
    return st.lists(value, min_size=n, max_size=n).map(lambda v: np.array(v, dtype=dtype))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(0, 80), n_keys=st.integers(1, 3))
def test_stable_order_is_numpys_lexsort(data: st.DataObject, n: int, n_keys: int) -> None:
    keys = [data.draw(_keys(data.draw(st.sampled_from(DTYPES)), n)) for _ in range(n_keys)]
    with mock.patch.object(sort, "RADIX_FROM", 0):  # the radix passes on small keys too
        np.testing.assert_array_equal(stable_order(*keys), np.lexsort(keys[::-1]))


@pytest.mark.parametrize("spread", [3, 70_000, 2**40, 2**63], ids=["few", "two-digits",
                                                                    "wide", "full-range"])
def test_stable_order_on_many_keys(spread: int) -> None:
    rng = np.random.default_rng(7)
    key = rng.integers(-spread // 2 if spread < 2**62 else -(2**62), spread // 2 + 1,
                       200_000, dtype=np.int64)
    np.testing.assert_array_equal(stable_order(key), np.argsort(key, kind="stable"))


def test_stable_order_leaves_other_kinds_to_numpy() -> None:
    values = np.array([2.5, -1.0, 2.5, np.nan, 0.0] * 2000)
    np.testing.assert_array_equal(stable_order(values), np.argsort(values, kind="stable"))
    with pytest.raises(ValueError, match="at least one key"):
        stable_order()


@pytest.mark.parametrize("ids", [
    [f"{i:08d}" for i in np.random.default_rng(3).permutation(20_000)],  # one length
    [f"P{i:011d}" for i in np.random.default_rng(4).permutation(9_000)] * 2,  # ties
    [f"{i}" for i in np.random.default_rng(5).permutation(9_000)],  # lengths differ
], ids=["eight-digits", "twelve-bytes-repeated", "lengths-differ"])
def test_text_order_of_many_ids_is_arrows_order(ids: list[str]) -> None:
    text = pa.array(ids)
    np.testing.assert_array_equal(text_order(text), pc.sort_indices(text).to_numpy())
