-- Fees per PSP, currency and kind of fee on VARIABLE report_date and over the 7 days ending on it,
-- with the captured volume they are charged on and the effective rate in basis points.
-- Fees are positive when charged, in the currency they are charged in. Requires report_base.sql.
WITH window_rows AS (
    SELECT *, business_date = getvariable('report_date') AS on_day
    FROM settlement_records
    WHERE business_date <= getvariable('report_date')
      AND business_date > getvariable('report_date') - INTERVAL 7 DAY
), fees AS (
    SELECT psp, net_currency AS currency,
           CASE WHEN line_kind IN ('chargeback', 'chargeback_reversal') THEN 'chargeback fees'
                ELSE 'transaction fees' END AS fee_type,
           fee_minor AS fee, on_day
    FROM window_rows WHERE fee_minor <> 0
    UNION ALL
    SELECT psp, net_currency, 'fee rows', -amount_minor, on_day
    FROM window_rows WHERE line_kind = 'fee'
    UNION ALL
    SELECT psp, currency, 'bank charges', -amount_minor, on_day
    FROM window_rows WHERE line_kind = 'bank_debit' AND rule_id = 'bank_charge'
), volume AS (
    -- captured volume in the currency the fees are charged in: net plus the fee taken from it
    SELECT psp, net_currency AS currency,
           coalesce(sum(net_amount_minor + fee_minor) FILTER (WHERE on_day), 0) AS captured_day_minor,
           coalesce(sum(net_amount_minor + fee_minor), 0) AS captured_7d_minor,
           count(*) FILTER (WHERE on_day) AS captures_day,
           count(*) AS captures_7d
    FROM window_rows WHERE line_kind = 'capture'
    GROUP BY ALL
), by_type AS (
    SELECT psp, currency, fee_type,
           count(*) FILTER (WHERE on_day) AS charges_day,
           coalesce(sum(fee) FILTER (WHERE on_day), 0) AS fees_day_minor,
           count(*) AS charges_7d,
           sum(fee) AS fees_7d_minor
    FROM fees
    GROUP BY ALL
)
SELECT f.psp,
       f.currency,
       f.fee_type,
       f.charges_day,
       f.fees_day_minor,
       coalesce(v.captured_day_minor, 0) AS captured_day_minor,
       CASE WHEN v.captured_day_minor > 0
            THEN round(f.fees_day_minor * 10000.0 / v.captured_day_minor, 2) END AS rate_day_bps,
       f.charges_7d,
       f.fees_7d_minor,
       coalesce(v.captured_7d_minor, 0) AS captured_7d_minor,
       CASE WHEN v.captured_7d_minor > 0
            THEN round(f.fees_7d_minor * 10000.0 / v.captured_7d_minor, 2) END AS rate_7d_bps
FROM by_type f
LEFT JOIN volume v ON v.psp = f.psp AND v.currency = f.currency
ORDER BY f.psp, f.currency, f.fee_type;
