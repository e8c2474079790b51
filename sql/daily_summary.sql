-- Daily reconciliation summary per PSP and currency for one business date.
-- Views provided by the caller: outcomes, transactions (ledger records), settlement_lines.
-- Amounts are integer minor units of `currency`.
WITH ledger AS (
    SELECT o.psp, t.currency, o.status, o.exception_category,
           t.amount_minor * CASE WHEN t.kind IN ('deposit', 'chargeback_reversal') THEN 1 ELSE -1 END AS signed_minor
    FROM outcomes o JOIN transactions t ON o.record = 'ledger' AND o.transaction_id = t.transaction_id
), settled AS (
    SELECT o.psp, s.currency, o.status, o.exception_category, s.line_kind,
           s.amount_minor, s.fee_minor
    FROM outcomes o JOIN settlement_lines s
      ON o.record = 'settlement' AND o.psp = s.psp AND o.source_file = s.source_file AND o.source_row = s.source_row
), keys AS (
    SELECT psp, currency FROM ledger UNION SELECT psp, currency FROM settled
)
SELECT k.psp,
       k.currency,
       (SELECT count(*) FROM ledger l WHERE l.psp = k.psp AND l.currency = k.currency) AS booked_records,
       (SELECT coalesce(sum(signed_minor), 0) FROM ledger l WHERE l.psp = k.psp AND l.currency = k.currency) AS booked_net_minor,
       (SELECT count(*) FROM ledger l WHERE l.psp = k.psp AND l.currency = k.currency AND l.status = 'matched') AS ledger_matched,
       (SELECT count(*) FROM ledger l WHERE l.psp = k.psp AND l.currency = k.currency AND l.status = 'pending') AS ledger_pending,
       (SELECT count(*) FROM ledger l WHERE l.psp = k.psp AND l.currency = k.currency AND l.status = 'exception') AS ledger_exceptions,
       (SELECT count(*) FROM settled s WHERE s.psp = k.psp AND s.currency = k.currency) AS settlement_records,
       (SELECT coalesce(sum(amount_minor), 0) FROM settled s WHERE s.psp = k.psp AND s.currency = k.currency
            AND s.line_kind NOT IN ('merchant_payout', 'bank_credit', 'bank_debit')) AS settled_gross_minor,
       (SELECT coalesce(sum(fee_minor), 0) FROM settled s WHERE s.psp = k.psp AND s.currency = k.currency) AS fees_minor,
       (SELECT count(*) FROM settled s WHERE s.psp = k.psp AND s.currency = k.currency AND s.status = 'exception') AS settlement_exceptions
FROM keys k
ORDER BY k.psp, k.currency;
