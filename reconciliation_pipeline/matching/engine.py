"""Reconcile ledger records against settlement records, as of one business date.

Rules run in order; each pairs what earlier rules left over. Every record ends with exactly one
outcome: ``matched`` (with a ``match_id`` shared by its group), ``pending`` (ledger, inside the
settlement-lag window) or ``exception`` (with a category). Match ids are derived from the anchor
record's key, so the same inputs always give the same outcomes.

Rule ids (docs/matching.md):

``exact_ref``           PSP movement reference + signed amount + currency, 1:1
``merchant_ref``        no PSP reference booked: operator transaction id (merchant reference) +
                        signed amount + currency + compatible kind, 1:1
``ref_mismatch``        same reference, different amount or currency: an exception pair
``fee_row``             a fee row of a PSP file, accounted for on its own
``batch_row``           balance transfers and adjustments inside a PSP batch
``payout_bank``         a PSP merchant payout and the bank statement credit that carries it
``bank_charge``         a bank statement debit with no PSP counterpart (the bank's own charges)
``lag_window``          unmatched ledger: pending inside the window, missing_in_psp after it
``unmatched``           unmatched settlement record
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from ..frames import KIND_SIGN, OUTCOME_SCHEMA, PLAYER_LINE_KINDS, conform

RULES = (
    "exact_ref",
    "merchant_ref",
    "ref_mismatch",
    "fee_row",
    "batch_row",
    "payout_bank",
    "bank_charge",
    "lag_window",
    "unmatched",
)

#: Which settlement line kind settles which ledger kind.
KIND_TO_LINE = {
    "deposit": "capture",
    "withdrawal": "payout_to_player",
    "refund": "refund",
    "chargeback": "chargeback",
    "chargeback_reversal": "chargeback_reversal",
}
ADJUSTMENT_KINDS = ("refund", "chargeback", "chargeback_reversal")


@dataclass(frozen=True)
class ReconResult:
    outcomes: pl.DataFrame  # OUTCOME_SCHEMA plus record_key
    evidence: pl.DataFrame  # record_key, evidence (JSON text) for exceptions

    @property
    def export(self) -> pl.DataFrame:
        return conform(self.outcomes, OUTCOME_SCHEMA)


def ledger_key() -> pl.Expr:
    return pl.concat_str([pl.lit("ledger:"), pl.col("transaction_id")])


def settlement_key() -> pl.Expr:
    return pl.concat_str(
        [
            pl.lit("settlement:"),
            pl.col("psp"),
            pl.lit(":"),
            pl.col("source_file"),
            pl.lit(":"),
            pl.col("source_row").cast(pl.String),
        ]
    )


def _prepare_ledger(ledger: pl.DataFrame) -> pl.DataFrame:
    sign = pl.col("kind").replace_strict(KIND_SIGN, return_dtype=pl.Int64)
    return ledger.with_columns(
        lkey=ledger_key(),
        signed=pl.col("amount_minor") * sign,
        line_kind=pl.col("kind").replace_strict(KIND_TO_LINE, return_dtype=pl.String),
    ).sort("occurred_at", "transaction_id")


def _prepare_settlement(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.with_columns(skey=settlement_key()).sort("source_file", "source_row", "psp")


def _pair_by(
    ledger: pl.DataFrame, lines: pl.DataFrame, left_on: list[str], right_on: list[str]
) -> pl.DataFrame:
    """Pair ledger and settlement records with equal keys 1:1, in order (k-th with k-th).

    Returns ``lkey, skey, rank`` for every pair plus the surplus on either side with the other key
    null, so callers can tell duplicates from pairs.
    """
    left = ledger.select(*[pl.col(c).alias(f"k{i}") for i, c in enumerate(left_on)], "lkey").with_columns(
        rank=pl.int_range(pl.len()).over([f"k{i}" for i in range(len(left_on))])
    )
    right = lines.select(*[pl.col(c).alias(f"k{i}") for i, c in enumerate(right_on)], "skey").with_columns(
        rank=pl.int_range(pl.len()).over([f"k{i}" for i in range(len(right_on))])
    )
    keys = [f"k{i}" for i in range(len(left_on))] + ["rank"]
    return left.join(right, on=keys, how="full", coalesce=True, nulls_equal=False)


def reconcile(ledger: pl.DataFrame, lines: pl.DataFrame, *, as_of: dt.date, lag_days: int) -> ReconResult:
    """Reconcile every ledger record and settlement record known as of ``as_of``.

    ``ledger`` has LEDGER_SCHEMA columns, ``lines`` SETTLEMENT_LINE_SCHEMA columns; records dated
    after ``as_of`` are ignored.
    """
    led = _prepare_ledger(ledger.filter(pl.col("business_date") <= as_of))
    stl = _prepare_settlement(lines.filter(pl.col("booking_date") <= as_of))
    player = stl.filter(pl.col("line_kind").is_in(list(PLAYER_LINE_KINDS)))

    decided: list[pl.DataFrame] = []  # columns: key, status, match_id, rule_id, category, transaction_id
    evidence: list[pl.DataFrame] = []
    used_l: set[str] = set()
    used_s: set[str] = set()

    def remaining() -> tuple[pl.DataFrame, pl.DataFrame]:
        return (
            led.filter(~pl.col("lkey").is_in(list(used_l))),
            player.filter(~pl.col("skey").is_in(list(used_s))),
        )

    def take_pairs(pairs: pl.DataFrame, rule: str, status: str, category: str | None) -> None:
        if pairs.is_empty():
            return
        tx = pairs.select("lkey", "skey", transaction_id=pl.col("lkey").str.strip_prefix("ledger:"))
        match_id = pl.concat_str([pl.lit("M-"), pl.col("skey").str.strip_prefix("settlement:")])
        common = dict(status=pl.lit(status), rule_id=pl.lit(rule), category=pl.lit(category, pl.String))
        decided.append(
            tx.select(key=pl.col("lkey"), match_id=match_id, transaction_id="transaction_id", **common)
        )
        decided.append(
            tx.select(key=pl.col("skey"), match_id=match_id, transaction_id="transaction_id", **common)
        )
        used_l.update(tx["lkey"].to_list())
        used_s.update(tx["skey"].to_list())

    def take_singles(
        keys: pl.Series, rule: str, status: str, category: str | None, own_group: bool = False
    ) -> None:
        if keys.is_empty():
            return
        frame = pl.DataFrame({"key": keys})
        match_id = (
            pl.concat_str([pl.lit("M-"), pl.col("key").str.strip_prefix("settlement:")])
            if own_group
            else pl.lit(None, pl.String)
        )
        decided.append(
            frame.select(
                "key",
                status=pl.lit(status),
                match_id=match_id,
                rule_id=pl.lit(rule),
                category=pl.lit(category, pl.String),
                transaction_id=pl.lit(None, pl.String),
            )
        )

    # 1. exact PSP reference + signed amount + currency, k-th booking with k-th settlement.
    l_ref = led.filter(pl.col("psp_reference").is_not_null())
    pairs = _pair_by(
        l_ref,
        player.rename({"amount_minor": "signed"}),
        ["psp", "psp_reference", "signed", "currency"],
        ["psp", "movement_reference", "signed", "currency"],
    )
    exact = pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null())
    take_pairs(exact, "exact_ref", "matched", None)
    # Surplus on a key that did pair: the same movement booked or settled more than once.
    paired_keys = exact.select("k0", "k1", "k2", "k3").unique()
    surplus = pairs.join(paired_keys, on=["k0", "k1", "k2", "k3"], how="semi")
    dup_booking = surplus.filter(pl.col("skey").is_null())["lkey"]
    dup_settlement = surplus.filter(pl.col("lkey").is_null())["skey"]
    take_singles(dup_booking, "exact_ref", "exception", "duplicate_booking")
    take_singles(dup_settlement, "exact_ref", "exception", "duplicate_settlement")
    used_l.update(dup_booking.to_list())
    used_s.update(dup_settlement.to_list())

    # 2. merchant reference when the PSP reference was not booked.
    rest_l, rest_s = remaining()
    no_ref = rest_l.filter(pl.col("psp_reference").is_null())
    pairs = _pair_by(
        no_ref,
        rest_s.rename({"amount_minor": "signed"}),
        ["psp", "transaction_id", "signed", "currency", "line_kind"],
        ["psp", "merchant_reference", "signed", "currency", "line_kind"],
    )
    take_pairs(
        pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null()),
        "merchant_ref",
        "matched",
        None,
    )
    rest_l, rest_s = remaining()
    adjustments = rest_l.filter(pl.col("psp_reference").is_null() & pl.col("kind").is_in(ADJUSTMENT_KINDS))
    pairs = _pair_by(
        adjustments,
        rest_s.rename({"amount_minor": "signed"}),
        ["psp", "original_transaction_id", "signed", "currency", "line_kind"],
        ["psp", "merchant_reference", "signed", "currency", "line_kind"],
    )
    take_pairs(
        pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null()),
        "merchant_ref",
        "matched",
        None,
    )

    # 3. same reference, different amount or currency: an exception pair with its difference.
    rest_l, rest_s = remaining()
    pairs = _pair_by(
        rest_l.filter(pl.col("psp_reference").is_not_null()),
        rest_s,
        ["psp", "psp_reference"],
        ["psp", "movement_reference"],
    )
    pairs = pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null())
    if not pairs.is_empty():
        detail = pairs.join(led.select("lkey", l_amt="signed", l_ccy="currency"), on="lkey").join(
            player.select("skey", s_amt="amount_minor", s_ccy="currency"), on="skey"
        )
        same_ccy = detail.filter(pl.col("l_ccy") == pl.col("s_ccy"))
        other_ccy = detail.filter(pl.col("l_ccy") != pl.col("s_ccy"))
        take_pairs(same_ccy, "ref_mismatch", "exception", "amount_mismatch")
        take_pairs(other_ccy, "ref_mismatch", "exception", "currency_mismatch")
        for side in ("lkey", "skey"):
            evidence.append(
                detail.select(
                    record_key=pl.col(side),
                    evidence=pl.struct(
                        rule_nearly_matched=pl.lit("exact_ref"),
                        counterpart=pl.col("skey" if side == "lkey" else "lkey"),
                        booked_amount_minor="l_amt",
                        booked_currency="l_ccy",
                        settled_amount_minor="s_amt",
                        settled_currency="s_ccy",
                        difference_minor=pl.col("s_amt") - pl.col("l_amt"),
                    ).struct.json_encode(),
                )
            )

    # 4. refunds and chargebacks whose deposit is unknown.
    known = led["transaction_id"]
    unlinked = led.filter(
        pl.col("kind").is_in(ADJUSTMENT_KINDS)
        & (
            pl.col("original_transaction_id").is_null()
            | ~pl.col("original_transaction_id").is_in(known.implode())
        )
    )["lkey"]

    # 5. rows that do not move a player's money.
    non_player = stl.filter(~pl.col("line_kind").is_in(list(PLAYER_LINE_KINDS)))
    fees = non_player.filter(pl.col("line_kind") == "fee")["skey"]
    take_singles(fees, "fee_row", "matched", None, own_group=True)
    batch = non_player.filter(pl.col("line_kind").is_in(["balance_transfer", "adjustment"]))["skey"]
    take_singles(batch, "batch_row", "matched", None, own_group=True)
    other = non_player.filter(pl.col("line_kind") == "other")["skey"]
    take_singles(other, "unmatched", "exception", "unclassified_row")

    # 6. three-way: PSP merchant payout <-> bank credit (amount, currency, reference in remittance).
    payouts = non_player.filter(pl.col("line_kind") == "merchant_payout").select(
        "skey", "currency", credit=-pl.col("amount_minor"), ref="payout_reference", pdate="booking_date"
    )
    credits = non_player.filter(pl.col("line_kind") == "bank_credit").select(
        bkey="skey", currency="currency", credit="amount_minor", text="remittance_info", bdate="booking_date"
    )
    cand = (
        payouts.join(credits, on=["currency", "credit"])
        .filter(
            pl.col("ref").is_not_null()
            & pl.col("text").str.contains(pl.col("ref"), literal=True).fill_null(False)
            & ((pl.col("bdate") - pl.col("pdate")).dt.total_days().is_between(0, 3))
        )
        .sort("skey", "bkey")
    )
    chosen_p: set[str] = set()
    chosen_b: set[str] = set()
    rows = []
    for skey, bkey in cand.select("skey", "bkey").iter_rows():  # few rows: one per payout
        if skey not in chosen_p and bkey not in chosen_b:
            chosen_p.add(skey)
            chosen_b.add(bkey)
            rows.append((bkey, skey))
    if rows:
        take_pairs(
            pl.DataFrame(rows, schema={"lkey": pl.String, "skey": pl.String}, orient="row"),
            "payout_bank",
            "matched",
            None,
        )
        decided[-2] = decided[-2].with_columns(transaction_id=pl.lit(None, pl.String))
        decided[-1] = decided[-1].with_columns(transaction_id=pl.lit(None, pl.String))
        used_s.update(chosen_b)
    open_payouts = payouts.filter(~pl.col("skey").is_in(list(chosen_p)))["skey"]
    take_singles(open_payouts, "payout_bank", "exception", "missing_in_bank")
    debits = non_player.filter(pl.col("line_kind") == "bank_debit")["skey"]
    take_singles(debits, "bank_charge", "matched", None, own_group=True)
    open_credits = credits.filter(~pl.col("bkey").is_in(list(chosen_b)))["bkey"]
    take_singles(open_credits, "unmatched", "exception", "missing_in_ledger")

    # 7. what is left: ledger inside the window is pending, after it missing; settlement unmatched.
    rest_l, rest_s = remaining()
    window = (pl.lit(as_of) - pl.col("business_date")).dt.total_days() <= lag_days
    decided.append(
        rest_l.select(
            key="lkey",
            status=pl.when(window).then(pl.lit("pending")).otherwise(pl.lit("exception")),
            match_id=pl.lit(None, pl.String),
            rule_id=pl.lit("lag_window"),
            category=pl.when(window).then(pl.lit(None, pl.String)).otherwise(pl.lit("missing_in_psp")),
            transaction_id=pl.lit(None, pl.String),
        )
    )
    evidence.append(
        rest_l.filter(~window).select(
            record_key="lkey",
            evidence=pl.struct(
                window_closed=pl.col("business_date") + pl.duration(days=lag_days),
                psp_reference="psp_reference",
            ).struct.json_encode(),
        )
    )
    take_singles(rest_s["skey"], "unmatched", "exception", "missing_in_ledger")

    decisions = pl.concat(decided, how="diagonal_relaxed")
    # Unlinked adjustments: whatever they paired with, the pair becomes an unlinked_adjustment exception.
    unlinked_groups = decisions.filter(
        pl.col("key").is_in(unlinked.implode()) & pl.col("match_id").is_not_null()
    )
    decisions = (
        decisions.with_columns(
            flag=pl.col("key").is_in(unlinked.implode())
            | pl.col("match_id").is_in(unlinked_groups["match_id"].implode())
        )
        .with_columns(
            status=pl.when("flag").then(pl.lit("exception")).otherwise("status"),
            category=pl.when("flag").then(pl.lit("unlinked_adjustment")).otherwise("category"),
        )
        .drop("flag")
    )

    outcomes = _attach_records(decisions, led, stl)
    evidence_frame = (
        pl.concat(evidence)
        if evidence
        else pl.DataFrame(schema={"record_key": pl.String, "evidence": pl.String})
    )
    return ReconResult(outcomes=outcomes, evidence=evidence_frame)


def _attach_records(decisions: pl.DataFrame, led: pl.DataFrame, stl: pl.DataFrame) -> pl.DataFrame:
    ledger_rows = led.select(
        key="lkey",
        record=pl.lit("ledger"),
        transaction_id_rec="transaction_id",
        psp="psp",
        source_file=pl.lit(None, pl.String),
        source_row=pl.lit(None, pl.Int64),
        business_date="business_date",
    )
    settlement_rows = stl.select(
        key="skey",
        record=pl.lit("settlement"),
        transaction_id_rec=pl.lit(None, pl.String),
        psp="psp",
        source_file="source_file",
        source_row="source_row",
        business_date="booking_date",
    )
    records = pl.concat([ledger_rows, settlement_rows])
    joined = records.join(decisions, on="key", how="left")
    missing = joined.filter(pl.col("status").is_null())
    if not missing.is_empty():  # every record must have been decided by exactly one rule
        raise AssertionError(f"records without an outcome: {missing['key'].head(5).to_list()}")
    return joined.select(
        record_key="key",
        record="record",
        transaction_id=pl.coalesce("transaction_id_rec", "transaction_id"),
        psp="psp",
        source_file="source_file",
        source_row="source_row",
        status="status",
        match_id="match_id",
        rule_id="rule_id",
        exception_category="category",
        business_date="business_date",
    ).sort("record", "psp", "source_file", "source_row", "transaction_id", nulls_last=False)
