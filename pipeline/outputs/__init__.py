"""Outputs: everything a run writes, from a finished ``pipeline.state.RunState``.

``write`` assembles the run folder (atomically, via ``run_folder``) and its manifest;
``tables`` writes the typed Parquet and CSV files; ``worklists`` builds the lab manager's
lists, ``worklist_state`` their month-on-month state and ``xlsx`` the workbook; ``measures``
defines the QI measures, ``disclosure`` decides suppression and ``published`` holds the one
decision every shareable file reads; ``report`` and ``svg`` draw report.html, ``trend``
reads earlier runs; ``validate_report`` is the ``validate`` command's folder.
"""
