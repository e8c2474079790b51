-- Shared views of the finance reports (DuckDB). Run first; every other report query reads these.
--
-- The caller provides:
--   outcomes          the outcome export (DESIGN.md: one row per ledger and settlement record, latest state)
--   transactions      lake/transactions, every business date (ledger records with kind, amount, jurisdiction)
--   settlement_lines  lake/settlement_lines, every business date (PSP rows and bank entries with amounts)
--   accuracy_history  lake/accuracy, ground-truth accuracy recorded per business date (may be empty)
--   exception_queue   the store's exception queue items (record_key, state: open | resolved; may be empty)
--   VARIABLE report_date (DATE)
-- Amounts are integer minor units of the row's currency, signed from the merchant's point of view
-- (+ money to the merchant). Nothing here rounds or converts between currencies.

-- Ledger records with their outcome and amount. LEFT JOIN: a record whose lake row is missing keeps a
-- NULL amount, which the report shows instead of hiding (see `missing_amounts` in report_checks.sql).
CREATE OR REPLACE TEMP VIEW ledger_records AS
SELECT 'ledger:' || o.transaction_id AS record_key,
       o.transaction_id,
       o.psp,
       o.status,
       o.exception_category,
       o.match_id,
       o.rule_id,
       o.business_date,
       t.kind,
       t.currency,
       t.jurisdiction,
       t.amount_minor * CASE WHEN t.kind IN ('deposit', 'chargeback_reversal') THEN 1 ELSE -1 END
           AS signed_minor,
       t.transaction_id IS NOT NULL AS has_amount
FROM outcomes o
LEFT JOIN transactions t
       ON t.transaction_id = o.transaction_id AND t.business_date = o.business_date
WHERE o.record = 'ledger';

-- The jurisdiction of a match group: that of its ledger records ('mixed' when they disagree).
CREATE OR REPLACE TEMP VIEW group_jurisdiction AS
SELECT match_id,
       CASE WHEN count(DISTINCT jurisdiction) > 1 THEN 'mixed' ELSE min(jurisdiction) END AS jurisdiction
FROM ledger_records
WHERE match_id IS NOT NULL AND jurisdiction IS NOT NULL
GROUP BY match_id;

-- Settlement records (PSP rows and bank entries) with their outcome, amounts and the jurisdiction of
-- the ledger records they were matched with (NULL for fees, payouts, bank entries, unmatched rows).
CREATE OR REPLACE TEMP VIEW settlement_records AS
SELECT 'settlement:' || o.psp || ':' || o.source_file || ':' || o.source_row AS record_key,
       o.psp,
       o.source_file,
       o.source_row,
       o.status,
       o.exception_category,
       o.match_id,
       o.rule_id,
       o.business_date,
       s.batch_id,
       s.line_kind,
       coalesce(s.moves_player_money, FALSE) AS moves_player_money,
       s.payout_reference,
       s.amount_minor,
       s.currency,
       coalesce(s.fee_minor, 0) AS fee_minor,
       s.net_amount_minor,
       coalesce(s.net_currency, s.currency) AS net_currency,
       g.jurisdiction,
       s.source_row IS NOT NULL AS has_amount
FROM outcomes o
LEFT JOIN settlement_lines s
       ON s.psp = o.psp AND s.source_file = o.source_file AND s.source_row = o.source_row
      AND s.booking_date = o.business_date
LEFT JOIN group_jurisdiction g ON g.match_id = o.match_id
WHERE o.record = 'settlement';

-- Merchant payouts declared in PSP files, each with the bank credit it was matched to (three-way).
CREATE OR REPLACE TEMP VIEW payout_lines AS
SELECT p.psp,
       p.source_file,
       p.source_row,
       p.batch_id,
       p.payout_reference,
       p.business_date,
       p.net_currency AS currency,
       -p.amount_minor AS payout_minor,
       p.status,
       p.exception_category,
       p.match_id
FROM settlement_records p
WHERE p.line_kind = 'merchant_payout';

CREATE OR REPLACE TEMP VIEW bank_credits AS
SELECT match_id,
       sum(amount_minor) AS bank_credit_minor,
       count(*) AS bank_entries,
       min(business_date) AS bank_booking_date,
       string_agg(DISTINCT source_file, ', ') AS bank_files
FROM settlement_records
WHERE psp = 'bank' AND line_kind = 'bank_credit' AND match_id IS NOT NULL
GROUP BY match_id;

-- Records whose exception an operator resolved (a resolved queue item and no open one). The matcher's
-- status stays `exception`; the ageing leaves these out.
CREATE OR REPLACE TEMP VIEW resolved_exceptions AS
SELECT record_key
FROM exception_queue
GROUP BY record_key
HAVING count(*) FILTER (WHERE state = 'open') = 0 AND count(*) FILTER (WHERE state = 'resolved') > 0;
