"""Making the next item of a stream while the current one is used: a producer whose work
(Arrow and numpy kernels) and a consumer whose work (an encoder, a compressor) both release
the GIL then run on two cores instead of taking turns on one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["made_ahead"]

T = TypeVar("T")


def made_ahead(items: Iterable[T]) -> Iterator[T]:
    """``items`` in order, each next one made on a helper thread while the caller works on
    the one before: at most two are held at once. ``items`` must not yield None. An error
    in making an item is raised where the caller asks for it."""
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1) as helper:
        pending = helper.submit(next, source, None)
        while (item := pending.result()) is not None:
            pending = helper.submit(next, source, None)
            yield item
