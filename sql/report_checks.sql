-- Records of VARIABLE report_date in the outcome export whose amounts are not in the lake (the report
-- cannot tie out for them; it says so instead of hiding them). Requires report_base.sql.
SELECT 'ledger' AS record, psp, count(*) AS records
FROM ledger_records
WHERE business_date = getvariable('report_date') AND NOT has_amount
GROUP BY ALL
UNION ALL
SELECT 'settlement', psp, count(*)
FROM settlement_records
WHERE business_date = getvariable('report_date') AND NOT has_amount
GROUP BY ALL
ORDER BY 1, 2;
