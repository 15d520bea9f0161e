-- R1-R7 as an analyst with a clean, typed extract writes them: the minimal yardstick.
--
-- Assumes what the full reference (reference_r1_r7.sql) does not: `result` a number and
-- `collected_at` a date or timestamp already (no text to parse, no censored results), no
-- bad rows, no duplicates, no implausible values. Both analyst tables are written.
-- benchmarks/reference_minimal.py fills {labs}, {as_of}, {lookback_days}, the thresholds
-- and the output paths.

CREATE OR REPLACE TEMP TABLE r AS
SELECT patient_id, CAST(collected_at AS TIMESTAMP) AS collected_at,
       CAST(collected_at AS DATE) AS day, analyte, value,
       CASE analyte WHEN 'b12_total' THEN 'ng/L' WHEN 'b12_active' THEN 'pmol/L'
                    ELSE 'µmol/L' END AS unit,
       CASE WHEN analyte = 'mma' THEN NULL
            WHEN value < CASE analyte WHEN 'b12_total' THEN {total_deficient_below}
                                      ELSE {active_deficient_below} END THEN 'deficient'
            WHEN value > CASE analyte WHEN 'b12_total' THEN {total_unlikely_above}
                                      ELSE {active_unlikely_above} END THEN 'unlikely'
            ELSE 'indeterminate' END AS band
FROM (
    SELECT patient_id, collected_at, a.analyte,
           CAST(result AS DOUBLE) * CASE lower(coalesce(l.unit, a.unit)) WHEN 'pmol/l' THEN
               (CASE a.analyte WHEN 'b12_total' THEN {pmol_to_ng} ELSE 1 END)
               WHEN 'nmol/l' THEN 0.001 ELSE 1 END AS value
    FROM {labs} AS l
    JOIN (VALUES ('B12', 'b12_total', NULL), ('VITB12', 'b12_total', NULL),
                 ('2132-9', 'b12_total', 'ng/L'), ('14685-2', 'b12_total', 'pmol/L'),
                 ('HOLOTC', 'b12_active', NULL), ('ACTB12', 'b12_active', NULL),
                 ('72160-5', 'b12_active', 'pmol/L'), ('MMA', 'mma', NULL),
                 ('13964-2', 'mma', 'umol/L'))
         AS a(code, analyte, unit) ON upper(l.test_code) = a.code
);

COPY (SELECT patient_id, collected_at, analyte, value, unit, band FROM r)
TO '{out_results}' (FORMAT parquet);

COPY (
    WITH idx AS (  -- R4: latest B12 day in the window; same day: the more severe band
        SELECT patient_id, max(day) AS day,
               arg_max(CASE band WHEN 'deficient' THEN 3 WHEN 'indeterminate' THEN 2 ELSE 1 END,
                       (day, CASE band WHEN 'deficient' THEN 3 WHEN 'indeterminate' THEN 2
                                       ELSE 1 END)) AS sev
        FROM r
        WHERE analyte <> 'mma' AND day > DATE '{as_of}' - {lookback_days}
          AND day <= DATE '{as_of}'
        GROUP BY patient_id
    ), mma AS (  -- R5: latest MMA on or after the index day (same day: the highest)
        SELECT r.patient_id, arg_max(r.value, (r.day, r.value)) AS value
        FROM r JOIN idx USING (patient_id)
        WHERE r.analyte = 'mma' AND r.day >= idx.day AND r.day <= DATE '{as_of}'
        GROUP BY r.patient_id
    ), status AS (  -- R6
        SELECT c.patient_id,
               CASE WHEN i.sev IS NULL THEN 'not_tested'
                    WHEN i.sev = 2 AND m.value IS NOT NULL THEN
                        CASE WHEN m.value > {mma_upper} THEN 'deficient' ELSE 'unlikely' END
                    ELSE ['unlikely', 'indeterminate', 'deficient'][i.sev] END AS b12_status
        FROM (SELECT DISTINCT patient_id FROM r) AS c
        LEFT JOIN idx AS i USING (patient_id) LEFT JOIN mma AS m USING (patient_id)
    )
    SELECT patient_id, b12_status, b12_status = 'indeterminate' AS needs_mma  -- R7
    FROM status ORDER BY patient_id
) TO '{out_patients}' (FORMAT parquet);
