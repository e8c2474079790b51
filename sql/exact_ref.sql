-- The exact_ref rule of the matching engine (docs/matching.md, rule 1) in DuckDB SQL, for comparison
-- (benchmarks/bench_matching.py runs it over the same Parquet files and checks its counts against the
-- engine's). Expects two relations, `ledger` (LEDGER_SCHEMA columns) and `lines` (SETTLEMENT_LINE_SCHEMA
-- columns), and the parameter $as_of (DATE).
--
-- Ledger psp_reference = settlement movement_reference, same signed amount (merchant's view) and
-- currency; the k-th booking (by occurred_at, transaction_id) pairs with the k-th settlement row (by
-- source_file, source_row, psp) of the same key. On a key that did pair, the surplus bookings are
-- duplicate_booking and the surplus settlement rows duplicate_settlement; everything else is left
-- `open` for the later rules.
WITH l AS (
    SELECT
        transaction_id,
        psp,
        psp_reference AS ref,
        amount_minor * CASE kind
            WHEN 'deposit' THEN 1
            WHEN 'chargeback_reversal' THEN 1
            WHEN 'withdrawal' THEN -1
            WHEN 'refund' THEN -1
            WHEN 'chargeback' THEN -1
        END AS signed,
        currency,
        occurred_at
    FROM ledger
    WHERE business_date <= $as_of AND psp_reference IS NOT NULL
),
l_ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY psp, ref, signed, currency ORDER BY occurred_at, transaction_id) AS k
    FROM l
),
s_ranked AS (
    SELECT
        psp,
        source_file,
        source_row,
        movement_reference AS ref,
        amount_minor AS signed,
        currency,
        row_number() OVER (
            PARTITION BY psp, movement_reference, amount_minor, currency ORDER BY source_file, source_row, psp
        ) AS k
    FROM lines
    WHERE booking_date <= $as_of
        AND movement_reference IS NOT NULL
        AND line_kind IN (
            'capture', 'refund', 'refund_reversal', 'chargeback', 'chargeback_reversal',
            'payout_to_player', 'payout_to_player_reversal'
        )
),
paired AS (
    SELECT
        psp,
        ref,
        signed,
        currency,
        l_ranked.transaction_id,
        s_ranked.source_file,
        s_ranked.source_row,
        l_ranked.transaction_id IS NOT NULL AND s_ranked.source_row IS NOT NULL AS is_pair
    FROM l_ranked
    FULL JOIN s_ranked USING (psp, ref, signed, currency, k)
)
SELECT
    transaction_id,
    psp,
    source_file,
    source_row,
    CASE
        WHEN is_pair THEN 'matched'
        WHEN NOT bool_or(is_pair) OVER (PARTITION BY psp, ref, signed, currency) THEN 'open'
        WHEN source_row IS NULL THEN 'duplicate_booking'
        ELSE 'duplicate_settlement'
    END AS outcome
FROM paired
