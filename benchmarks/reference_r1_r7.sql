-- b12screen reference implementation of SPEC rules R1-R7 in DuckDB SQL.
--
-- Written from SPEC.md, configs/formats/canonical.toml and the [harmonise] table of
-- configs/rules/nice-ng239.toml only (not from the pipeline's Python), so that the benchmark
-- compares two independent implementations. benchmarks/reference.py fills the placeholders:
--   {labs}            table expression, e.g. read_csv('labs.csv', all_varchar = true)
--   {as_of}, {today}  ISO dates YYYY-MM-DD (written here inside DATE '...')
--   {earliest_date}   ISO date; results collected before it are bad dates
--   {out_patients}, {out_results}  output Parquet paths
--   thresholds: {total_deficient_below} {total_unlikely_above} {active_deficient_below}
--   {active_unlikely_above} {lookback_days} {mma_upper} {pmol_to_ng}, and plausible ranges
--   {b12_total_plausible_min} {b12_total_plausible_max} {b12_active_plausible_min}
--   {b12_active_plausible_max} {mma_plausible_min} {mma_plausible_max}
--
-- Outputs: patients (patient_id, b12_status, needs_mma) for every non-empty patient id with at
-- least one row whose code maps to an analyte (accepted or not); results (patient_id,
-- collected_at, analyte, value, unit, censor, band) for every accepted result, including those
-- dated after as_of (they are kept but not classified). band is empty for MMA.

CREATE OR REPLACE TEMP TABLE ref_params AS
SELECT
    DATE '{as_of}' AS as_of,
    DATE '{today}' AS today,
    CAST(DATE '{earliest_date}' AS TIMESTAMP) AS earliest,
    CAST({lookback_days} AS INTEGER) AS lookback_days,
    CAST({total_deficient_below} AS DOUBLE) AS total_deficient_below,
    CAST({total_unlikely_above} AS DOUBLE) AS total_unlikely_above,
    CAST({active_deficient_below} AS DOUBLE) AS active_deficient_below,
    CAST({active_unlikely_above} AS DOUBLE) AS active_unlikely_above,
    CAST({mma_upper} AS DOUBLE) AS mma_upper;

-- canonical.toml [labs.codes] and [labs.default_units] (codes compared trimmed, upper case).
CREATE OR REPLACE TEMP TABLE ref_codes AS
SELECT * FROM (VALUES
    ('B12', 'b12_total', NULL),
    ('VITB12', 'b12_total', NULL),
    ('2132-9', 'b12_total', 'ng/L'),
    ('14685-2', 'b12_total', 'pmol/L'),
    ('HOLOTC', 'b12_active', NULL),
    ('ACTB12', 'b12_active', NULL),
    ('72160-5', 'b12_active', 'pmol/L'),
    ('MMA', 'mma', NULL),
    ('13964-2', 'mma', 'umol/L')
) AS t(code, analyte, default_unit);

-- SPEC "Analytes and units": accepted units per analyte (lower case, u/µ/μ folded to u),
-- value_in_canonical = value * mult / div, and the plausible range after conversion.
CREATE OR REPLACE TEMP TABLE ref_units AS
SELECT analyte, unit_key, CAST(mult AS DOUBLE) AS mult, CAST(div AS DOUBLE) AS div,
       canonical_unit, CAST(plausible_min AS DOUBLE) AS plausible_min,
       CAST(plausible_max AS DOUBLE) AS plausible_max
FROM (VALUES
    ('b12_total', 'ng/l', 1, 1, 'ng/L', {b12_total_plausible_min}, {b12_total_plausible_max}),
    ('b12_total', 'pg/ml', 1, 1, 'ng/L', {b12_total_plausible_min}, {b12_total_plausible_max}),
    ('b12_total', 'pmol/l', {pmol_to_ng}, 1, 'ng/L',
     {b12_total_plausible_min}, {b12_total_plausible_max}),
    ('b12_active', 'pmol/l', 1, 1, 'pmol/L',
     {b12_active_plausible_min}, {b12_active_plausible_max}),
    ('mma', 'umol/l', 1, 1, 'µmol/L', {mma_plausible_min}, {mma_plausible_max}),
    ('mma', 'nmol/ml', 1, 1, 'µmol/L', {mma_plausible_min}, {mma_plausible_max}),
    ('mma', 'nmol/l', 1, 1000, 'µmol/L', {mma_plausible_min}, {mma_plausible_max})
) AS t(analyte, unit_key, mult, div, canonical_unit, plausible_min, plausible_max);

-- canonical.toml [read] missing_values: these cells are empty.
CREATE OR REPLACE TEMP MACRO ref_cell(x) AS
    CASE WHEN trim(CAST(x AS VARCHAR)) IN ('', 'NULL', 'null', 'N/A', 'n/a', 'NA', '-', 'None')
         THEN NULL ELSE trim(CAST(x AS VARCHAR)) END;

-- Rows whose code maps to an analyte; other tests are skipped. Exact duplicate rows (every
-- field identical) count once; duplicates share their code, so skipping first changes nothing.
CREATE OR REPLACE TEMP TABLE ref_mapped AS
WITH raw AS (
    SELECT DISTINCT *
    FROM {labs}
    WHERE upper(trim(CAST(test_code AS VARCHAR))) IN (SELECT code FROM ref_codes)
)
SELECT
    ref_cell(r.patient_id) AS patient_id,
    ref_cell(r.collected_at) AS collected_text,
    c.analyte,
    ref_cell(r.result) AS result_text,
    lower(replace(replace(coalesce(ref_cell(r.unit), c.default_unit), 'µ', 'u'), 'μ', 'u'))
        AS unit_key
FROM raw AS r
JOIN ref_codes AS c ON c.code = upper(trim(CAST(r.test_code AS VARCHAR)));

-- Parse dates (ISO 8601 date or date-time) and results (censor + number), convert units.
-- A result that does not match the SPEC's pattern has an empty number: non-numeric.
CREATE OR REPLACE TEMP TABLE ref_parsed AS
WITH parts AS (
    SELECT
        m.*,
        regexp_extract(m.result_text, '^\s*(<=|>=|<|>)?\s*(\d+(\.\d*)?|\.\d+)\s*$',
                       ['censor', 'number']) AS r
    FROM ref_mapped AS m
    WHERE m.patient_id IS NOT NULL
)
SELECT
    p.patient_id,
    p.analyte,
    CASE WHEN regexp_full_match(p.collected_text,
                                '\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?')
         THEN try_cast(replace(p.collected_text, 'T', ' ') AS TIMESTAMP) END AS collected_at,
    p.r.censor AS censor,
    CASE WHEN p.r.number <> ''
         THEN round(CAST(p.r.number AS DOUBLE) * u.mult / u.div, 6) END AS value,
    u.canonical_unit AS unit,
    u.plausible_min,
    u.plausible_max
FROM parts AS p
LEFT JOIN ref_units AS u ON u.analyte = p.analyte AND u.unit_key = p.unit_key;

-- Accepted results: valid, not in the future, plausible. R1-R3 bands for total/active B12:
-- a censored result is an interval ('<x' = [0,x), '<=x' = [0,x], '>x' = (x,inf),
-- '>=x' = [x,inf)) and gets a band only when the whole interval lies in it.
CREATE OR REPLACE TEMP TABLE ref_accepted AS
WITH valid AS (
    SELECT p.*,
           CASE p.analyte
               WHEN 'b12_total' THEN prm.total_deficient_below
               WHEN 'b12_active' THEN prm.active_deficient_below END AS lo,
           CASE p.analyte
               WHEN 'b12_total' THEN prm.total_unlikely_above
               WHEN 'b12_active' THEN prm.active_unlikely_above END AS hi
    FROM ref_parsed AS p, ref_params AS prm
    WHERE p.collected_at IS NOT NULL
      AND p.collected_at >= prm.earliest
      AND CAST(p.collected_at AS DATE) <= prm.today
      AND p.value IS NOT NULL
      AND p.unit IS NOT NULL
      AND p.value >= p.plausible_min
      AND p.value <= p.plausible_max
)
SELECT
    patient_id,
    collected_at,
    CAST(collected_at AS DATE) AS collected_date,
    analyte,
    value,
    unit,
    censor,
    CASE
        WHEN analyte = 'mma' THEN NULL
        WHEN censor = '' THEN CASE WHEN value < lo THEN 'deficient'
                                   WHEN value > hi THEN 'unlikely'
                                   ELSE 'indeterminate' END
        WHEN censor = '<' THEN CASE WHEN value <= lo THEN 'deficient' ELSE 'indeterminate' END
        WHEN censor = '<=' THEN CASE WHEN value < lo THEN 'deficient' ELSE 'indeterminate' END
        WHEN censor = '>' THEN CASE WHEN value >= hi THEN 'unlikely' ELSE 'indeterminate' END
        WHEN censor = '>=' THEN CASE WHEN value > hi THEN 'unlikely' ELSE 'indeterminate' END
    END AS band,
    -- Orders equal numbers: '<x' is lower than '<=x', which is lower than 'x', and so on.
    CASE censor WHEN '<' THEN 0 WHEN '<=' THEN 1 WHEN '' THEN 2 WHEN '>=' THEN 3 ELSE 4 END
        AS censor_rank
FROM valid;

-- R4: index test = the most recent total/active B12 in (as_of - lookback_days, as_of], by
-- date. On that date each analyte contributes its latest-timed result (same time: lowest
-- value); if total and active are both there, the more severe band wins.
CREATE OR REPLACE TEMP TABLE ref_index AS
WITH window_b12 AS (
    SELECT a.*
    FROM ref_accepted AS a, ref_params AS prm
    WHERE a.analyte IN ('b12_total', 'b12_active')
      AND a.collected_date > prm.as_of - prm.lookback_days
      AND a.collected_date <= prm.as_of
),
on_index_date AS (
    SELECT *
    FROM window_b12
    QUALIFY collected_date = max(collected_date) OVER (PARTITION BY patient_id)
),
per_analyte AS (
    SELECT *
    FROM on_index_date
    QUALIFY row_number() OVER (
        PARTITION BY patient_id, analyte
        ORDER BY collected_at DESC, value ASC, censor_rank ASC) = 1
)
SELECT
    patient_id,
    any_value(collected_date) AS index_date,
    CASE max(CASE band WHEN 'deficient' THEN 3 WHEN 'indeterminate' THEN 2 ELSE 1 END)
        WHEN 3 THEN 'deficient' WHEN 2 THEN 'indeterminate' ELSE 'unlikely' END AS index_band
FROM per_analyte
GROUP BY patient_id;

-- R5: the MMA that counts is the latest-dated one on/after the index date and <= as_of
-- (same day: the highest). It resolves an indeterminate index test only when its whole
-- interval lies above mma_upper (deficient) or at/below it (unlikely).
CREATE OR REPLACE TEMP TABLE ref_mma AS
WITH candidates AS (
    SELECT a.patient_id, a.value, a.censor, a.censor_rank
    FROM ref_accepted AS a
    JOIN ref_index AS i USING (patient_id)
    CROSS JOIN ref_params AS prm
    WHERE a.analyte = 'mma'
      AND a.collected_date >= i.index_date
      AND a.collected_date <= prm.as_of
    QUALIFY row_number() OVER (
        PARTITION BY a.patient_id
        ORDER BY a.collected_date DESC, a.value DESC, a.censor_rank DESC) = 1
)
SELECT
    c.patient_id,
    CASE
        WHEN c.censor = '' THEN CASE WHEN c.value > prm.mma_upper THEN 'deficient'
                                     ELSE 'unlikely' END
        WHEN c.censor IN ('<', '<=') AND c.value <= prm.mma_upper THEN 'unlikely'
        WHEN c.censor = '>' AND c.value >= prm.mma_upper THEN 'deficient'
        WHEN c.censor = '>=' AND c.value > prm.mma_upper THEN 'deficient'
    END AS mma_band
FROM candidates AS c, ref_params AS prm;

-- R6, R7.
CREATE OR REPLACE TEMP TABLE ref_patients AS
WITH cohort AS (
    SELECT DISTINCT patient_id FROM ref_mapped WHERE patient_id IS NOT NULL
)
SELECT
    c.patient_id,
    CASE
        WHEN i.patient_id IS NULL THEN 'not_tested'
        WHEN i.index_band = 'indeterminate' AND m.mma_band IS NOT NULL THEN m.mma_band
        ELSE i.index_band
    END AS b12_status
FROM cohort AS c
LEFT JOIN ref_index AS i USING (patient_id)
LEFT JOIN ref_mma AS m USING (patient_id);

COPY (
    SELECT patient_id, b12_status, b12_status = 'indeterminate' AS needs_mma
    FROM ref_patients
    ORDER BY patient_id
) TO '{out_patients}' (FORMAT parquet);

COPY (
    SELECT patient_id, collected_at, analyte, value, unit, censor, band
    FROM ref_accepted
    ORDER BY patient_id, collected_at, analyte, value, censor_rank
) TO '{out_results}' (FORMAT parquet);
