"""Spec tables for R8-R13: supplementation, regimen, metformin, retest, urgent, paediatric.

Every case is one patient (named after the case) in ONE extract of labs, patients and
medications, run once through ``b12screen run --as-of 2026-10-31``. A test on
2026-10-03 is 28 days old; 2026-08-02 is exactly 90 days before the as-of date.

Revision 2 changed these existing rows' expected values (each says so beside it):
R8_bariatric_and_ileal (ileal resection now comes first), R9_neuro_ileal and
R9_ileal_bariatric (not deficient: prevention), R9_bariatric_deficient (its IM option
carries the potassium note), R11_repeat_course (a test a month in is not the check),
R12_treated_since_ended (a lapsed course is untreated again) and R12_indeterminate_neuro
(indeterminate with neurological symptoms is urgent).
"""

# ruff: noqa: E501 - the case tables are data, aligned so each column reads down the page

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_rules

from .helpers import (
    assert_every_case_checked,
    cases,
    check,
    read_patients,
    rows_of,
    run_cli,
)

# ------------------------------------------------------------------------------ R8
R8_LABS = """
    patient_id             | collected_at | test_code | result | unit
    R8_deficient           | 2026-10-03   | B12       | 150    | ng/L
    R8_deficient_on_oral   | 2026-10-03   | B12       | 150    | ng/L
    R8_deficient_on_inj    | 2026-10-03   | B12       | 150    | ng/L
    R8_deficient_stopped   | 2026-10-03   | B12       | 150    | ng/L
    R8_unlikely            | 2026-10-03   | B12       | 400    | ng/L
    R8_bariatric           | 2026-10-03   | B12       | 400    | ng/L
    R8_deficient_and_vegan | 2026-10-03   | B12       | 150    | ng/L
    R8_deficient_on_combination | 2026-10-03 | B12     | 150    | ng/L
"""
R8_PATIENTS = """
    patient_id              | diet       | bariatric_surgery | crohns_disease | ileal_resection_cm
    R8_unlikely             | omnivore   | no                | no             |
    R8_bariatric            | omnivore   | yes               | no             |
    R8_bariatric_Y          |            | Y                 |                |
    R8_ileal_25             |            |                   |                | 25
    R8_ileal_20             |            |                   |                | 20      # not > 20
    R8_crohns_25            |            |                   | TRUE           | 25
    R8_crohns_no_resection  |            |                   | true           |
    R8_vegan                | vegan      |                   |                |
    R8_vegetarian           | Vegetarian |                   |                |
    R8_omnivore             | omnivore   |                   |                |
    R8_diet_unknown         |            |                   |                |
    R8_bariatric_on_b12     |            | 1                 |                |
    R8_deficient_and_vegan  | vegan      |                   |                |
    R8_bariatric_and_ileal  |            | yes               |                | 30
    R8_ileal_and_diet       | vegan      |                   |                | 30
"""
R8_MEDICATIONS = """
    patient_id           | medication                         | start_date | end_date
    R8_deficient_on_oral | Cyanocobalamin 1mg tablets         | 2026-10-10 |
    R8_deficient_on_inj  | Hydroxocobalamin 1mg/1ml injection | 2026-01-01 |
    R8_deficient_stopped | Cyanocobalamin 1mg tablets         | 2025-01-01 | 2025-06-30
    R8_bariatric_on_b12  | Vitamin B12 1000 microgram tablets | 2024-01-01 |
    R8_deficient_on_combination | Metformin 500 mg + methylcobalamin 500 micrograms | 2026-01-01 |
"""
R8_EXPECTED = """
    patient_id                  | needs_supplementation | supplementation_reason | on_b12_treatment | on_b12_combination
    R8_deficient                | T                     | deficiency             | F                | F
    R8_deficient_on_oral        | F                     |                        | T                | F
    R8_deficient_on_inj         | F                     |                        | T                | F
    R8_deficient_stopped        | T                     | deficiency             | F                | F
    R8_unlikely                 | F                     |                        | F                | F
    R8_bariatric                | T                     | bariatric_surgery      | F                | F
    R8_bariatric_Y              | T                     | bariatric_surgery      | F                | F
    R8_ileal_25                 | T                     | ileal_resection        | F                | F
    R8_ileal_20                 | F                     |                        | F                | F
    R8_crohns_25                | T                     | ileal_resection        | F                | F
    R8_crohns_no_resection      | F                     |                        | F                | F
    R8_vegan                    | T                     | diet                   | F                | F
    R8_vegetarian               | T                     | diet                   | F                | F
    R8_omnivore                 | F                     |                        | F                | F
    R8_diet_unknown             | F                     |                        | F                | F
    R8_bariatric_on_b12         | F                     |                        | T                | F
    R8_deficient_and_vegan      | T                     | deficiency             | F                | F   # first in SPEC order
    R8_bariatric_and_ileal      | T                     | ileal_resection        | F                | F   # rev 2: ileal first (was bariatric_surgery)
    R8_ileal_and_diet           | T                     | ileal_resection        | F                | F
    R8_deficient_on_combination | T                     | deficiency             | F                | T   # 500 µg in metformin is not treatment
"""

# ------------------------------------------------------------------------------ R9
R9_LABS = """
    patient_id                 | collected_at | test_code | result | unit
    R9_child_deficient         | 2026-10-03   | B12       | 150    | ng/L
    R9_child_everything        | 2026-10-03   | B12       | 150    | ng/L
    R9_neuro_deficient         | 2026-10-03   | B12       | 150    | ng/L
    R9_neuro_ileal             | 2026-10-03   | B12       | 400    | ng/L
    R9_ileal_bariatric         | 2026-10-03   | B12       | 400    | ng/L
    R9_ileal_deficient         | 2026-10-03   | B12       | 150    | ng/L
    R9_bariatric_deficient     | 2026-10-03   | B12       | 150    | ng/L
    R9_deficient_vegan         | 2026-10-03   | B12       | 150    | ng/L
    R9_deficient_no_record     | 2026-10-03   | B12       | 150    | ng/L
    R9_vegan_unlikely          | 2026-10-03   | B12       | 400    | ng/L
    R9_neuro_not_needed        | 2026-10-03   | B12       | 400    | ng/L
    R9_deficient_on_b12        | 2026-10-03   | B12       | 150    | ng/L
    R9_age_16_deficient        | 2026-10-03   | B12       | 150    | ng/L
    R9_vegan_child_600         | 2026-10-03   | B12       | 600    | ng/L
    R9_vegan_neuro_600         | 2026-10-03   | B12       | 600    | ng/L
    R9_vegetarian_indeterminate| 2026-10-03   | B12       | 250    | ng/L
    R9_child_ileal_600         | 2026-10-03   | B12       | 600    | ng/L
    R9_bariatric_600           | 2026-10-03   | B12       | 600    | ng/L
    R9_autoimmune_deficient    | 2026-10-03   | B12       | 150    | ng/L
    R9_autoimmune_neuro        | 2026-10-03   | B12       | 150    | ng/L
    R9_autoimmune_vegan_600    | 2026-10-03   | B12       | 600    | ng/L
    R9_pregnant_deficient      | 2026-10-03   | B12       | 150    | ng/L
    R9_pregnant_vegan_600      | 2026-10-03   | B12       | 600    | ng/L
"""
R9_PATIENTS = """
    patient_id                  | age_years | neurological_symptoms | ileal_resection_cm | bariatric_surgery | diet       | autoimmune_gastritis | pregnant
    R9_child_deficient          | 10        |                       |                    |                   |            |                      |
    R9_child_everything         | 12        | yes                   | 30                 | yes               | vegan      |                      |
    R9_neuro_deficient          | 50        | yes                   |                    |                   |            |                      |
    R9_neuro_ileal              | 50        | yes                   | 30                 |                   |            |                      |
    R9_ileal_bariatric          | 50        |                       | 30                 | yes               |            |                      |
    R9_ileal_deficient          | 50        |                       | 30                 | yes               |            |                      |
    R9_bariatric_deficient      | 50        |                       |                    | yes               |            |                      |
    R9_deficient_vegan          | 50        |                       |                    |                   | vegan      |                      |
    R9_vegan_unlikely           | 50        |                       |                    |                   | vegan      |                      |
    R9_neuro_not_needed         | 50        | yes                   |                    |                   | omnivore   |                      |
    R9_deficient_on_b12         | 50        |                       |                    |                   |            |                      |
    R9_age_16_deficient         | 16        |                       |                    |                   |            |                      |
    R9_vegan_child_600          | 12        |                       |                    |                   | vegan      |                      |
    R9_vegan_neuro_600          | 50        | yes                   |                    |                   | vegan      |                      |
    R9_vegetarian_indeterminate | 50        |                       |                    |                   | vegetarian |                      |
    R9_child_ileal_600          | 10        |                       | 30                 |                   |            |                      |
    R9_bariatric_600            | 50        |                       |                    | yes               |            |                      |
    R9_autoimmune_deficient     | 50        |                       |                    |                   |            | yes                  |
    R9_autoimmune_neuro         | 50        | yes                   |                    |                   |            | yes                  |
    R9_autoimmune_vegan_600     | 50        |                       |                    |                   | vegan      | yes                  |
    R9_pregnant_deficient       | 30        |                       |                    |                   |            |                      | yes
    R9_pregnant_vegan_600       | 30        |                       |                    |                   | vegan      |                      | yes
"""
R9_MEDICATIONS = """
    patient_id          | medication                 | start_date
    R9_deficient_on_b12 | Cyanocobalamin 1mg tablets | 2026-10-20
"""
# The regimen text, read for its parts (each a rules-profile value, see ``patients``):
# injection: the potassium note for an injection-only regimen; if_im: the "if IM: ..." note
# of a regimen that offers IM beside oral; lifelong: "lifelong treatment"; paed_dose: "dose
# per paediatric guidance"; check: when to check B12 (R11).
R9_EXPECTED = """
    patient_id                  | regimen_code      | regimen_intent | injection | if_im | lifelong | paed_dose | check
    R9_child_deficient          | paediatric        | treatment      | T         | F     | F        | F         | 3 months
    R9_child_everything         | paediatric        | treatment      | T         | F     | F        | F         | 3 months  # child beats every branch
    R9_neuro_deficient          | neurological      | treatment      | T         | F     | F        | F         | 3 months
    R9_neuro_ileal              | ileal_resection   | prevention     | T         | F     | F        | F         | 3 months  # rev 2: not deficient (was neurological)
    R9_ileal_bariatric          | ileal_resection   | prevention     | T         | F     | F        | F         | 3 months  # ileal beats bariatric (rev 2: prevention)
    R9_ileal_deficient          | ileal_resection   | treatment      | T         | F     | F        | F         | 3 months  # ileal beats bariatric
    R9_bariatric_deficient      | bariatric_surgery | treatment      | F         | T     | F        | F         | 3 months  # rev 2: oral or IM loading (potassium was F)
    R9_deficient_vegan          | deficiency        | treatment      | F         | T     | F        | F         | 3 months  # deficiency beats diet
    R9_deficient_no_record      | deficiency        | treatment      | F         | T     | F        | F         | 3 months  # no patients row
    R9_vegan_unlikely           | diet              | prevention     | F         | F     | F        | F         | 3 months
    R9_neuro_not_needed         |                   |                | F         | F     | F        | F         |           # only when R8 fires
    R9_deficient_on_b12         |                   |                | F         | F     | F        | F         |
    R9_age_16_deficient         | deficiency        | treatment      | F         | T     | F        | F         | 3 months
    R9_vegan_child_600          | diet              | prevention     | F         | F     | F        | T         | 3 months  # not the paediatric loading course
    R9_vegan_neuro_600          | diet              | prevention     | F         | F     | F        | F         | 3 months  # not the neurological regimen
    R9_vegetarian_indeterminate | diet              | prevention     | F         | F     | F        | F         | 3 months  # indeterminate is not deficient
    R9_child_ileal_600          | ileal_resection   | prevention     | T         | F     | F        | T         | 3 months
    R9_bariatric_600            | bariatric_surgery | prevention     | F         | F     | F        | F         | 3 months  # oral only: no potassium note
    R9_autoimmune_deficient     | deficiency        | treatment      | F         | T     | T        | F         | 3 months
    R9_autoimmune_neuro         | neurological      | treatment      | T         | F     | T        | F         | 3 months
    R9_autoimmune_vegan_600     | diet              | prevention     | F         | F     | F        | F         | 3 months  # lifelong is said of treatment
    R9_pregnant_deficient       | deficiency        | treatment      | F         | T     | F        | F         | 1 month
    R9_pregnant_vegan_600       | diet              | prevention     | F         | F     | F        | F         | 1 month
"""

# ------------------------------------------------------------------------------ R10
R10_LABS = """
    patient_id            | collected_at     | test_code | result | unit
    R10_tested_recently   | 2026-06-01       | B12       | 400    | ng/L
    R10_tested_active     | 2026-06-01       | HOLOTC    | 80     | pmol/L
    R10_tested_365_days   | 2025-10-31       | B12       | 400    | ng/L    # outside the year
    R10_tested_365_evening| 2025-10-31T18:00 | B12       | 400    | ng/L    # same day, later time
    R10_tested_364_days   | 2025-11-01       | B12       | 400    | ng/L
    R10_tested_after_as_of| 2026-11-02       | B12       | 400    | ng/L    # not yet known
    R10_mma_only          | 2026-10-03       | MMA       | 0.3    | umol/L  # MMA is not a B12 test
"""
R10_PATIENTS = """
    patient_id          | age_years | diet       | autoimmune_gastritis | bariatric_surgery
    R10_age_65          | 65        |            |                      |
    R10_age_64          | 64        |            |                      |
    R10_vegan           |           | vegan      |                      |
    R10_vegetarian      |           | vegetarian |                      |
    R10_autoimmune      |           |            | yes                  |
    R10_bariatric       |           |            |                      | yes
    R10_all_seven       | 70        | vegan      | yes                  | yes
    R10_no_metformin    | 70        | vegan      | yes                  | yes
"""
R10_MEDICATIONS = """
    patient_id             | medication                                | start_date | end_date   | dose_mg_per_day
    R10_due_no_test        | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_recently    | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_active      | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_365_days    | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_365_evening | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_364_days    | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_tested_after_as_of | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_mma_only           | Metformin 500mg tablets                   | 2024-01-01 |            | 1000
    R10_stopped            | Metformin 500mg tablets                   | 2020-01-01 | 2026-06-30 | 2000
    R10_ends_on_as_of      | Metformin 500mg tablets                   | 2026-01-01 | 2026-10-31 | 1000
    R10_starts_later       | Metformin 500mg tablets                   | 2026-11-10 |            | 1000
    R10_combination        | Sitagliptin/metformin 50mg/1000mg tablets | 2026-01-01 |            | 1000
    R10_age_65             | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_age_64             | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_dose_1500          | Metformin 500mg tablets                   | 2026-01-01 |            | 1500
    R10_dose_1499          | Metformin 500mg tablets                   | 2026-01-01 |            | 1499
    R10_dose_sum           | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_dose_sum           | Metformin 1g modified-release tablets     | 2026-03-01 |            | 500
    R10_dose_sum_stopped   | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_dose_sum_stopped   | Metformin 1g tablets                      | 2026-01-01 | 2026-05-01 | 1000
    R10_4_years            | Metformin 500mg tablets                   | 2022-10-31 |            | 1000
    R10_4_years_less_1_day | Metformin 500mg tablets                   | 2022-11-01 |            | 1000
    R10_years_from_earliest| Metformin 500mg tablets                   | 2018-01-01 | 2019-01-01 | 1000
    R10_years_from_earliest| Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_acid_suppressant   | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_acid_suppressant   | Omeprazole 20mg capsules                  | 2026-01-01 |            | 20
    R10_acid_stopped       | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_acid_stopped       | Ranitidine 150mg tablets                  | 2025-01-01 | 2026-01-01 | 300
    R10_vegan              | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_vegetarian         | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_autoimmune         | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_bariatric          | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_all_seven          | Metformin 500mg tablets                   | 2015-01-01 |            | 2000
    R10_all_seven          | Lansoprazole 30mg capsules                | 2026-01-01 |            | 30
    R10_no_metformin       | Omeprazole 20mg capsules                  | 2026-01-01 |            | 20
    R10_b12_combination    | Metformin 500 mg + methylcobalamin 500 micrograms | 2026-01-01 |   | 1000
    R10_aripiprazole       | Metformin 500mg tablets                   | 2026-01-01 |            | 1000
    R10_aripiprazole       | Aripiprazole 10mg tablets                 | 2026-01-01 |            | 10
"""
R10_EXPECTED = """
    patient_id              | on_metformin | metformin_monitoring_due | metformin_risk
    R10_due_no_test         | T            | T                        | 0
    R10_tested_recently     | T            | F                        | 0
    R10_tested_active       | T            | F                        | 0
    R10_tested_365_days     | T            | T                        | 0
    R10_tested_365_evening  | T            | T                        | 0
    R10_tested_364_days     | T            | F                        | 0
    R10_tested_after_as_of  | T            | T                        | 0
    R10_mma_only            | T            | T                        | 0
    R10_stopped             | F            | F                        | 0
    R10_ends_on_as_of       | T            | T                        | 0
    R10_starts_later        | F            | F                        | 0
    R10_combination         | T            | T                        | 0
    R10_age_65              | T            | T                        | 1
    R10_age_64              | T            | T                        | 0
    R10_dose_1500           | T            | T                        | 1
    R10_dose_1499           | T            | T                        | 0
    R10_dose_sum            | T            | T                        | 1       # 1000 + 500 active
    R10_dose_sum_stopped    | T            | T                        | 0       # stopped one not counted
    R10_4_years             | T            | T                        | 1
    R10_4_years_less_1_day  | T            | T                        | 0
    R10_years_from_earliest | T            | T                        | 1
    R10_acid_suppressant    | T            | T                        | 1
    R10_acid_stopped        | T            | T                        | 0
    R10_vegan               | T            | T                        | 1
    R10_vegetarian          | T            | T                        | 1
    R10_autoimmune          | T            | T                        | 1
    R10_bariatric           | T            | T                        | 1
    R10_all_seven           | T            | T                        | 7
    R10_no_metformin        | F            | F                        | 0
    R10_b12_combination     | T            | T                        | 0       # metformin; its dose counted once
    R10_aripiprazole        | T            | T                        | 0       # an antipsychotic, not an acid suppressant
"""

# ------------------------------------------------------------------------------ R11
R11_LABS = """
    patient_id              | collected_at | test_code | result | unit
    R11_switched_after_fail | 2026-04-01   | B12       | 120    | ng/L    # tablets failed: injections since
    R11_injections_repeated | 2026-06-01   | B12       | 120    | ng/L    # on injections: repeats are no change
    R11_tested_after_start  | 2026-08-15   | B12       | 400    | ng/L
    R11_tested_active_after | 2026-08-15   | HOLOTC    | 80     | pmol/L
    R11_tested_on_start_day | 2026-05-01   | B12       | 400    | ng/L
    R11_tested_before_start | 2026-04-20   | B12       | 150    | ng/L
    R11_tested_after_as_of  | 2026-11-05   | B12       | 400    | ng/L
    R11_repeat_course       | 2026-03-01   | B12       | 400    | ng/L    # a month into the course
    R11_repeat_course_checked | 2026-05-01 | B12       | 400    | ng/L    # day 89 of the course
    R11_new_course          | 2026-03-01   | B12       | 400    | ng/L    # before the new course
    R11_tested_day_10       | 2026-05-11   | B12       | 400    | ng/L    # then nothing
    R11_check_day_76        | 2026-07-16   | B12       | 400    | ng/L    # 90 - 14 days: the check
    R11_check_day_75        | 2026-07-15   | B12       | 400    | ng/L    # a day too early
    R11_pregnant_day_23     | 2026-09-24   | B12       | 400    | ng/L    # 30 - 7 days: the check
    R11_pregnant_day_22     | 2026-09-23   | B12       | 400    | ng/L
"""
R11_PATIENTS = """
    patient_id              | pregnant
    R11_pregnant_30_days    | yes
    R11_pregnant_29_days    | yes
    R11_not_pregnant_30_days| no
    R11_pregnant_day_23     | yes
    R11_pregnant_day_22     | yes
"""
R11_MEDICATIONS = """
    patient_id               | medication                         | start_date | end_date
    R11_switched_after_fail  | Cyanocobalamin 1mg tablets         | 2026-01-01 | 2026-04-04
    R11_switched_after_fail  | Hydroxocobalamin 1mg/1ml injection | 2026-04-05 |
    R11_injections_repeated  | Hydroxocobalamin 1mg/1ml injection | 2026-01-01 | 2026-06-30
    R11_injections_repeated  | Hydroxocobalamin 1mg/1ml injection | 2026-07-01 |
    R11_90_days              | Cyanocobalamin 1mg tablets         | 2026-08-02 |
    R11_89_days              | Cyanocobalamin 1mg tablets         | 2026-08-03 |
    R11_pregnant_30_days     | Cyanocobalamin 1mg tablets         | 2026-10-01 |
    R11_pregnant_29_days     | Cyanocobalamin 1mg tablets         | 2026-10-02 |
    R11_not_pregnant_30_days | Cyanocobalamin 1mg tablets         | 2026-10-01 |
    R11_tested_after_start   | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_tested_active_after  | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_tested_on_start_day  | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_tested_before_start  | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_tested_after_as_of   | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_injection            | Hydroxocobalamin 1mg/1ml injection | 2026-05-01 |
    R11_stopped              | Cyanocobalamin 1mg tablets         | 2026-01-01 | 2026-06-30
    R11_repeat_course        | Cyanocobalamin 1mg tablets         | 2026-02-01 | 2026-04-30
    R11_repeat_course        | Cyanocobalamin 1mg tablets         | 2026-05-10 |            # 10-day gap
    R11_new_course           | Cyanocobalamin 1mg tablets         | 2025-06-01 | 2025-12-31
    R11_new_course           | Cyanocobalamin 1mg tablets         | 2026-05-01 |            # 4-month gap
    R11_repeat_course_checked| Cyanocobalamin 1mg tablets         | 2026-02-01 | 2026-04-30
    R11_repeat_course_checked| Cyanocobalamin 1mg tablets         | 2026-05-10 |
    R11_tested_day_10        | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_check_day_76         | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_check_day_75         | Cyanocobalamin 1mg tablets         | 2026-05-01 |
    R11_pregnant_day_23      | Cyanocobalamin 1mg tablets         | 2026-09-01 |
    R11_pregnant_day_22      | Cyanocobalamin 1mg tablets         | 2026-09-01 |
    R11_combination          | Metformin 500 mg + methylcobalamin 500 micrograms | 2026-05-01 |
"""
R11_EXPECTED = """
    patient_id               | on_b12_treatment | retest_due | b12_treatment_start
    R11_switched_after_fail  | T                | T          | 2026-01-01
    R11_injections_repeated  | T                | F          | 2026-01-01
    R11_90_days              | T                | T          | 2026-08-02
    R11_89_days              | T                | F          | 2026-08-03
    R11_pregnant_30_days     | T                | T          | 2026-10-01
    R11_pregnant_29_days     | T                | F          | 2026-10-02
    R11_not_pregnant_30_days | T                | F          | 2026-10-01
    R11_tested_after_start   | T                | F          | 2026-05-01
    R11_tested_active_after  | T                | F          | 2026-05-01
    R11_tested_on_start_day  | T                | T          | 2026-05-01
    R11_tested_before_start  | T                | T          | 2026-05-01
    R11_tested_after_as_of   | T                | T          | 2026-05-01
    R11_injection            | T                | T          | 2026-05-01
    R11_stopped              | F                | F          |
    R11_repeat_course        | T                | T          | 2026-02-01   # rev 2: a test a month in is not the check (was F)
    R11_repeat_course_checked| T                | F          | 2026-02-01   # one course: the clock did not restart
    R11_new_course           | T                | T          | 2026-05-01
    R11_tested_day_10        | T                | T          | 2026-05-01
    R11_check_day_76         | T                | F          | 2026-05-01
    R11_check_day_75         | T                | T          | 2026-05-01
    R11_pregnant_day_23      | T                | F          | 2026-09-01
    R11_pregnant_day_22      | T                | T          | 2026-09-01
    R11_combination          | F                | F          |              # its B12 is not a course
"""

# ------------------------------------------------------------------------------ R12
R12_LABS = """
    patient_id              | collected_at | test_code | result | unit
    R12_neuro               | 2026-10-03   | B12       | 150    | ng/L
    R12_pregnant            | 2026-10-03   | B12       | 150    | ng/L
    R12_recent              | 2026-10-03   | B12       | 150    | ng/L
    R12_91_days             | 2026-08-01   | B12       | 150    | ng/L
    R12_90_days             | 2026-08-02   | B12       | 150    | ng/L    # not > 90 days
    R12_treated_since       | 2026-06-01   | B12       | 150    | ng/L
    R12_treated_same_day    | 2026-06-01   | B12       | 150    | ng/L
    R12_treated_since_ended | 2026-06-01   | B12       | 150    | ng/L
    R12_treated_before      | 2026-06-01   | B12       | 150    | ng/L
    R12_treated_after_as_of | 2026-06-01   | B12       | 150    | ng/L
    R12_indeterminate_neuro | 2026-10-03   | B12       | 250    | ng/L
    R12_mma_pregnant        | 2026-10-03   | B12       | 250    | ng/L
    R12_mma_pregnant        | 2026-10-10   | MMA       | 0.6    | umol/L
    R12_unlikely_old        | 2026-06-01   | B12       | 400    | ng/L
    R12_neuro_old_treated   | 2026-06-01   | B12       | 150    | ng/L
    R12_tablets_before_test | 2026-06-01   | B12       | 150    | ng/L    # tablets from 5 days before
    R12_lapsed_course       | 2026-06-01   | B12       | 150    | ng/L
    R12_not_responding      | 2026-08-01   | B12       | 150    | ng/L    # day 92 of the course
    R12_deficient_day_10    | 2026-05-11   | B12       | 150    | ng/L    # day 10: not the check
    R12_check_then_lapsed   | 2026-08-10   | B12       | 150    | ng/L    # day 101; course ends 10-15
    R12_test_after_lapse    | 2026-07-20   | B12       | 150    | ng/L    # course ended 05-31
    R12_started_as_of_09h   | 2026-06-01   | B12       | 150    | ng/L
    R12_switched_route      | 2026-06-10   | B12       | 150    | ng/L    # day 160 of the tablets
    R12_switched_at_once    | 2026-06-10   | B12       | 150    | ng/L
    R12_lapsed_twice        | 2026-08-01   | B12       | 150    | ng/L
    R12_repeat_tablets      | 2026-08-01   | B12       | 150    | ng/L
    R12_check_indeterminate | 2026-08-01   | B12       | 250    | ng/L
    R12_indeterminate_pregnant | 2026-10-03 | B12      | 250    | ng/L
    R12_unlikely_neuro      | 2026-10-03   | B12       | 400    | ng/L
    R12_combination_only    | 2026-06-01   | B12       | 150    | ng/L
"""
R12_PATIENTS = """
    patient_id              | neurological_symptoms | pregnant
    R12_neuro               | yes                   | no
    R12_pregnant            | no                    | yes
    R12_recent              | no                    | no
    R12_indeterminate_neuro | yes                   | no
    R12_mma_pregnant        |                       | y
    R12_neuro_old_treated   | yes                   |
    R12_indeterminate_pregnant |                    | yes
    R12_unlikely_neuro      | yes                   |
"""
R12_MEDICATIONS = """
    patient_id              | medication                 | start_date | end_date
    R12_neuro               | Cyanocobalamin 1mg tablets | 2026-10-10 |
    R12_treated_since       | Cyanocobalamin 1mg tablets | 2026-06-10 |
    R12_treated_same_day    | Cyanocobalamin 1mg tablets | 2026-06-01 |
    R12_treated_since_ended | Cyanocobalamin 1mg tablets | 2026-06-10 | 2026-07-10
    R12_treated_before      | Cyanocobalamin 1mg tablets | 2025-01-01 |
    R12_treated_after_as_of | Cyanocobalamin 1mg tablets | 2026-11-10 |
    R12_neuro_old_treated   | Cyanocobalamin 1mg tablets | 2026-06-10 |
    R12_tablets_before_test | Cyanocobalamin 1mg tablets | 2026-05-27 |
    R12_lapsed_course       | Cyanocobalamin 1mg tablets | 2026-06-05 | 2026-10-20
    R12_not_responding      | Cyanocobalamin 1mg tablets | 2026-05-01 |
    R12_deficient_day_10    | Cyanocobalamin 1mg tablets | 2026-05-01 |
    R12_check_then_lapsed   | Cyanocobalamin 1mg tablets | 2026-05-01 | 2026-10-15
    R12_test_after_lapse    | Cyanocobalamin 1mg tablets | 2026-03-01 | 2026-05-31
    R12_started_as_of_09h   | Cyanocobalamin 1mg tablets | 2026-10-31T09:00:00 |
    R12_switched_route      | Cyanocobalamin 1mg tablets | 2026-01-01 | 2026-06-30
    R12_switched_route      | Hydroxocobalamin 1mg/1ml injection | 2026-08-01 |
    R12_switched_at_once    | Cyanocobalamin 1mg tablets | 2026-01-01 | 2026-06-30
    R12_switched_at_once    | Hydroxocobalamin 1mg/1ml injection | 2026-07-01 |
    R12_lapsed_twice        | Cyanocobalamin 1mg tablets | 2026-01-01 | 2026-08-10
    R12_lapsed_twice        | Cyanocobalamin 1mg tablets | 2026-09-15 | 2026-09-22
    R12_repeat_tablets      | Cyanocobalamin 1mg tablets | 2026-04-01 | 2026-08-20
    R12_repeat_tablets      | Cyanocobalamin 1mg tablets | 2026-08-21 |
    R12_check_indeterminate | Cyanocobalamin 1mg tablets | 2026-05-01 |
    R12_combination_only    | Metformin 500 mg + methylcobalamin 500 micrograms | 2026-01-01 |
"""
R12_EXPECTED = """
    patient_id              | b12_status    | urgent_review | untreated_too_long | not_responding
    R12_neuro               | deficient     | T             | F                  | F    # treatment does not remove the urgency
    R12_pregnant            | deficient     | T             | F                  | F
    R12_recent              | deficient     | F             | F                  | F
    R12_91_days             | deficient     | T             | T                  | F
    R12_90_days             | deficient     | F             | F                  | F
    R12_treated_since       | deficient     | F             | F                  | F
    R12_treated_same_day    | deficient     | F             | F                  | F
    R12_treated_since_ended | deficient     | T             | T                  | F    # rev 2: lapsed is untreated (was F)
    R12_treated_before      | deficient     | T             | F                  | T    # deficient on the check: not responding
    R12_treated_after_as_of | deficient     | T             | T                  | F
    R12_indeterminate_neuro | indeterminate | T             | F                  | F    # rev 2: do not wait for the MMA (was F)
    R12_mma_pregnant        | deficient     | T             | F                  | F
    R12_unlikely_old        | unlikely      | F             | F                  | F
    R12_neuro_old_treated   | deficient     | T             | F                  | F
    R12_tablets_before_test | deficient     | F             | F                  | F    # treated; the check is still to come
    R12_lapsed_course       | deficient     | T             | T                  | F
    R12_not_responding      | deficient     | T             | F                  | T
    R12_deficient_day_10    | deficient     | F             | F                  | F
    R12_check_then_lapsed   | deficient     | T             | F                  | T    # did not respond, now untreated too
    R12_test_after_lapse    | deficient     | T             | T                  | F    # tested off treatment
    R12_started_as_of_09h   | deficient     | F             | F                  | F    # started on the as-of day
    R12_switched_route      | deficient     | F             | F                  | F    # injections since: the answer
    R12_switched_at_once    | deficient     | F             | F                  | F    # the next day: one course, answered
    R12_lapsed_twice        | deficient     | T             | T                  | T    # a week of tablets since, lapsed too
    R12_repeat_tablets      | deficient     | T             | F                  | T    # a repeat is no answer
    R12_check_indeterminate | indeterminate | F             | F                  | F
    R12_indeterminate_pregnant | indeterminate | F          | F                  | F    # pregnancy: urgent when deficient
    R12_unlikely_neuro      | unlikely      | F             | F                  | F
    R12_combination_only    | deficient     | T             | T                  | F    # combination B12 is not treatment
"""

# ------------------------------------------------------------------------------ R13
R13_LABS = """
    patient_id       | collected_at | test_code | result | unit
    R13_child_tested | 2026-10-03   | B12       | 150    | ng/L
"""
R13_PATIENTS = """
    patient_id        | age_years | birth_date
    R13_age_15        | 15        |
    R13_age_16        | 16        |
    R13_birth_15      |           | 2010-11-01     # 16th birthday is the day after as-of
    R13_birth_16      |           | 2010-10-31     # 16 on the as-of date
    R13_unknown_age   |           |
    R13_child_tested  | 10        |
"""
R13_EXPECTED = """
    patient_id       | age_years | paediatric | b12_status | needs_supplementation
    R13_age_15       | 15        | T          | not_tested | F
    R13_age_16       | 16        | F          | not_tested | F
    R13_birth_15     | 15        | T          | not_tested | F
    R13_birth_16     | 16        | F          | not_tested | F
    R13_unknown_age  |           | F          | not_tested | F
    R13_child_tested | 10        | T          | deficient  | T
"""

LABS = rows_of(R8_LABS, R9_LABS, R10_LABS, R11_LABS, R12_LABS, R13_LABS)
PATIENTS = rows_of(R8_PATIENTS, R9_PATIENTS, R10_PATIENTS, R11_PATIENTS, R12_PATIENTS,
                   R13_PATIENTS)
MEDICATIONS = rows_of(R8_MEDICATIONS, R9_MEDICATIONS, R10_MEDICATIONS, R11_MEDICATIONS,
                      R12_MEDICATIONS)
EXPECTED = (R8_EXPECTED, R9_EXPECTED, R10_EXPECTED, R11_EXPECTED, R12_EXPECTED, R13_EXPECTED)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_cli(tmp_path_factory.mktemp("r08_r13"), LABS, PATIENTS, MEDICATIONS)


R9 = load_rules().rule("R9")


@pytest.fixture(scope="module")
def patients(run: Path) -> pd.DataFrame:
    """patients.parquet, with the parts of each regimen text that R9's table checks."""
    frame = read_patients(run)
    text = frame["suggested_regimen"].astype("object").fillna("")
    return frame.assign(
        injection=text.str.contains(R9["injection_note"], regex=False),
        if_im=text.str.contains(R9["injection_option_note"], regex=False),
        lifelong=text.str.contains(R9["lifelong_note"], regex=False),
        paed_dose=text.str.contains(R9["paediatric_prevention_note"], regex=False),
        check=text.str.extract(r"check B12 after (\d+ months?)$", expand=False))


@pytest.mark.parametrize("expected", cases(R8_EXPECTED))
def test_R8_needs_supplementation(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R9_EXPECTED))
def test_R9_suggested_regimen(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)
    row = patients.loc[expected["patient_id"]]
    code, intent = expected["regimen_code"], expected["regimen_intent"]
    if code:  # the text is the profile's, so a site can reword it without code changes
        key = code if intent == "treatment" else f"prevention_{code}"
        assert row["suggested_regimen"].startswith(R9[key] + "; ")
        potassium = row["suggested_regimen"].count("potassium")
        assert potassium == int(expected["injection"] == "T" or expected["if_im"] == "T")
    else:
        assert pd.isna(row["suggested_regimen"])


def test_R9_shipped_regimens_follow_the_bnf() -> None:
    """The default profile's wording: neurological per the BNF with urgent specialist
    advice; the potassium note never on an oral-only regimen; the paediatric text does
    not tell anyone to use adult thresholds."""
    assert "urgent specialist advice" in R9["neurological"]
    assert "1000 µg IM on alternate days until no further improvement" in R9["neurological"]
    assert "every 2 months" in R9["neurological"]
    assert "adult thresholds" not in R9["paediatric"]
    assert "over-16s" in R9["paediatric"]
    assert R9["injection_option_note"].startswith("if IM: ")
    oral_only = {"prevention_bariatric_surgery", "prevention_diet"}
    listed = set(R9["injection_only"]) | set(R9["injection_option"])
    assert not oral_only & listed
    assert not any("potassium" in R9[k] for k in (*oral_only, *listed))


@pytest.mark.parametrize("expected", cases(R10_EXPECTED))
def test_R10_metformin_monitoring(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R11_EXPECTED))
def test_R11_retest_due(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R12_EXPECTED))
def test_R12_urgent_review(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R13_EXPECTED))
def test_R13_paediatric(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


def test_every_case_has_an_expectation(patients: pd.DataFrame) -> None:
    assert_every_case_checked(patients, EXPECTED, LABS, PATIENTS, MEDICATIONS)


def test_every_input_row_accepted(run: Path) -> None:
    """The cases are clean input: nothing rejected, so no case tests validation by accident."""
    rejected = pd.read_parquet(run / "rejected.parquet")
    assert rejected.empty, rejected[["input", "source_row", "reasons"]].to_string()


def test_reasons_name_each_action(patients: pd.DataFrame) -> None:
    """Worklist readers see why: one clause per rule that fired, with its facts."""
    assert patients.loc["R10_due_no_test", "reasons"] == (
        "R10 on metformin, no B12 test in 365 days (risk factors 0)")
    assert patients.loc["R10_tested_365_days", "reasons"] == (
        "R10 on metformin, no B12 test in 365 days, last 2025-10-31 (risk factors 0)")
    assert patients.loc["R10_all_seven", "reasons"].endswith(
        "; R10 on metformin, no B12 test in 365 days (risk factors 7: age 65+, dose 1500+ "
        "mg/day, 4+ years on metformin, acid suppressant, vegan/vegetarian, autoimmune "
        "gastritis, bariatric surgery)")
    assert patients.loc["R11_90_days", "reasons"] == (
        "R11 on B12 treatment since 2026-08-02, no B12 test since 2026-10-17: retest due")
    assert patients.loc["R11_pregnant_day_22", "reasons"].endswith(
        "; R11 on B12 treatment since 2026-09-01, no B12 test since 2026-09-24: retest due")
    assert patients.loc["R12_91_days", "reasons"].endswith(
        "R12 urgent review (deficient result over 90 days old, no B12 prescription active)")
    assert patients.loc["R12_neuro_old_treated", "reasons"].endswith(
        "R12 urgent review (neurological symptoms)")
    assert patients.loc["R12_neuro", "reasons"].endswith("R12 urgent review (neurological "
                                                         "symptoms)")
    assert patients.loc["R8_bariatric_and_ileal", "reasons"] == (
        "R8 supplementation needed (ileal_resection, bariatric_surgery) → R9 prevention: "
        "ileal resection: " + R9["prevention_ileal_resection"])
    assert patients.loc["R9_vegan_unlikely", "reasons"] == (
        "R1 total B12 400 ng/L (2026-10-03) unlikely → R8 supplementation needed (diet) → "
        "R9 prevention: vegan diet: 250–350 µg daily or 1000 µg weekly")
    assert patients.loc["R9_vegetarian_indeterminate", "reasons"].endswith(
        "→ R9 prevention: vegetarian diet: " + R9["prevention_diet"])
    assert patients.loc["R9_neuro_deficient", "reasons"].endswith(
        "→ R9 treatment: neurological symptoms: " + R9["neurological"]
        + "; R12 urgent review (neurological symptoms)")
    assert "R9 treatment: under 16: " in patients.loc["R9_child_deficient", "reasons"]
    assert patients.loc["R12_treated_before", "reasons"].endswith(
        "R12 urgent review (not responding: deficient on the check test taken on B12 "
        "treatment)")
    assert patients.loc["R12_indeterminate_neuro", "reasons"] == (
        "R1 total B12 250 ng/L (2026-10-03) indeterminate → R7 MMA needed; R12 urgent review "
        "(indeterminate with neurological symptoms: treat without waiting for the MMA)")
    assert patients.loc["R12_treated_before", "rule_ids"] == "R1 R4 R12"
    assert patients.loc["R9_vegan_neuro_600", "rule_ids"] == "R1 R4 R8 R9"
    assert patients.loc["R13_child_tested", "rule_ids"] == "R1 R4 R8 R9 R13"
