-- Net payout against the bank credit, one row per merchant payout a PSP declared on VARIABLE report_date.
-- Requires report_base.sql.
--
-- net_settled_minor: what the payout's batch adds up to (every other row of the same file, batch and
-- currency, net of fees); payout_minor: what the PSP says it paid; bank_credit_minor: what the bank
-- statement credited for it (matched three-way by the payout_bank rule). Both differences should be 0.
WITH batch AS (
    SELECT psp, source_file, batch_id, net_currency AS currency,
           sum(net_amount_minor) FILTER (WHERE line_kind <> 'merchant_payout') AS net_settled_minor,
           sum(fee_minor + CASE WHEN line_kind = 'fee' THEN -amount_minor ELSE 0 END) AS fees_minor,
           count(*) FILTER (WHERE line_kind <> 'merchant_payout') AS batch_rows
    FROM settlement_records
    WHERE psp <> 'bank'
    GROUP BY ALL
)
SELECT p.psp,
       p.currency,
       p.batch_id,
       p.payout_reference,
       p.source_file,
       p.source_row,
       coalesce(b.batch_rows, 0) AS batch_rows,
       coalesce(b.net_settled_minor, 0) AS net_settled_minor,
       coalesce(b.fees_minor, 0) AS fees_minor,
       p.payout_minor,
       coalesce(c.bank_credit_minor, 0) AS bank_credit_minor,
       coalesce(b.net_settled_minor, 0) - p.payout_minor AS batch_minus_payout_minor,
       p.payout_minor - coalesce(c.bank_credit_minor, 0) AS payout_minus_bank_minor,
       c.bank_booking_date,
       c.bank_files,
       p.status,
       p.exception_category
FROM payout_lines p
LEFT JOIN batch b
       ON b.psp = p.psp AND b.source_file = p.source_file AND b.batch_id IS NOT DISTINCT FROM p.batch_id
      AND b.currency = p.currency
LEFT JOIN bank_credits c ON c.match_id = p.match_id
WHERE p.business_date = getvariable('report_date')
ORDER BY p.psp, p.currency, p.batch_id, p.source_file, p.source_row;
