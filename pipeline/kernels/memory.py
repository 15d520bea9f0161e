"""Keeping the process's memory close to what a run holds: large extracts free big
buffers step by step, and both allocators in play would otherwise keep them."""

from __future__ import annotations

import ctypes

import pyarrow as pa

__all__ = ["trim_heap", "use_prompt_memory_pool"]


def use_prompt_memory_pool() -> None:
    """Arrow's jemalloc pool, returning freed memory to the system at once: a run frees
    large intermediate columns step by step, and the default pool keeps them, which
    raised peak memory by a fifth on large extracts. Kept as is where jemalloc is absent."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowException):
        pass


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing).

    Each step frees many large numpy buffers, whose pages glibc keeps in its arenas: at
    10M rows over a gigabyte, which the next step's peak memory would sit on. Called
    between steps; cheap, and it changes no output.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols, libc's among them
    except (OSError, AttributeError, TypeError):
        pass
