"""Pure, vectorised rule functions. Each rule id R1-R13 is implemented in exactly one place:

- ``bands``: R1 (total B12 bands), R2 (active B12 bands), R3 (censored intervals), and the
  MMA band used by R5.
- ``index``: R4 (index test), R5 (MMA resolution), R6 (status), R7 (needs MMA).
- ``actions``: R8 (supplementation), R9 (regimen), R10 (metformin), R11 (retest),
  R12 (urgent review), R13 (paediatric).

Thresholds are always arguments, taken from the rules profile by ``classify``, which builds
the cohort (one row per patient), applies the rules in order and asks ``reasons`` for each
patient's sentence: a table of one clause per rule id.
"""
