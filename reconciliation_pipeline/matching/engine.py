"""Reconcile ledger records against settlement records, as of one business date.

Rules run in order; each pairs what earlier rules left over, by joins and anti-joins over Polars
frames (no Python loops over rows). Every record ends with exactly one outcome: ``matched`` (with a
``match_id`` shared by its group), ``pending`` (inside the settlement-lag window) or ``exception``
(with a category and evidence an operator can act on). Match ids are derived from the group's anchor
record, so the same inputs always give the same outcomes, whatever their row order.

The rule ids, their order and what they pair are documented in ``docs/matching.md``; which rules run
for which PSP is configurable (``rules`` argument, ``RECON_RULES`` setting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from ..frames import KIND_SIGN, OUTCOME_SCHEMA, PLAYER_LINE_KINDS, conform
from ..money import NON_DEFAULT_EXPONENTS

#: Every rule, in the order it runs. The last two are the fallbacks and always run.
RULES = (
    "exact_ref",
    "cross_currency",
    "split_settlement",
    "split_booking",
    "merchant_ref",
    "ref_mismatch",
    "fee_row",
    "batch_row",
    "payout_bank",
    "bank_charge",
    "lag_window",
    "unmatched",
)
#: Rules a PSP may switch off (``RECON_RULES``); the others always run.
CONFIGURABLE_RULES = frozenset(RULES[:6])

#: Which settlement line kind settles which ledger kind.
KIND_TO_LINE = {
    "deposit": "capture",
    "withdrawal": "payout_to_player",
    "refund": "refund",
    "chargeback": "chargeback",
    "chargeback_reversal": "chargeback_reversal",
}
ADJUSTMENT_KINDS = ("refund", "chargeback", "chargeback_reversal")

_DECIDED = {
    "key": pl.String,
    "status": pl.String,
    "match_id": pl.String,
    "rule_id": pl.String,
    "category": pl.String,
    "transaction_id": pl.String,
}
_EVIDENCE = {"record_key": pl.String, "evidence": pl.String}


@dataclass(frozen=True)
class ReconResult:
    outcomes: pl.DataFrame  # OUTCOME_SCHEMA plus record_key
    evidence: pl.DataFrame  # record_key, evidence (JSON text) for exceptions and partial groups

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


def _anchor(column: str) -> pl.Expr:
    """Match id of a group: ``M-`` and its anchor record's key without the record prefix."""
    return pl.concat_str([pl.lit("M-"), pl.col(column).str.replace(r"^(ledger|settlement):", "")])


def _exponent(column: str) -> pl.Expr:
    return pl.col(column).replace_strict(NON_DEFAULT_EXPONENTS, default=2, return_dtype=pl.Int64)


@dataclass
class _Book:
    """What the rules have decided so far: one row per record, and evidence for some."""

    decided: list[pl.DataFrame] = field(default_factory=list)
    evidence: list[pl.DataFrame] = field(default_factory=list)

    #: Open (undecided) rows of the tracked frames, narrowed incrementally: each call anti-joins only
    #: the keys decided since the last call, so after the first rule the later ones work on little.
    #: (The original frame is kept in the entry so that its id stays unique while the book lives.)
    _open: dict[tuple[str, int], tuple[pl.DataFrame, pl.DataFrame, int]] = field(default_factory=dict)

    def remaining(self, frame: pl.DataFrame, key: str) -> pl.DataFrame:
        """The rows of ``frame`` (tracked by its ``key`` column) that no rule has decided yet."""
        name = (key, id(frame))
        _, current, seen = self._open.get(name, (frame, frame, 0))
        if seen < len(self.decided):
            fresh = pl.concat([d.select(pl.col("key").alias(key)) for d in self.decided[seen:]])
            current = current.join(fresh, on=key, how="anti")
        self._open[name] = (frame, current, len(self.decided))
        return current

    def add(
        self,
        keys: pl.DataFrame,
        *,
        rule: str,
        status: str,
        category: str | None = None,
        match_id: pl.Expr | None = None,
        transaction_id: pl.Expr | None = None,
    ) -> None:
        """Decide ``keys`` (a frame with a ``key`` column and whatever the expressions need)."""
        if keys.is_empty():
            return
        self.decided.append(
            keys.select(
                key=pl.col("key"),
                status=pl.lit(status),
                match_id=match_id if match_id is not None else pl.lit(None, pl.String),
                rule_id=pl.lit(rule),
                category=pl.lit(category, pl.String),
                transaction_id=transaction_id if transaction_id is not None else pl.lit(None, pl.String),
            )
        )

    def add_pairs(self, pairs: pl.DataFrame, *, rule: str, status: str, category: str | None = None) -> None:
        """Decide 1:1 pairs (``lkey``, ``skey``): both records share a match id anchored on the settlement."""
        if pairs.is_empty():
            return
        tx = pl.col("lkey").str.strip_prefix("ledger:")
        for side in ("lkey", "skey"):
            self.add(
                pairs.with_columns(key=pl.col(side)),
                rule=rule,
                status=status,
                category=category,
                match_id=_anchor("skey"),
                transaction_id=tx,
            )

    def note(self, frame: pl.DataFrame, key: pl.Expr, **fields: pl.Expr | str | int | None) -> None:
        """Evidence for records: a JSON object per row."""
        if frame.is_empty():
            return
        exprs = [
            (value if isinstance(value, pl.Expr) else pl.lit(value)).alias(name)
            for name, value in fields.items()
        ]
        self.evidence.append(frame.select(record_key=key, evidence=pl.struct(exprs).struct.json_encode()))


def _rank_within(keys: list[str]) -> pl.Expr:
    return pl.int_range(pl.len()).over(keys)


def _pair_by(
    ledger: pl.DataFrame, lines: pl.DataFrame, left_on: list[str], right_on: list[str]
) -> pl.DataFrame:
    """Pair ledger and settlement records with equal keys 1:1, k-th with k-th (in their sorted order).

    Returns the key columns ``k0..``, ``lkey`` and ``skey``: pairs, and the surplus on either side with
    the other key null, so callers can tell duplicates from pairs.
    """
    names = [f"k{i}" for i in range(len(left_on))]
    left = ledger.select(*[pl.col(c).alias(n) for c, n in zip(left_on, names, strict=True)], "lkey")
    right = lines.select(*[pl.col(c).alias(n) for c, n in zip(right_on, names, strict=True)], "skey")
    left = left.drop_nulls(names).with_columns(rank=_rank_within(names))
    right = right.drop_nulls(names).with_columns(rank=_rank_within(names))
    return left.join(right, on=[*names, "rank"], how="full", coalesce=True)


def _enabled(frame: pl.DataFrame, rule: str, rules: Mapping[str, Sequence[str]] | None) -> pl.DataFrame:
    """Only the rows of PSPs for which ``rule`` is switched on."""
    if rules is None or rule not in CONFIGURABLE_RULES:
        return frame
    off = [psp for psp, enabled in rules.items() if rule not in enabled]
    return frame.filter(~pl.col("psp").is_in(off)) if off else frame


def _prepare_ledger(ledger: pl.DataFrame) -> pl.DataFrame:
    sign = pl.col("kind").replace_strict(KIND_SIGN, return_dtype=pl.Int64)
    return ledger.select(
        "transaction_id",
        "psp",
        "psp_reference",
        "original_transaction_id",
        "kind",
        "amount_minor",
        "currency",
        "occurred_at",
        "business_date",
        lkey=ledger_key(),
        signed=pl.col("amount_minor") * sign,
        line_kind=pl.col("kind").replace_strict(KIND_TO_LINE, return_dtype=pl.String),
    ).sort("occurred_at", "transaction_id")


def _prepare_settlement(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.select(
        "psp",
        "source_file",
        "source_row",
        "line_kind",
        "movement_reference",
        "merchant_reference",
        "payout_reference",
        "remittance_info",
        "amount_minor",
        "currency",
        "net_currency",
        "exchange_rate",
        "presentment_amount_minor",
        "presentment_currency",
        "booking_date",
        skey=settlement_key(),
    ).sort("source_file", "source_row", "psp")


def reconcile(
    ledger: pl.DataFrame,
    lines: pl.DataFrame,
    *,
    as_of: dt.date,
    lag_days: int,
    fx_tolerance_minor: int = 2,
    rules: Mapping[str, Sequence[str]] | None = None,
) -> ReconResult:
    """Reconcile every ledger record and settlement record known as of ``as_of``.

    ``ledger`` has LEDGER_SCHEMA columns, ``lines`` SETTLEMENT_LINE_SCHEMA columns; records dated
    after ``as_of`` are ignored. ``rules`` maps a PSP to the configurable rules it uses (default: all).
    """
    led = _prepare_ledger(ledger.filter(pl.col("business_date") <= as_of))
    stl = _prepare_settlement(lines.filter(pl.col("booking_date") <= as_of))
    player = stl.filter(pl.col("line_kind").is_in(list(PLAYER_LINE_KINDS)))
    book = _Book()
    window_open = (pl.lit(as_of) - pl.col("business_date")).dt.total_days() <= lag_days

    def open_ledger(rule: str, *, with_reference: bool = True) -> pl.DataFrame:
        """Ledger records no rule has decided yet, of the PSPs that use ``rule``, with (or without)
        a booked PSP reference."""
        has_ref = pl.col("psp_reference").is_not_null()
        return _enabled(book.remaining(led, "lkey"), rule, rules).filter(
            has_ref if with_reference else ~has_ref
        )

    # 1. exact_ref: PSP movement reference + signed amount + currency, k-th booking with k-th settlement.
    l_ref = _enabled(led.filter(pl.col("psp_reference").is_not_null()), "exact_ref", rules)
    keys = ["psp", "psp_reference", "signed", "currency"]
    pairs = _pair_by(
        l_ref,
        player.rename({"amount_minor": "signed"}),
        keys,
        ["psp", "movement_reference", "signed", "currency"],
    )
    exact = pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null())
    book.add_pairs(exact, rule="exact_ref", status="matched")
    # Surplus on a key that did pair: the same movement booked or settled more than once.
    first = exact.filter(pl.col("rank") == 0).select("k0", "k1", "k2", "k3", first_l="lkey", first_s="skey")
    surplus = pairs.join(first, on=["k0", "k1", "k2", "k3"], how="inner")
    dup_booking = surplus.filter(pl.col("skey").is_null()).with_columns(key=pl.col("lkey"))
    dup_settlement = surplus.filter(pl.col("lkey").is_null()).with_columns(key=pl.col("skey"))
    book.add(dup_booking, rule="exact_ref", status="exception", category="duplicate_booking")
    book.add(dup_settlement, rule="exact_ref", status="exception", category="duplicate_settlement")
    for dup, what in ((dup_booking, "booked"), (dup_settlement, "settled")):
        book.note(
            dup,
            pl.col("key"),
            rule_nearly_matched="exact_ref",
            duplicate_of=pl.col("first_l"),
            settled_by=pl.col("first_s"),
            psp_reference=pl.col("k1"),
            signed_amount_minor=pl.col("k2"),
            currency=pl.col("k3"),
            why=f"the same PSP movement {what} more than once",
        )

    # 2. cross_currency: settled in another currency; the PSP reports the amount the player saw
    #    (presentment) or its own exchange rate, within a tolerance in minor units.
    rest_l = open_ledger("cross_currency")
    rest_s = book.remaining(player, "skey")
    fx = rest_s.filter(
        pl.col("presentment_currency").is_not_null() & (pl.col("presentment_currency") != pl.col("currency"))
    )
    pairs = _pair_by(
        rest_l,
        fx,
        ["psp", "psp_reference", "signed", "currency"],
        ["psp", "movement_reference", "presentment_amount_minor", "presentment_currency"],
    )
    book.add_pairs(
        pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null()),
        rule="cross_currency",
        status="matched",
    )
    rest_l = book.remaining(rest_l, "lkey")
    rated = book.remaining(rest_s, "skey").filter(
        pl.col("exchange_rate").is_not_null()
        & pl.col("net_currency").is_not_null()
        & (pl.col("net_currency") != pl.col("currency"))
        & pl.col("presentment_amount_minor").is_null()
    )
    if not rated.is_empty() and not rest_l.is_empty():
        scale = (_exponent("net_currency") - _exponent("currency")).replace_strict(
            {-3: "0.001", -2: "0.01", -1: "0.1", 0: "1", 1: "10", 2: "100", 3: "1000"}, return_dtype=pl.String
        )
        rated = rated.with_columns(
            converted=(
                pl.col("amount_minor").cast(pl.Decimal(38, 0))
                * pl.col("exchange_rate").str.to_decimal(scale=12)
                * scale.str.to_decimal(scale=3)
            )
            .round(0)
            .cast(pl.Int64)
        )
        cand = rest_l.join(
            rated,
            left_on=["psp", "psp_reference", "currency"],
            right_on=["psp", "movement_reference", "net_currency"],
            suffix="_s",
        ).filter((pl.col("converted") - pl.col("signed")).abs() <= fx_tolerance_minor)
        cand = cand.unique("lkey", keep="first", maintain_order=True).unique(
            "skey", keep="first", maintain_order=True
        )
        book.add_pairs(cand.select("lkey", "skey"), rule="cross_currency", status="matched")

    # 3. split_settlement: one booking settled in several rows (partial captures) that add up to it.
    rest_l = open_ledger("split_settlement")
    rest_s = book.remaining(player, "skey")
    parts = rest_s.group_by("psp", "movement_reference", "currency", "line_kind").agg(
        settled=pl.col("amount_minor").sum(), rows=pl.len(), skeys=pl.col("skey")
    )
    parts = parts.filter(pl.col("rows") >= 2)
    unique_l = rest_l.filter(pl.len().over("psp", "psp_reference", "currency", "line_kind") == 1)
    split = unique_l.join(
        parts,
        left_on=["psp", "psp_reference", "currency", "line_kind"],
        right_on=["psp", "movement_reference", "currency", "line_kind"],
    )
    complete = split.filter(pl.col("settled") == pl.col("signed"))
    members = pl.concat(
        [
            complete.select(key="lkey", anchor="lkey"),
            complete.explode("skeys").select(key="skeys", anchor="lkey"),
        ]
    )
    book.add(
        members.join(complete.select("lkey", tx="transaction_id"), left_on="anchor", right_on="lkey"),
        rule="split_settlement",
        status="matched",
        match_id=_anchor("anchor"),
        transaction_id=pl.col("tx"),
    )
    # Several parts but fewer than booked so far, inside the window: wait for the rest. (A single part
    # short of the booking is an amount mismatch until a second part shows it is a split.)
    short = split.filter(
        (pl.col("settled").abs() < pl.col("signed").abs())
        & (pl.col("settled").sign() == pl.col("signed").sign())
        & window_open
    )
    waiting = pl.concat([short.select(key="lkey"), short.explode("skeys").select(key="skeys")])
    book.add(waiting, rule="split_settlement", status="pending")
    book.note(
        short,
        pl.col("lkey"),
        rule_nearly_matched="split_settlement",
        booked_amount_minor=pl.col("signed"),
        settled_so_far_minor=pl.col("settled"),
        parts=pl.col("rows"),
    )

    # 4. split_booking: one settlement row for a payment the operator booked in several parts.
    rest_l = open_ledger("split_booking")
    rest_s = book.remaining(player, "skey")
    booked = rest_l.group_by("psp", "psp_reference", "currency", "line_kind").agg(
        booked=pl.col("signed").sum(), rows=pl.len(), lkeys=pl.col("lkey"), txs=pl.col("transaction_id")
    )
    booked = booked.filter(pl.col("rows") >= 2)
    unique_s = rest_s.filter(pl.len().over("psp", "movement_reference", "currency", "line_kind") == 1)
    many = booked.join(
        unique_s,
        left_on=["psp", "psp_reference", "currency", "line_kind", "booked"],
        right_on=["psp", "movement_reference", "currency", "line_kind", "amount_minor"],
    )
    members = pl.concat(
        [
            many.select(key="skey", anchor="skey", tx=pl.col("txs").list.first()),
            many.explode("lkeys", "txs").select(key="lkeys", anchor="skey", tx="txs"),
        ]
    )
    book.add(
        members,
        rule="split_booking",
        status="matched",
        match_id=_anchor("anchor"),
        transaction_id=pl.col("tx"),
    )

    # 5. merchant_ref: no PSP reference booked; the operator's transaction id (or, for refunds and
    #    chargebacks, their deposit's) is the PSP's merchant reference.
    for ledger_ref in ("transaction_id", "original_transaction_id"):
        rest_l = open_ledger("merchant_ref", with_reference=False)
        if ledger_ref == "original_transaction_id":
            rest_l = rest_l.filter(pl.col("kind").is_in(ADJUSTMENT_KINDS))
        rest_s = book.remaining(player, "skey")
        pairs = _pair_by(
            rest_l,
            rest_s.rename({"amount_minor": "signed"}),
            ["psp", ledger_ref, "signed", "currency", "line_kind"],
            ["psp", "merchant_reference", "signed", "currency", "line_kind"],
        )
        book.add_pairs(
            pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null()),
            rule="merchant_ref",
            status="matched",
        )

    # 6. ref_mismatch: same reference, different amount or currency: an exception pair with the difference.
    rest_l = open_ledger("ref_mismatch")
    rest_s = book.remaining(player, "skey")
    pairs = _pair_by(rest_l, rest_s, ["psp", "psp_reference"], ["psp", "movement_reference"])
    pairs = pairs.filter(pl.col("lkey").is_not_null() & pl.col("skey").is_not_null())
    detail = pairs.join(led.select("lkey", l_amt="signed", l_ccy="currency"), on="lkey").join(
        player.select("skey", s_amt="amount_minor", s_ccy="currency"), on="skey"
    )
    book.add_pairs(
        detail.filter(pl.col("l_ccy") == pl.col("s_ccy")),
        rule="ref_mismatch",
        status="exception",
        category="amount_mismatch",
    )
    book.add_pairs(
        detail.filter(pl.col("l_ccy") != pl.col("s_ccy")),
        rule="ref_mismatch",
        status="exception",
        category="currency_mismatch",
    )
    for side, other in (("lkey", "skey"), ("skey", "lkey")):
        book.note(
            detail,
            pl.col(side),
            rule_nearly_matched="exact_ref",
            counterpart=pl.col(other),
            booked_amount_minor=pl.col("l_amt"),
            booked_currency=pl.col("l_ccy"),
            settled_amount_minor=pl.col("s_amt"),
            settled_currency=pl.col("s_ccy"),
            difference_minor=pl.col("s_amt") - pl.col("l_amt"),
        )

    # 7. rows that move no player money: fees and batch rows, then PSP payout <-> bank credit.
    non_player = stl.filter(~pl.col("line_kind").is_in(list(PLAYER_LINE_KINDS))).rename({"skey": "key"})
    own_group = _anchor("key")
    book.add(
        non_player.filter(pl.col("line_kind") == "fee"), rule="fee_row", status="matched", match_id=own_group
    )
    book.add(
        non_player.filter(pl.col("line_kind").is_in(["balance_transfer", "adjustment"])),
        rule="batch_row",
        status="matched",
        match_id=own_group,
    )
    unknown = non_player.filter(pl.col("line_kind") == "other")
    book.add(unknown, rule="unmatched", status="exception", category="unclassified_row")
    book.note(
        unknown,
        pl.col("key"),
        why="a row type this platform does not know; classify it",
        psp=pl.col("psp"),
        amount_minor=pl.col("amount_minor"),
    )

    payouts = non_player.filter(pl.col("line_kind") == "merchant_payout").select(
        skey="key",
        currency="currency",
        credit=-pl.col("amount_minor"),
        ref="payout_reference",
        pdate="booking_date",
    )
    credits = non_player.filter(pl.col("line_kind") == "bank_credit").select(
        bkey="key", currency="currency", credit="amount_minor", text="remittance_info", bdate="booking_date"
    )
    cand = (
        payouts.join(credits, on=["currency", "credit"])
        .filter(
            pl.col("ref").is_not_null()
            & pl.col("text").str.contains(pl.col("ref"), literal=True).fill_null(False)
            & (pl.col("bdate") - pl.col("pdate")).dt.total_days().is_between(0, 3)
        )
        .sort("skey", "bkey")
    )
    # 1:1: each payout takes its first candidate credit, each credit its first payout.
    chosen = cand.unique("skey", keep="first", maintain_order=True).unique(
        "bkey", keep="first", maintain_order=True
    )
    for side in ("skey", "bkey"):
        book.add(
            chosen.with_columns(key=pl.col(side)),
            rule="payout_bank",
            status="matched",
            match_id=_anchor("skey"),
        )
    open_payouts = payouts.join(chosen, on="skey", how="anti")
    waiting = open_payouts.filter((pl.lit(as_of) - pl.col("pdate")).dt.total_days() <= 3)
    book.add(waiting.with_columns(key=pl.col("skey")), rule="payout_bank", status="pending")
    late = open_payouts.join(waiting, on="skey", how="anti").with_columns(key=pl.col("skey"))
    book.add(late, rule="payout_bank", status="exception", category="missing_in_bank")
    book.note(
        late,
        pl.col("key"),
        why="no bank statement credit carries this payout within 3 days",
        payout_reference=pl.col("ref"),
        amount_minor=pl.col("credit"),
        currency=pl.col("currency"),
    )
    book.add(
        non_player.filter(pl.col("line_kind") == "bank_debit"),
        rule="bank_charge",
        status="matched",
        match_id=own_group,
    )
    open_credits = credits.join(chosen, on="bkey", how="anti").with_columns(key=pl.col("bkey"))
    book.add(open_credits, rule="unmatched", status="exception", category="missing_in_ledger")
    book.note(
        open_credits,
        pl.col("key"),
        why="a bank credit that no PSP payout explains",
        remittance_info=pl.col("text"),
        amount_minor=pl.col("credit"),
        currency=pl.col("currency"),
    )

    # 8. what is left: ledger inside the window is pending, after it missing; settlement unmatched.
    rest_l = book.remaining(led, "lkey")
    book.add(rest_l.filter(window_open).with_columns(key=pl.col("lkey")), rule="lag_window", status="pending")
    missing = rest_l.filter(~window_open).with_columns(key=pl.col("lkey"))
    book.add(missing, rule="lag_window", status="exception", category="missing_in_psp")
    book.note(
        missing,
        pl.col("key"),
        why="not settled when the settlement-lag window closed",
        window_closed=(pl.col("business_date") + pl.duration(days=lag_days)).cast(pl.String),
        psp_reference=pl.col("psp_reference"),
        amount_minor=pl.col("signed"),
        currency=pl.col("currency"),
    )
    rest_s = book.remaining(player, "skey").with_columns(key=pl.col("skey"))
    book.add(rest_s, rule="unmatched", status="exception", category="missing_in_ledger")
    candidates = rest_s.join(
        led.select("transaction_id", cand_key="lkey"),
        left_on="merchant_reference",
        right_on="transaction_id",
        how="left",
    )
    book.note(
        candidates,
        pl.col("key"),
        why="settled by the PSP, never booked",
        movement_reference=pl.col("movement_reference"),
        merchant_reference=pl.col("merchant_reference"),
        amount_minor=pl.col("amount_minor"),
        currency=pl.col("currency"),
        candidate_booking=pl.col("cand_key"),
    )

    decisions = pl.concat([d.select(list(_DECIDED)).cast(_DECIDED) for d in book.decided])  # type: ignore[arg-type]
    decisions = _overlay_unlinked(decisions, led, book)
    outcomes = _attach_records(decisions, led, stl)
    evidence = (
        pl.concat([e.cast(_EVIDENCE) for e in book.evidence]).unique(  # type: ignore[arg-type]
            "record_key", keep="last", maintain_order=True
        )
        if book.evidence
        else pl.DataFrame(schema=_EVIDENCE)
    )
    return ReconResult(outcomes=outcomes, evidence=evidence)


def _overlay_unlinked(decisions: pl.DataFrame, led: pl.DataFrame, book: _Book) -> pl.DataFrame:
    """Refunds, chargebacks and reversals whose deposit is not a booked transaction, and whatever they
    paired with, become ``unlinked_adjustment`` exceptions (the pairing stays visible in the match id)."""
    unlinked = led.filter(
        pl.col("kind").is_in(ADJUSTMENT_KINDS)
        & (
            pl.col("original_transaction_id").is_null()
            | ~pl.col("original_transaction_id").is_in(led["transaction_id"].implode())
        )
    )
    if unlinked.is_empty():
        return decisions
    book.note(
        unlinked,
        pl.col("lkey"),
        why="the deposit this adjustment belongs to is not booked",
        original_transaction_id=pl.col("original_transaction_id"),
        kind=pl.col("kind"),
    )
    keys = unlinked["lkey"].implode()
    groups = decisions.filter(pl.col("key").is_in(keys) & pl.col("match_id").is_not_null())["match_id"]
    flag = pl.col("key").is_in(keys) | pl.col("match_id").is_in(groups.implode())
    partners = decisions.filter(flag & ~pl.col("key").is_in(keys))
    book.note(
        partners,
        pl.col("key"),
        why="paired with a refund or chargeback whose deposit is not booked",
        match_id=pl.col("match_id"),
        rule_id=pl.col("rule_id"),
    )
    return decisions.with_columns(
        status=pl.when(flag).then(pl.lit("exception")).otherwise("status"),
        category=pl.when(flag).then(pl.lit("unlinked_adjustment")).otherwise("category"),
    )


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
    counts = decisions.group_by("key").len()
    twice = counts.filter(pl.col("len") > 1)
    if not twice.is_empty():  # every record must be decided by exactly one rule
        raise AssertionError(f"records decided twice: {twice['key'].head(5).to_list()}")
    joined = records.join(decisions, on="key", how="left")
    missing = joined.filter(pl.col("status").is_null())
    if not missing.is_empty():
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
