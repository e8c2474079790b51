-- Reconciliation quality per business date up to VARIABLE report_date (the last 60 dates):
-- record counts by status from the outcome export, the auto-match rate (matched among the decided
-- records, pending left out), and, where it was measured (demo data, RECON_GROUND_TRUTH), the accuracy
-- against the ground truth recorded in lake/accuracy. Requires report_base.sql.
WITH per_date AS (
    SELECT business_date,
           count(*) AS records,
           count(*) FILTER (WHERE status = 'matched') AS matched,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'exception') AS exceptions
    FROM outcomes
    WHERE business_date <= getvariable('report_date')
      AND business_date > getvariable('report_date') - INTERVAL 60 DAY
    GROUP BY business_date
), truth AS (
    SELECT business_date, records AS truth_records, correct AS truth_correct, measured_at
    FROM accuracy_history
    WHERE category = 'overall'
)
SELECT coalesce(p.business_date, t.business_date) AS business_date,
       coalesce(p.records, 0) AS records,
       coalesce(p.matched, 0) AS matched,
       coalesce(p.pending, 0) AS pending,
       coalesce(p.exceptions, 0) AS exceptions,
       CASE WHEN p.matched + p.exceptions > 0
            THEN p.matched::DOUBLE / (p.matched + p.exceptions) END AS auto_match_rate,
       t.truth_records,
       t.truth_correct,
       CASE WHEN t.truth_records > 0 THEN t.truth_correct::DOUBLE / t.truth_records END AS accuracy,
       t.measured_at AS accuracy_measured_at
FROM per_date p
FULL OUTER JOIN (
    SELECT * FROM truth
    WHERE business_date <= getvariable('report_date')
      AND business_date > getvariable('report_date') - INTERVAL 60 DAY
) t ON t.business_date = p.business_date
ORDER BY business_date;
