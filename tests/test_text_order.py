"""The cohort's sort by integer keys of the ids' bytes gives exactly Arrow's string order
(the order of ``patients.parquet``), whatever the ids look like."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.classify import text_order

IDS = st.one_of(
    st.text(alphabet="0123456789", min_size=0, max_size=12),  # the usual pseudonyms
    st.text(alphabet="AaBb09-_ é\u00e9\u0000", min_size=0, max_size=30),  # and the rest
)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(IDS, max_size=60), large=st.booleans(), sliced=st.integers(0, 3))
def test_text_order_is_arrows_string_order(ids: list[str], large: bool, sliced: int) -> None:
    text = pa.array(ids, pa.large_string() if large else pa.string())[sliced:]
    np.testing.assert_array_equal(text_order(text), pc.sort_indices(text).to_numpy())
