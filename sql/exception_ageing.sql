-- Ageing of the exceptions outstanding on VARIABLE report_date: every record whose latest status is
-- `exception`, whose business date is on or before the report date and that no operator has resolved,
-- by age in days (report date minus the record's business date). Requires report_base.sql.
WITH open_exceptions AS (
    SELECT record_key, psp, currency, exception_category, business_date, signed_minor AS amount_minor
    FROM ledger_records
    WHERE status = 'exception' AND business_date <= getvariable('report_date')
    UNION ALL
    SELECT record_key, psp, currency, exception_category, business_date, amount_minor
    FROM settlement_records
    WHERE status = 'exception' AND business_date <= getvariable('report_date')
), aged AS (
    SELECT *,
           getvariable('report_date') - business_date AS age_days
    FROM open_exceptions
    WHERE record_key NOT IN (SELECT record_key FROM resolved_exceptions)
)
SELECT psp,
       currency,
       exception_category,
       CASE WHEN age_days <= 1 THEN '0-1 days'
            WHEN age_days <= 3 THEN '2-3 days'
            WHEN age_days <= 7 THEN '4-7 days'
            WHEN age_days <= 14 THEN '8-14 days'
            WHEN age_days <= 30 THEN '15-30 days'
            ELSE 'over 30 days' END AS age_bucket,
       min(CASE WHEN age_days <= 1 THEN 1 WHEN age_days <= 3 THEN 2 WHEN age_days <= 7 THEN 3
                WHEN age_days <= 14 THEN 4 WHEN age_days <= 30 THEN 5 ELSE 6 END) AS bucket_order,
       count(*) AS records,
       coalesce(sum(amount_minor), 0) AS amount_minor,
       coalesce(sum(abs(amount_minor)), 0) AS gross_amount_minor,
       min(business_date) AS oldest_business_date,
       max(age_days) AS oldest_age_days
FROM aged
GROUP BY psp, currency, exception_category, age_bucket
ORDER BY bucket_order DESC, psp, currency, exception_category;
