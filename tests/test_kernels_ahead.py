"""``pipeline.kernels.ahead.made_ahead``: the same items in the same order, the next one
made on a helper thread, an error raised where the item is asked for."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pipeline.kernels.ahead import made_ahead


def test_items_in_order_the_next_made_while_the_current_is_used() -> None:
    made: list[int] = []
    threads: set[int] = set()

    def items() -> Iterator[int]:
        for i in range(5):
            threads.add(threading.get_ident())
            made.append(i)
            yield i

    seen = []
    for item in made_ahead(items()):
        seen.append(item)
        # when the caller holds item i, item i + 1 is made (or being made), never i + 2
        assert len(made) <= item + 2
    assert seen == [0, 1, 2, 3, 4]
    assert threading.get_ident() not in threads


def test_an_error_in_making_an_item_reaches_the_caller() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("bad group")

    got = made_ahead(items())
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad group"):
        next(got)


def test_nothing_to_make() -> None:
    assert list(made_ahead(iter([]))) == []
