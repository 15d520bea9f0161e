"""Ingest: every input row read, checked and put into canonical form, or accounted for.

``read`` (files, folders, globs; CSV records split by ``csv_records``; Parquet typed or not;
a format's columns and codes mapped to the canonical names) → ``validate`` (pandera checks,
one reason code per failure, the codes in ``reason_codes``; rejected, skipped and duplicate
rows counted) → ``harmonise`` (codes to analytes, units converted, censored results, dates,
medication classes). Each function works on whole columns, parsing each distinct value once.
"""
