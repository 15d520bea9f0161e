"""Engines run the shared steps and the rules over an extract: ``pandas_engine`` in one
process, ``dask_engine`` on a Dask cluster. Both fill the same ``pipeline.state.RunState``,
which ``pipeline.outputs`` then writes; neither engine imports the other.
"""

from __future__ import annotations

from pipeline.engines.pandas_engine import run_classification
from pipeline.engines.steps import prepare, warn_empty_window
from pipeline.state import Progress, RunOptions, RunState

__all__ = ["screen"]


def screen(options: RunOptions, progress: Progress | None = None) -> RunState:
    """Read, validate and classify with the chosen engine; the outputs are written apart."""
    if options.engine == "dask":
        from pipeline.engines.dask_engine import screen_dask  # Dask loads only when asked

        state = screen_dask(options, progress)
    else:
        state = prepare(options, progress)
        run_classification(state, progress)
    warn_empty_window(state)
    return state
