-- Daily reconciliation summary per PSP, currency and jurisdiction for VARIABLE report_date.
-- Ledger records booked on the date and settlement records the PSPs (and the bank) booked on the date,
-- with their latest status in the outcome store. Requires report_base.sql.
--
-- jurisdiction is that of the ledger record, or of the ledger records a settlement row was matched
-- with; rows with none (fee rows, merchant payouts, bank entries, unmatched settlement rows) have NULL.
-- Fees are counted in the currency they are charged in (a row's net currency), payouts in the
-- currency paid, bank credits in the currency credited.
WITH day_ledger AS (
    SELECT * FROM ledger_records WHERE business_date = getvariable('report_date')
), day_settlement AS (
    SELECT * FROM settlement_records WHERE business_date = getvariable('report_date')
), facts AS (
    SELECT psp, currency, jurisdiction, 'ledger' AS record, status, exception_category,
           signed_minor AS amount_minor, FALSE AS player_line,
           0::BIGINT AS fee_minor, 0::BIGINT AS payout_minor, 0::BIGINT AS bank_credit_minor
    FROM day_ledger
    UNION ALL
    SELECT psp, currency, jurisdiction, 'settlement', status, exception_category,
           amount_minor, moves_player_money, 0, 0, 0
    FROM day_settlement
    UNION ALL
    -- fees: charged on a row (fee_minor, net currency) or as a fee row of their own (negative amount)
    SELECT psp, net_currency, jurisdiction, 'fee', NULL, NULL, 0, FALSE,
           fee_minor + CASE WHEN line_kind = 'fee' THEN -amount_minor ELSE 0 END, 0, 0
    FROM day_settlement
    WHERE fee_minor <> 0 OR line_kind = 'fee'
    UNION ALL
    -- merchant payouts declared on the date, against the bank credit they were matched to
    SELECT p.psp, p.currency, NULL, 'payout', NULL, NULL, 0, FALSE,
           0, p.payout_minor, coalesce(b.bank_credit_minor, 0)
    FROM payout_lines p LEFT JOIN bank_credits b ON b.match_id = p.match_id
    WHERE p.business_date = getvariable('report_date')
)
SELECT psp,
       currency,
       jurisdiction,
       count(*) FILTER (WHERE record = 'ledger') AS booked_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'ledger'), 0) AS booked_minor,
       count(*) FILTER (WHERE record = 'ledger' AND status = 'matched') AS ledger_matched_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'ledger' AND status = 'matched'), 0)
           AS ledger_matched_minor,
       count(*) FILTER (WHERE record = 'ledger' AND status = 'pending') AS ledger_pending_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'ledger' AND status = 'pending'), 0)
           AS ledger_pending_minor,
       count(*) FILTER (WHERE record = 'ledger' AND status = 'exception') AS ledger_exception_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'ledger' AND status = 'exception'), 0)
           AS ledger_exception_minor,
       count(*) FILTER (WHERE record = 'settlement') AS settlement_records,
       count(*) FILTER (WHERE record = 'settlement' AND player_line) AS settled_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'settlement' AND player_line), 0) AS settled_minor,
       count(*) FILTER (WHERE record = 'settlement' AND status = 'matched') AS settlement_matched_count,
       count(*) FILTER (WHERE record = 'settlement' AND status = 'pending') AS settlement_pending_count,
       count(*) FILTER (WHERE record = 'settlement' AND status = 'exception') AS settlement_exception_count,
       coalesce(sum(amount_minor) FILTER (WHERE record = 'settlement' AND status = 'exception'), 0)
           AS settlement_exception_minor,
       count(*) FILTER (WHERE status = 'exception') AS exceptions,
       count(*) FILTER (WHERE exception_category = 'missing_in_psp') AS missing_in_psp,
       count(*) FILTER (WHERE exception_category = 'missing_in_ledger') AS missing_in_ledger,
       count(*) FILTER (WHERE exception_category = 'amount_mismatch') AS amount_mismatch,
       count(*) FILTER (WHERE exception_category = 'currency_mismatch') AS currency_mismatch,
       count(*) FILTER (WHERE exception_category = 'duplicate_settlement') AS duplicate_settlement,
       count(*) FILTER (WHERE exception_category = 'duplicate_booking') AS duplicate_booking,
       count(*) FILTER (WHERE exception_category = 'unlinked_adjustment') AS unlinked_adjustment,
       count(*) FILTER (WHERE exception_category = 'missing_in_bank') AS missing_in_bank,
       count(*) FILTER (WHERE exception_category NOT IN (
           'missing_in_psp', 'missing_in_ledger', 'amount_mismatch', 'currency_mismatch',
           'duplicate_settlement', 'duplicate_booking', 'unlinked_adjustment', 'missing_in_bank'))
           AS other_exceptions,
       sum(fee_minor) AS fees_minor,
       sum(payout_minor) AS payout_minor,
       sum(bank_credit_minor) AS bank_credit_minor,
       sum(payout_minor) - sum(bank_credit_minor) AS payout_minus_bank_minor
FROM facts
GROUP BY ALL
ORDER BY psp, currency, jurisdiction NULLS LAST;
