"""``pipeline.kernels.arrow`` and ``pipeline.kernels.memory``: the cohort's sort by integer
keys of the ids' bytes gives exactly Arrow's string order (the order of ``patients.parquet``),
whatever the ids look like; text buffers and cell edges read straight off Arrow's buffers
are the cells' own bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kernels import arrow
from pipeline.kernels.arrow import (
    cell_edges,
    take_text,
    text_buffers,
    text_codes,
    text_order,
    used_codes,
)
from pipeline.kernels.memory import trim_heap, use_prompt_memory_pool

IDS = st.one_of(
    st.text(alphabet="0123456789", min_size=0, max_size=12),  # the usual pseudonyms
    st.text(alphabet="AaBb09-_ é\u00e9\u0000", min_size=0, max_size=30),  # and the rest
)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(IDS, max_size=60), large=st.booleans(), sliced=st.integers(0, 3))
def test_text_order_is_arrows_string_order(ids: list[str], large: bool, sliced: int) -> None:
    text = pa.array(ids, pa.large_string() if large else pa.string())[sliced:]
    np.testing.assert_array_equal(text_order(text), pc.sort_indices(text).to_numpy())



@settings(max_examples=200, deadline=None)
@given(data=st.data(), large=st.booleans(), sliced=st.integers(0, 3), ids=st.one_of(
    st.lists(st.one_of(st.none(), IDS), max_size=40),
    st.integers(1, 9).flatmap(lambda n: st.lists(st.text("0123456789", min_size=n,  # one length
                                                         max_size=n), max_size=40))))
def test_take_text_is_arrows_take(data: st.DataObject, ids: list[str | None], large: bool,
                                  sliced: int) -> None:
    """Cells of one length are taken as fixed-size cells; any other text as Arrow does."""
    text = pa.array(ids, pa.large_string() if large else pa.string())[sliced:]
    positions = np.array(data.draw(st.lists(st.integers(0, max(len(text) - 1, 0)),
                                            max_size=50 if len(text) else 0)), dtype=np.intp)
    taken = take_text(text, positions)
    assert taken.type == text.type
    assert taken.equals(text.take(pa.array(positions, pa.int64())))


def test_take_text_of_millions_of_ids_of_one_length() -> None:
    ids = pa.array([f"{i:08d}" for i in np.random.default_rng(2).permutation(200_000)])
    order = text_order(ids)
    assert take_text(ids, order).equals(ids.take(pa.array(order)))
    assert take_text(ids, order).to_pylist() == sorted(ids.to_pylist())

@pytest.mark.parametrize(("cells", "firsts", "lasts"), [
    (["ab", "", "c", None, "=x "], b"ac=", b"bc "),
    ([], b"", b""),
    (["", None], b"", b""),
    (["µg"], "µ".encode()[:1], b"g"),
], ids=["mixed", "no-rows", "only-empty", "multibyte"])
@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
@pytest.mark.parametrize("per_slice", [None, 2], ids=["whole", "in-slices"])
def test_cell_edges_are_each_non_empty_cells_first_and_last_byte(
        cells: list, firsts: bytes, lasts: bytes, typ: pa.DataType, per_slice: int | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if per_slice:  # slices of a chunk, and a chunk split across slices, as at 10M cells
        monkeypatch.setattr(arrow, "EDGE_SLICE", per_slice)
    text = pa.array(cells, typ)
    chunked = pa.chunked_array([text[:1], text[1:]] if len(cells) > 1 else [text], typ)
    first, last = cell_edges(chunked)
    assert (first.tobytes(), last.tobytes()) == (firsts, lasts)


def test_text_buffers_of_a_slice_and_of_other_types() -> None:
    text = pa.array(["zero", "one", "two", "three"])[1:3]
    offsets, data = text_buffers(text)
    assert [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:], strict=True)] \
        == [b"one", b"two"]
    assert text_buffers(pa.array([1, 2])) is None
    assert cell_edges(pa.array([1.5])) is None


def test_prompt_pool_is_jemalloc_returning_memory_at_once() -> None:
    before = pa.default_memory_pool()
    try:
        use_prompt_memory_pool()
        expected = "jemalloc" if hasattr(pa, "jemalloc_memory_pool") else before.backend_name
        assert pa.default_memory_pool().backend_name == expected
        trim_heap()  # and giving the C heap back changes no value held
        assert pa.array(["kept"]).to_pylist() == ["kept"]
    finally:
        pa.set_memory_pool(before)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.one_of(st.none(), IDS), max_size=60), large=st.booleans(),
       sliced=st.integers(0, 3))
def test_text_codes_are_arrows_dictionary_encoding(ids: list[str | None], large: bool,
                                                  sliced: int) -> None:
    text = pa.array(ids, pa.large_string() if large else pa.string())[sliced:]
    found = text_codes(text)
    encoded = text.dictionary_encode()
    short = all(v is None or len(v.encode()) <= 8 and "\u0000" not in v for v in ids[sliced:])
    if not (short and len(text)):
        assert found is None
        return
    assert found is not None
    codes, values = found
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, pc.fill_null(encoded.indices, -1).to_numpy())
    assert values.equals(encoded.dictionary)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_merge_sorted_is_a_sort_of_every_streams_rows(data: st.DataObject) -> None:
    """Streams sorted by the keys, cut into blocks of any size (empty ones too), merge into
    the order one sort of all their rows gives, whatever rows each step holds."""
    from pipeline.kernels.arrow import merge_sorted

    n = data.draw(st.integers(0, 300))
    groups = data.draw(st.lists(st.one_of(st.none(), st.sampled_from(["b", "a", "é", ""])),
                                min_size=n, max_size=n))
    urgent = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    table = pa.table({"group": pa.array(groups, pa.string()),
                      "urgent": pa.array(urgent, pa.uint8()),
                      "id": pa.array([f"{i:04d}" for i in range(n)][::-1]),
                      "row": pa.array(range(n), pa.int64())})
    keys = [("group", "ascending"), ("urgent", "ascending"), ("id", "ascending")]
    expected = table.take(pc.sort_indices(table, sort_keys=keys))
    count = data.draw(st.integers(1, 6))
    which = np.array(data.draw(st.lists(st.integers(0, count - 1), min_size=n, max_size=n)),
                     dtype=np.int64)
    streams = []
    for k in range(count):
        part = table.filter(pa.array(which == k)) if n else table
        part = part.take(pc.sort_indices(part, sort_keys=keys))
        cuts = sorted(data.draw(st.lists(st.integers(0, part.num_rows), max_size=5)))
        edges = [0, *cuts, part.num_rows]
        streams.append([part.slice(a, b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    rows = data.draw(st.integers(1, 64))
    merged = list(merge_sorted(streams, keys, rows))
    got = pa.concat_tables(merged) if merged else table.slice(0, 0)
    assert got.equals(expected)


def test_merge_sorted_refuses_a_stream_out_of_order() -> None:
    from pipeline.kernels.arrow import merge_sorted

    keys = [("id", "ascending")]
    streams = [[pa.table({"id": ["b", "a"]})], [pa.table({"id": ["c"]})]]
    with pytest.raises(ValueError, match="not in the order"):
        list(merge_sorted(streams, keys))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.sampled_from(["b", "a", "c", None]), max_size=40),
       extra=st.lists(st.sampled_from(["z", "y", "x", "w"]), max_size=4, unique=True),
       narrow=st.booleans())
def test_used_codes_are_pandas_without_unused_categories(values: list[str | None],
                                                         extra: list[str],
                                                         narrow: bool) -> None:
    """Categories no row uses (before, among and after the used ones) are dropped and the
    codes renumbered in the categories' order, as ``remove_unused_categories`` does."""
    categories = extra[:2] + ["c", "a"] + extra[2:] + ["b"]
    column = pd.Categorical(values, categories=categories)
    codes = column.codes if narrow else column.codes.astype(np.int64)
    got, used = used_codes(codes, len(categories))
    want = column.remove_unused_categories()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.codes)
    assert list(np.asarray(categories)[used]) == list(want.categories)
