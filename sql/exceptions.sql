-- Exceptions of VARIABLE report_date by PSP, currency, jurisdiction, record and category, with amounts.
-- Requires report_base.sql.
WITH day_exceptions AS (
    SELECT psp, currency, jurisdiction, 'ledger' AS record, exception_category, signed_minor AS amount_minor
    FROM ledger_records
    WHERE business_date = getvariable('report_date') AND status = 'exception'
    UNION ALL
    SELECT psp, currency, jurisdiction, 'settlement', exception_category, amount_minor
    FROM settlement_records
    WHERE business_date = getvariable('report_date') AND status = 'exception'
)
SELECT psp,
       currency,
       jurisdiction,
       record,
       exception_category,
       count(*) AS records,
       coalesce(sum(amount_minor), 0) AS amount_minor,
       coalesce(sum(abs(amount_minor)), 0) AS gross_amount_minor
FROM day_exceptions
GROUP BY ALL
ORDER BY psp, currency, jurisdiction NULLS LAST, record, exception_category;
