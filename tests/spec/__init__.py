"""Spec tests: one table of tiny cases per rule id, run through ``b12screen run``.

Recipe for a new case: add its input rows to the rule's ``*_LABS`` / ``*_PATIENTS`` /
``*_MEDICATIONS`` table under a new patient id named after the case (``R5_same_day``),
and one row to the rule's ``*_EXPECTED`` table with the ``patients.parquet`` columns it
must have. Say why in a ``# comment`` when the case is a boundary. Each module writes all
its tables as one extract, runs the CLI once (``--as-of 2026-10-31``), and every expected
row becomes its own test, named ``test_R<n>_...[<patient id>]``. See ``helpers`` for the
table syntax.
"""
