"""Reconcile ledger records against settlement records, as of one business date.

Rules run in order; each pairs what earlier rules left over, by joins over Polars frames (no Python
loops over rows). Every record ends with exactly one outcome: ``matched`` (with a ``match_id`` shared
by its group), ``pending`` (inside the settlement-lag window) or ``exception`` (with a category and
evidence an operator can act on). Match ids are derived from the group's anchor record, so the same
inputs always give the same outcomes, whatever their row order.

How it stays fast at scale: records are integer row ids inside the engine (``book.Book``), strings
(record keys, match ids) are made only for the output; the first rule (``exact_ref``, where most
records match) is one hash join on a 64-bit key hash, verified column by column; every later rule
works on the residual it leaves. The outcome frame is a lazy plan over compact columns, so it can be
streamed to Parquet (``ReconResult.sink_outcomes``) without holding every string in memory.

The rule ids, their order and what they pair are documented in ``docs/matching.md``; which rules run
for which PSP is configurable (``rules`` argument, ``RECON_RULES`` setting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import polars as pl

from ..frames import KIND_SIGN, OUTCOME_SCHEMA, PLAYER_LINE_KINDS, conform, plain_strings
from ..money import NON_DEFAULT_EXPONENTS
from .book import (
    CATEGORIES,
    EVIDENCE_PARTS,
    EXCEPTION,
    LEDGER,
    MATCHED,
    NO_ANCHOR,
    PENDING,
    SETTLEMENT,
    STATUSES,
    Book,
    ids_of,
)

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

#: The only columns the engine reads: callers may pass LazyFrames over wider files (a Parquet scan
#: then reads just these).
LEDGER_COLUMNS = (
    "transaction_id",
    "psp",
    "psp_reference",
    "original_transaction_id",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "business_date",
)
SETTLEMENT_COLUMNS = (
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
)

if TYPE_CHECKING:
    from polars._typing import ParquetCompression

_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)
_EVIDENCE = {"record_key": pl.String, "evidence": pl.String}
_LEDGER_ORDER = ("occurred_at", "transaction_id")
#: Columns with few distinct values, kept as Categorical inside the engine (4 bytes a row, not a string).
_LEDGER_NAMES = ("psp", "kind", "currency")
_SETTLEMENT_NAMES = ("psp", "source_file", "line_kind", "currency", "net_currency")
#: Settlement columns exact_ref does not use and the later rules need on a few rows only (the non-player
#: rows' payout and remittance texts; the open player rows' merchant reference and exchange columns): read
#: for those rows after exact_ref (a second, filtered scan of the input) rather than held for every row.
_LATE_COLUMNS = (
    "merchant_reference",
    "payout_reference",
    "remittance_info",
    "exchange_rate",
    "presentment_amount_minor",
    "presentment_currency",
)
#: The settlement columns, in this order, of the frames the rules after exact_ref see: the rows that move
#: no player money, and the open player rows (without the non-player rows' payout and remittance texts).
_NON_PLAYER_FRAME = ("sid", *SETTLEMENT_COLUMNS, "player")
_PLAYER_FRAME = tuple(c for c in _NON_PLAYER_FRAME if c not in ("payout_reference", "remittance_info"))
_SETTLEMENT_ORDER = ("source_file", "source_row", "psp")


class ReconResult:
    """The outcome of one reconciliation.

    ``outcomes`` (OUTCOME_SCHEMA plus ``record_key``) is built on first use from compact columns;
    ``sink_outcomes`` streams the same rows to Parquet instead. ``evidence``: ``record_key`` and
    ``evidence`` (JSON text) for exceptions, pending partial groups and their counterparts.
    """

    def __init__(self, plan: pl.LazyFrame, evidence: pl.DataFrame) -> None:
        self._plan = plan
        self._written: Path | None = None
        self.evidence = evidence

    @cached_property
    def outcomes(self) -> pl.DataFrame:
        made = pl.read_parquet(self._written) if self._written else self._plan.collect()
        return plain_strings(made)

    def written_to(self, path: Path) -> None:
        """The outcomes were sunk to ``path`` (then moved there): ``outcomes`` reads them back from it
        rather than making every string a second time."""
        self._written = path

    @property
    def export(self) -> pl.DataFrame:
        return conform(self.outcomes, OUTCOME_SCHEMA)

    def sink_outcomes(
        self, path: str | Path, *, compression: ParquetCompression = "lz4", statistics: bool = False
    ) -> None:
        """Write the outcomes to Parquet with Polars' streaming engine (the strings are made batch by
        batch rather than all at once). By default lz4 and no column statistics: cheaper to write than
        zstd with min/max per page, for a lake table that is read back whole.

        The columns with few distinct values (``record``, ``psp``, ``source_file``, ``status``,
        ``rule_id``, ``exception_category``) are written dictionary-encoded straight from their codes:
        Parquet strings all the same to any reader (DuckDB reads VARCHAR), which Polars reads back as
        Enums (:func:`plain_strings` turns them into strings again)."""
        self._plan.sink_parquet(path, engine="streaming", compression=compression, statistics=statistics)


def _enabled(frame: _Frame, rule: str, rules: Mapping[str, Sequence[str]] | None) -> _Frame:
    """Only the rows of PSPs for which ``rule`` is switched on."""
    if rules is None or rule not in CONFIGURABLE_RULES:
        return frame
    off = [psp for psp, enabled in rules.items() if rule not in enabled]
    return frame.filter(~pl.col("psp").is_in(off)) if off else frame


def _exponent(column: str) -> pl.Expr:
    return pl.col(column).replace_strict(NON_DEFAULT_EXPONENTS, default=2, return_dtype=pl.Int64)


def _key_hash(*columns: str) -> pl.Expr:
    """A 64-bit hash of a composite key (columns of the same types on both sides hash alike)."""
    return pl.struct([pl.col(c).alias(f"k{i}") for i, c in enumerate(columns)]).hash(seed=20260301)


def _lkey() -> pl.Expr:
    return pl.concat_str([pl.lit("ledger:"), pl.col("transaction_id")])


def _skey(names: _Names | None = None) -> pl.Expr:
    """A settlement row's record key (see :func:`_file_row` for ``names``)."""
    return _file_row("settlement:", "psp", "source_file", "source_row", names)


def _file_row(lead: str, psp: str, file: str, row: str, names: _Names | None = None) -> pl.Expr:
    """``lead + psp + ":" + file + ":" + row``; with ``names`` (whose Enums ``psp`` and ``file`` are of)
    the part before the row is gathered from the few (psp, file) prefixes rather than assembled row by
    row (twice as fast over 20M rows)."""
    prefix = None if names is None else names.prefix(lead, psp, file)
    if prefix is None:
        prefix = pl.concat_str([pl.lit(lead), pl.col(psp), pl.lit(":"), pl.col(file), pl.lit(":")])
    number = None if names is None else names.row_text(row)
    return pl.concat_str([prefix, pl.col(row).cast(pl.String) if number is None else number])


def _rows(frame: pl.DataFrame, ids: pl.Series | np.ndarray) -> pl.DataFrame:
    """Rows of a prepared frame by row id (its row position)."""
    return frame[np.sort(ids_of(ids))]


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """0, 1, .., size-1 for each size, concatenated."""
    ends = np.cumsum(sizes)
    return np.arange(ends[-1] if ends.size else 0) - np.repeat(ends - sizes, sizes)


def _pair_by(
    ledger: pl.DataFrame, lines: pl.DataFrame, left_on: list[str], right_on: list[str]
) -> pl.DataFrame:
    """Pair ledger and settlement records with equal keys 1:1, k-th with k-th in the frames' (canonical)
    order. Returns the key columns ``k0..``, ``rank``, ``lid`` and ``sid``: pairs, and the surplus on
    either side with the other id null, so callers can tell duplicates from pairs."""
    names = [f"k{i}" for i in range(len(left_on))]
    left = ledger.select(*[pl.col(c).alias(n) for c, n in zip(left_on, names, strict=True)], "lid")
    right = lines.select(*[pl.col(c).alias(n) for c, n in zip(right_on, names, strict=True)], "sid")
    left = left.drop_nulls(names).with_columns(rank=pl.int_range(pl.len()).over(names))
    right = right.drop_nulls(names).with_columns(rank=pl.int_range(pl.len()).over(names))
    return left.join(right, on=[*names, "rank"], how="full", coalesce=True)


def _both(pairs: pl.DataFrame) -> pl.DataFrame:
    return pairs.filter(pl.col("lid").is_not_null() & pl.col("sid").is_not_null())


def _prepare_ledger(ledger: pl.DataFrame | pl.LazyFrame, as_of: dt.date) -> pl.DataFrame:
    sign = pl.col("kind").replace_strict(KIND_SIGN, return_dtype=pl.Int64)
    plan = (
        ledger.lazy()
        .select(LEDGER_COLUMNS)
        .filter(pl.col("business_date") <= as_of)
        .with_columns(signed=pl.col("amount_minor").cast(pl.Int64) * sign)
        .drop("amount_minor")
        .with_columns(pl.col(_LEDGER_NAMES).cast(pl.String).cast(pl.Categorical))
        .with_row_index("lid")
    )
    return _collect(plan, sparse=("original_transaction_id",))


def _known_lines(lines: pl.DataFrame | pl.LazyFrame, as_of: dt.date) -> pl.LazyFrame:
    """The settlement rows known as of ``as_of`` with their row id ``sid`` (the same ids on every scan)."""
    return (
        lines.lazy().select(SETTLEMENT_COLUMNS).filter(pl.col("booking_date") <= as_of).with_row_index("sid")
    )


def _prepare_settlement(lines: pl.DataFrame | pl.LazyFrame, as_of: dt.date) -> pl.DataFrame:
    plan = (
        _known_lines(lines, as_of)
        .drop(_LATE_COLUMNS)
        .with_columns(player=pl.col("line_kind").is_in(list(PLAYER_LINE_KINDS)))
        .with_columns(pl.col(_SETTLEMENT_NAMES).cast(pl.String).cast(pl.Categorical))
    )
    return _collect(plan)


def _late_columns(lines: pl.DataFrame | pl.LazyFrame, as_of: dt.date, sids: pl.Series) -> pl.DataFrame:
    """``_LATE_COLUMNS`` of the settlement rows ``sids`` (plain strings), by ``sid``, with the rows' file
    and row as read this time (``_with_late_columns`` checks them against the first read)."""
    wanted = sids.cast(pl.UInt32).implode()
    return (
        _known_lines(lines, as_of)
        .select("sid", *_LATE_COLUMNS, _late_file=pl.col("source_file"), _late_row=pl.col("source_row"))
        .filter(pl.col("sid").is_in(wanted))
        .with_columns(pl.col("presentment_currency", "_late_file").cast(pl.String))
        .collect(engine="streaming")
    )


def _with_late_columns(frame: pl.DataFrame, late: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """``frame`` (plain strings) with its rows' ``_LATE_COLUMNS``, as ``columns``. The second read must give
    every row the id the first gave it (the same filter over the same input); a lazy input whose rows come
    in another order on a second evaluation is refused rather than given another row's columns."""
    joined = frame.join(late, on="sid", how="left")
    same = (pl.col("source_file") == pl.col("_late_file")) & (pl.col("source_row") == pl.col("_late_row"))
    if not joined.select(same.fill_null(False).all()).item():
        raise ValueError(
            "the settlement lines gave their rows in another order when read a second time: pass reconcile() "
            "a DataFrame, or a LazyFrame whose row order is fixed (a Parquet scan, a sort)"
        )
    return joined.select(columns)


def _collect(plan: pl.LazyFrame, *, sparse: Sequence[str] = ()) -> pl.DataFrame:
    """Collect with the streaming engine (the inputs are never held as plain strings and Categorical at
    once), then make each column one chunk, so that the gathers by row id stay cheap: column by
    column, so that only one column is ever held twice. ``sparse`` columns (filled on a few rows, read
    once by a filter and then dropped, never gathered) stay as they come: rechunking a column of a
    million nulls in 180 chunks costs as much as one of strings."""
    frame = plan.collect(engine="streaming")
    columns = frame.get_columns()
    del frame
    for i in range(len(columns)):
        if columns[i].name not in sparse:
            columns[i] = columns[i].rechunk()
    return pl.DataFrame(columns)


def _strings(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its Categorical columns as plain strings again (for the small residual frames the
    later rules work on, where joins and sorts want strings on both sides)."""
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String))


def reconcile(
    ledger: pl.DataFrame | pl.LazyFrame,
    lines: pl.DataFrame | pl.LazyFrame,
    *,
    as_of: dt.date,
    lag_days: int,
    fx_tolerance_minor: int = 2,
    rules: Mapping[str, Sequence[str]] | None = None,
) -> ReconResult:
    """Reconcile every ledger record and settlement record known as of ``as_of``.

    ``ledger`` has LEDGER_SCHEMA columns, ``lines`` SETTLEMENT_LINE_SCHEMA columns (only
    ``LEDGER_COLUMNS`` / ``SETTLEMENT_COLUMNS`` are read); records dated after ``as_of`` are ignored.
    ``rules`` maps a PSP to the configurable rules it uses (default: all).
    """
    led = _prepare_ledger(ledger, as_of)
    stl = _prepare_settlement(lines, as_of)
    # Columns only a few rows use stay out of the whole frames through the big join: adjustments' original
    # transaction ids leave the ledger here; the settlement ones (_LATE_COLUMNS) are read after exact_ref.
    non_player = _strings(stl.filter(~pl.col("player")))
    originals = led.filter(pl.col("original_transaction_id").is_not_null()).select(
        "lid", "original_transaction_id"
    )
    led = led.drop("original_transaction_id")
    book = Book(led.height, stl.height, RULES)
    window_open = (pl.lit(as_of) - pl.col("business_date")).dt.total_days() <= lag_days

    _exact_ref(led, stl, book, rules)

    # What exact_ref left, in canonical order (ranks and tie-breaks depend on it, never on row ids).
    rest_led = (
        _strings(led.filter(book.open_mask(LEDGER)))
        .join(originals, on="lid", how="left")
        .sort(_LEDGER_ORDER)
        .with_columns(
            line_kind=pl.col("kind").replace_strict(KIND_TO_LINE, return_dtype=pl.String),
            lpos=pl.int_range(pl.len()),
        )
    )
    rest_player = _strings(stl.filter(book.open_mask(SETTLEMENT) & stl["player"]))
    late = _late_columns(lines, as_of, pl.concat([rest_player["sid"], non_player["sid"]]))
    rest_player = _with_late_columns(rest_player, late, _PLAYER_FRAME)
    non_player = _with_late_columns(non_player, late, _NON_PLAYER_FRAME)
    rest_player = rest_player.sort(_SETTLEMENT_ORDER).with_columns(spos=pl.int_range(pl.len()))

    adjustments = _strings(led.filter(pl.col("kind").is_in(ADJUSTMENT_KINDS))).join(
        originals, on="lid", how="left"
    )
    # From here on the whole frames serve only lookups by row id and the output: keep what those need.
    led = led.select("lid", "transaction_id", "psp", "business_date")
    stl = stl.select("sid", "psp", "source_file", "source_row", "booking_date")

    def open_ledger(rule: str, *, with_reference: bool = True) -> pl.DataFrame:
        """Ledger records no rule has decided yet, of the PSPs that use ``rule``, with (or without) a
        booked PSP reference."""
        has_ref = pl.col("psp_reference").is_not_null()
        frame = _enabled(book.only_open(rest_led, LEDGER), rule, rules)
        return frame.filter(has_ref if with_reference else ~has_ref)

    def open_player() -> pl.DataFrame:
        return book.only_open(rest_player, SETTLEMENT)

    _cross_currency(open_ledger("cross_currency"), open_player(), book, fx_tolerance_minor)
    _split_settlement(open_ledger("split_settlement"), open_player(), book, window_open)
    _split_booking(open_ledger("split_booking"), open_player(), book)
    # merchant_ref: no PSP reference booked; the operator's transaction id (or, for refunds and
    # chargebacks, their deposit's) is the PSP's merchant reference.
    for ledger_ref in ("transaction_id", "original_transaction_id"):
        rest_l = open_ledger("merchant_ref", with_reference=False)
        if ledger_ref == "original_transaction_id":
            rest_l = rest_l.filter(pl.col("kind").is_in(ADJUSTMENT_KINDS))
        pairs = _pair_by(
            rest_l,
            open_player().rename({"amount_minor": "signed"}),
            ["psp", ledger_ref, "signed", "currency", "line_kind"],
            ["psp", "merchant_reference", "signed", "currency", "line_kind"],
        )
        both = _both(pairs)
        book.decide_pairs(both["lid"], both["sid"], rule="merchant_ref", status=MATCHED)
    _ref_mismatch(open_ledger("ref_mismatch"), open_player(), book)
    _non_player_rows(non_player, book, as_of)
    _leftovers(led, rest_led, rest_player, book, window_open=window_open, lag_days=lag_days)
    _overlay_unlinked(led, stl, adjustments, book)
    for side in (LEDGER, SETTLEMENT):
        left = book.undecided(side)
        if left.size:  # every record must be decided by exactly one rule
            raise AssertionError(f"{('ledger', 'settlement')[side]} records without an outcome: {left[:5]}")
    with ThreadPoolExecutor(max_workers=1) as pool:
        evidence = pool.submit(_evidence, led, stl, book)
        return ReconResult(_outcome_plan(led, stl, book), evidence.result())


# ------------------------------------------------------------------------------------------------ rules


def _exact_ref(
    led: pl.DataFrame, stl: pl.DataFrame, book: Book, rules: Mapping[str, Sequence[str]] | None
) -> None:
    """1. exact_ref: PSP movement reference + signed amount + currency, k-th booking with k-th settlement.

    Both sides' keys are hashed to 64 bits and sorted together (a sort-merge join: cheaper here than a
    hash join of 10M by 10M rows). A hash shared by exactly one booking and one settlement row is a
    pair once its columns are checked equal (a hash collision can never pair unequal keys); hashes
    shared by more records (the same movement booked or settled twice) go to the ranking below, which
    groups by the key columns themselves."""
    left = (
        _enabled(led.lazy(), "exact_ref", rules)
        .filter(pl.col("psp_reference").is_not_null())
        .select("lid", h=_key_hash("psp", "psp_reference", "signed", "currency"))
        .collect()
    )
    right = (
        stl.lazy()
        .filter(pl.col("player") & pl.col("movement_reference").is_not_null())
        .select("sid", h=_key_hash("psp", "movement_reference", "amount_minor", "currency"))
        .collect()
    )
    if left.is_empty() or right.is_empty():
        return
    n_left = left.height
    order, starts = _hash_groups(left["h"], right["h"])
    l_ids, s_ids = left["lid"].to_numpy(), right["sid"].to_numpy()
    del left, right
    sizes = np.diff(np.r_[starts, order.size])
    # settlement rows per run: differences of a running count (a reduceat over 10M runs costs 5x more)
    running = np.zeros(order.size + 1, dtype=np.int32)
    np.cumsum(order >= n_left, dtype=np.int32, out=running[1:])
    settled = running[starts + sizes] - running[starts]
    del running
    # one booking and one settlement row under a hash: a pair, if the key columns agree
    two = starts[(sizes == 2) & (settled == 1)]
    first, second = order[two], order[two + 1]
    on_left = first < n_left
    lid = l_ids[np.where(on_left, first, second)]
    sid = s_ids[np.where(on_left, second, first) - n_left]
    del first, second, on_left, two
    same = _same_keys(led, stl, lid, sid)
    book.decide_pairs(lid[same], sid[same], rule="exact_ref", status=MATCHED)
    del lid, sid, same
    # more records under a hash, on both sides: rank them by their key columns
    many = (sizes > 2) & (settled >= 1) & (settled < sizes)
    if not many.any():
        return
    members = order[np.repeat(starts[many], sizes[many]) + _offsets(sizes[many])]
    crowded_l = l_ids[members[members < n_left]]
    crowded_s = s_ids[members[members >= n_left] - n_left]
    keys = ["k0", "k1", "k2", "k3"]
    l_rows = (
        _strings(_rows(led, crowded_l))
        .select("lid", *_LEDGER_ORDER, k0="psp", k1="psp_reference", k2="signed", k3="currency")
        .sort(_LEDGER_ORDER)
        .with_columns(rank=pl.int_range(pl.len()).over(keys))
    )
    s_rows = (
        _strings(_rows(stl, crowded_s))
        .select(
            "sid", *_SETTLEMENT_ORDER[:2], k0="psp", k1="movement_reference", k2="amount_minor", k3="currency"
        )
        .sort("source_file", "source_row", "k0")
        .with_columns(rank=pl.int_range(pl.len()).over(keys))
    )
    ranked = l_rows.select("lid", *keys, "rank").join(
        s_rows.select("sid", *keys, "rank"), on=[*keys, "rank"], how="full", coalesce=True
    )
    both = _both(ranked)
    book.decide_pairs(both["lid"], both["sid"], rule="exact_ref", status=MATCHED)
    first = both.filter(pl.col("rank") == 0).select(*keys, first_l="lid", first_s="sid")
    surplus = ranked.join(first, on=keys, how="inner")
    dup_booking = surplus.filter(pl.col("sid").is_null())
    dup_settlement = surplus.filter(pl.col("lid").is_null())
    book.decide(LEDGER, dup_booking["lid"], rule="exact_ref", status=EXCEPTION, category="duplicate_booking")
    book.decide(
        SETTLEMENT, dup_settlement["sid"], rule="exact_ref", status=EXCEPTION, category="duplicate_settlement"
    )
    for side, dups, what in ((LEDGER, dup_booking, "booked"), (SETTLEMENT, dup_settlement, "settled")):
        if dups.is_empty():
            continue
        book.note(
            side,
            dups.with_columns(
                first_lkey=_lkeys(led, dups["first_l"]), first_skey=_skeys(stl, dups["first_s"])
            ),
            pl.col("lid" if side == LEDGER else "sid"),
            rule_nearly_matched="exact_ref",
            duplicate_of=pl.col("first_lkey"),
            settled_by=pl.col("first_skey"),
            psp_reference=pl.col("k1"),
            signed_amount_minor=pl.col("k2"),
            currency=pl.col("k3"),
            why=f"the same PSP movement {what} more than once",
        )


def _same_keys(
    led: pl.DataFrame, stl: pl.DataFrame, lid: np.ndarray, sid: np.ndarray, *, slice_rows: int = 1 << 21
) -> np.ndarray:
    """Whether each (ledger, settlement) pair has equal exact_ref key columns. Slice by slice, so the
    gathered references (two strings a pair) are never all held at once; the references (random reads
    of two string buffers) in a second thread, the rest here."""
    refs, movements = led["psp_reference"], stl["movement_reference"]
    signed, amount = led["signed"], stl["amount_minor"]
    psp_l, psp_s = _physical(led["psp"]), _physical(stl["psp"])
    ccy_l, ccy_s = _physical(led["currency"]), _physical(stl["currency"])
    same = np.empty(lid.size, dtype=bool)
    with ThreadPoolExecutor(max_workers=1) as pool:
        for start in range(0, lid.size, slice_rows):
            lids, sids = lid[start : start + slice_rows], sid[start : start + slice_rows]
            same_reference = pool.submit(_equal_at, refs, lids, movements, sids)
            rest = (
                (signed.gather(lids) == amount.gather(sids))
                & (psp_l.gather(lids) == psp_s.gather(sids))
                & (ccy_l.gather(lids) == ccy_s.gather(sids))
            )
            same[start : start + lids.size] = (rest & same_reference.result()).fill_null(False).to_numpy()
    return same


def _equal_at(left: pl.Series, lids: np.ndarray, right: pl.Series, sids: np.ndarray) -> pl.Series:
    return left.gather(lids) == right.gather(sids)


def _hash_groups(left: pl.Series, right: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``left`` then ``right`` (concatenated) ordered by hash, and where each run of equal
    hashes starts. The low bits of each hash are replaced by the position, so one plain sort of 64-bit
    words gives both (an arg-sort and a gather cost three times as much over 20M rows); runs are then
    of the high bits only, which is a narrower hash: more collisions, each still checked by the callers
    (a collision never pairs unequal keys, it only sends the records to the slower ranking). The sort
    is Polars' (parallel; numpy's is single-threaded and four times slower over 20M words here)."""
    n = left.len() + right.len()
    bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    keyed = np.concatenate([left.to_numpy(), right.to_numpy()]).astype(np.uint64, copy=False)
    keyed &= ~low
    keyed |= np.arange(n, dtype=np.uint64)
    keyed = pl.Series(keyed).sort().to_numpy()
    starts = np.flatnonzero(np.r_[True, (keyed[1:] ^ keyed[:-1]) > low])
    return (keyed & low).astype(np.int64), starts


def _physical(column: pl.Series) -> pl.Series:
    """A Categorical's codes (both frames' Categoricals share one mapping: equal codes, equal names)."""
    return column.to_physical()


def _cross_currency(rest_l: pl.DataFrame, rest_s: pl.DataFrame, book: Book, tolerance: int) -> None:
    """2. cross_currency: settled in another currency; the PSP reports the amount the player saw
    (presentment) or its own exchange rate, within a tolerance in minor units."""
    fx = rest_s.filter(
        pl.col("presentment_currency").is_not_null() & (pl.col("presentment_currency") != pl.col("currency"))
    )
    both = _both(
        _pair_by(
            rest_l,
            fx,
            ["psp", "psp_reference", "signed", "currency"],
            ["psp", "movement_reference", "presentment_amount_minor", "presentment_currency"],
        )
    )
    book.decide_pairs(both["lid"], both["sid"], rule="cross_currency", status=MATCHED)
    rest_l = book.only_open(rest_l, LEDGER)
    rated = book.only_open(rest_s, SETTLEMENT).filter(
        pl.col("exchange_rate").is_not_null()
        & pl.col("net_currency").is_not_null()
        & (pl.col("net_currency") != pl.col("currency"))
        & pl.col("presentment_amount_minor").is_null()
    )
    if rated.is_empty() or rest_l.is_empty():
        return
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
    cand = (
        rest_l.join(
            rated,
            left_on=["psp", "psp_reference", "currency"],
            right_on=["psp", "movement_reference", "net_currency"],
            suffix="_s",
        )
        .filter((pl.col("converted") - pl.col("signed")).abs() <= tolerance)
        .sort("lpos", "spos")
    )
    cand = cand.unique("lid", keep="first", maintain_order=True).unique(
        "sid", keep="first", maintain_order=True
    )
    book.decide_pairs(cand["lid"], cand["sid"], rule="cross_currency", status=MATCHED)


def _split_settlement(rest_l: pl.DataFrame, rest_s: pl.DataFrame, book: Book, window_open: pl.Expr) -> None:
    """3. split_settlement: one booking settled in several rows (partial captures).

    The parts add up to the booking: one matched group. Fewer so far and the window still open: the
    booking and its parts wait (pending). Otherwise (the window closed short, or the parts overshoot or
    have the other sign) the booking and every part are one ``amount_mismatch`` group, each with the
    booked amount, what was settled, the difference and its counterparts."""
    keys = ["psp", "movement_reference", "currency", "line_kind"]
    parts = (
        rest_s.group_by(keys, maintain_order=True)
        .agg(settled=pl.col("amount_minor").sum(), parts=pl.len(), sids=pl.col("sid"), skeys=_skey())
        .filter(pl.col("parts") >= 2)
    )
    unique_l = rest_l.filter(pl.len().over("psp", "psp_reference", "currency", "line_kind") == 1)
    split = unique_l.join(
        parts, left_on=["psp", "psp_reference", "currency", "line_kind"], right_on=keys
    ).with_columns(anchor=pl.col("lid").cast(pl.Int64) + book.n_settlement)
    if split.is_empty():
        return
    complete = split.filter(pl.col("settled") == pl.col("signed"))
    waiting = split.filter(
        (pl.col("settled") != pl.col("signed"))
        & (pl.col("settled").abs() < pl.col("signed").abs())
        & (pl.col("settled").sign() == pl.col("signed").sign())
        & window_open
    )
    broken = split.join(complete, on="lid", how="anti").join(waiting, on="lid", how="anti")
    for group, status, category in ((complete, MATCHED, None), (broken, EXCEPTION, "amount_mismatch")):
        members = group.explode("sids")
        book.decide(
            LEDGER,
            group["lid"],
            rule="split_settlement",
            status=status,
            category=category,
            anchor=group["anchor"],
        )
        book.decide(
            SETTLEMENT,
            members["sids"],
            rule="split_settlement",
            status=status,
            category=category,
            anchor=members["anchor"],
            tx=members["lid"],
        )
    # Several parts but less than booked so far, inside the window: wait for the rest. (A single part
    # short of the booking is an amount mismatch until a second part shows it is a split.)
    members = waiting.explode("sids")
    book.decide(LEDGER, waiting["lid"], rule="split_settlement", status=PENDING)
    book.decide(SETTLEMENT, members["sids"], rule="split_settlement", status=PENDING)
    book.note(
        LEDGER,
        waiting,
        pl.col("lid"),
        rule_nearly_matched="split_settlement",
        booked_amount_minor=pl.col("signed"),
        settled_so_far_minor=pl.col("settled"),
        parts=pl.col("parts"),
    )
    why = "the parts settled under this reference do not add up to the booking"
    book.note(
        LEDGER,
        broken,
        pl.col("lid"),
        rule_nearly_matched="split_settlement",
        why=why,
        booked_amount_minor=pl.col("signed"),
        settled_amount_minor=pl.col("settled"),
        difference_minor=pl.col("settled") - pl.col("signed"),
        parts=pl.col("parts"),
        counterparts=pl.col("skeys"),
    )
    broken_parts = broken.with_columns(lkey=_lkey()).explode("sids", "skeys")
    book.note(
        SETTLEMENT,
        broken_parts,
        pl.col("sids"),
        rule_nearly_matched="split_settlement",
        why=why,
        counterpart=pl.col("lkey"),
        booked_amount_minor=pl.col("signed"),
        settled_amount_minor=pl.col("settled"),
        difference_minor=pl.col("settled") - pl.col("signed"),
        parts=pl.col("parts"),
        other_parts=pl.col("skeys"),
    )


def _split_booking(rest_l: pl.DataFrame, rest_s: pl.DataFrame, book: Book) -> None:
    """4. split_booking: one settlement row for a payment the operator booked in several parts."""
    keys = ["psp", "psp_reference", "currency", "line_kind"]
    booked = (
        rest_l.group_by(keys, maintain_order=True)
        .agg(booked=pl.col("signed").sum(), rows=pl.len(), lids=pl.col("lid"))
        .filter(pl.col("rows") >= 2)
    )
    unique_s = rest_s.filter(pl.len().over("psp", "movement_reference", "currency", "line_kind") == 1)
    many = booked.join(
        unique_s,
        left_on=[*keys, "booked"],
        right_on=["psp", "movement_reference", "currency", "line_kind", "amount_minor"],
    )
    if many.is_empty():
        return
    book.decide(
        SETTLEMENT,
        many["sid"],
        rule="split_booking",
        status=MATCHED,
        anchor=many["sid"],
        tx=many["lids"].list.first(),  # the earliest booking, in canonical order
    )
    members = many.explode("lids")
    book.decide(LEDGER, members["lids"], rule="split_booking", status=MATCHED, anchor=members["sid"])


def _ref_mismatch(rest_l: pl.DataFrame, rest_s: pl.DataFrame, book: Book) -> None:
    """6. ref_mismatch: same reference, different amount or currency: an exception pair with the
    difference."""
    pairs = _both(_pair_by(rest_l, rest_s, ["psp", "psp_reference"], ["psp", "movement_reference"]))
    detail = (
        pairs.select("lid", "sid")
        .join(rest_l.select("lid", "transaction_id", l_amt="signed", l_ccy="currency"), on="lid")
        .join(
            rest_s.select("sid", "psp", "source_file", "source_row", s_amt="amount_minor", s_ccy="currency"),
            on="sid",
        )
        .with_columns(lkey=_lkey(), skey=_skey())
    )
    for same, category in ((True, "amount_mismatch"), (False, "currency_mismatch")):
        part = detail.filter((pl.col("l_ccy") == pl.col("s_ccy")) == same)
        book.decide_pairs(part["lid"], part["sid"], rule="ref_mismatch", status=EXCEPTION, category=category)
    for side, own, other in ((LEDGER, "lid", "skey"), (SETTLEMENT, "sid", "lkey")):
        book.note(
            side,
            detail,
            pl.col(own),
            rule_nearly_matched="exact_ref",
            counterpart=pl.col(other),
            booked_amount_minor=pl.col("l_amt"),
            booked_currency=pl.col("l_ccy"),
            settled_amount_minor=pl.col("s_amt"),
            settled_currency=pl.col("s_ccy"),
            difference_minor=pl.col("s_amt") - pl.col("l_amt"),
        )


def _non_player_rows(rows: pl.DataFrame, book: Book, as_of: dt.date) -> None:
    """7. Rows that move no player money: fees and batch rows, then PSP payout <-> bank credit
    (three-way), the bank's own charges."""
    if rows.is_empty():
        return
    for kinds, rule in ((["fee"], "fee_row"), (["balance_transfer", "adjustment"], "batch_row")):
        own = rows.filter(pl.col("line_kind").is_in(kinds))["sid"]
        book.decide(SETTLEMENT, own, rule=rule, status=MATCHED, anchor=own)
    unknown = rows.filter(pl.col("line_kind") == "other")
    book.decide(SETTLEMENT, unknown["sid"], rule="unmatched", status=EXCEPTION, category="unclassified_row")
    book.note(
        SETTLEMENT,
        unknown,
        pl.col("sid"),
        why="a row type this platform does not know; classify it",
        psp=pl.col("psp"),
        amount_minor=pl.col("amount_minor"),
    )

    payouts = rows.filter(pl.col("line_kind") == "merchant_payout").select(
        "sid",
        skey=_skey(),
        currency="currency",
        credit=-pl.col("amount_minor"),
        ref="payout_reference",
        pdate="booking_date",
    )
    credits = rows.filter(pl.col("line_kind") == "bank_credit").select(
        bid="sid",
        bkey=_skey(),
        currency="currency",
        credit="amount_minor",
        text="remittance_info",
        bdate="booking_date",
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
    chosen = cand.unique("sid", keep="first", maintain_order=True).unique(
        "bid", keep="first", maintain_order=True
    )
    book.decide(SETTLEMENT, chosen["sid"], rule="payout_bank", status=MATCHED, anchor=chosen["sid"])
    book.decide(SETTLEMENT, chosen["bid"], rule="payout_bank", status=MATCHED, anchor=chosen["sid"])
    open_payouts = payouts.join(chosen, on="sid", how="anti")
    waiting = open_payouts.filter((pl.lit(as_of) - pl.col("pdate")).dt.total_days() <= 3)
    book.decide(SETTLEMENT, waiting["sid"], rule="payout_bank", status=PENDING)
    late = open_payouts.join(waiting, on="sid", how="anti")
    book.decide(SETTLEMENT, late["sid"], rule="payout_bank", status=EXCEPTION, category="missing_in_bank")
    book.note(
        SETTLEMENT,
        late,
        pl.col("sid"),
        why="no bank statement credit carries this payout within 3 days",
        payout_reference=pl.col("ref"),
        amount_minor=pl.col("credit"),
        currency=pl.col("currency"),
    )
    charges = rows.filter(pl.col("line_kind") == "bank_debit")["sid"]
    book.decide(SETTLEMENT, charges, rule="bank_charge", status=MATCHED, anchor=charges)
    open_credits = credits.join(chosen, on="bid", how="anti")
    book.decide(
        SETTLEMENT, open_credits["bid"], rule="unmatched", status=EXCEPTION, category="missing_in_ledger"
    )
    book.note(
        SETTLEMENT,
        open_credits,
        pl.col("bid"),
        why="a bank credit that no PSP payout explains",
        remittance_info=pl.col("text"),
        amount_minor=pl.col("credit"),
        currency=pl.col("currency"),
    )


def _leftovers(
    led: pl.DataFrame,
    rest_led: pl.DataFrame,
    rest_player: pl.DataFrame,
    book: Book,
    *,
    window_open: pl.Expr,
    lag_days: int,
) -> None:
    """8. What is left: ledger inside the window is pending, after it missing; settlement unmatched.
    (Whatever is still open was open after exact_ref, so it is in ``rest_led`` / ``rest_player``.)"""
    rest_l = book.only_open(rest_led, LEDGER).with_columns(inside=window_open)
    book.decide(LEDGER, rest_l.filter("inside")["lid"], rule="lag_window", status=PENDING)
    missing = rest_l.filter(~pl.col("inside"))
    book.decide(LEDGER, missing["lid"], rule="lag_window", status=EXCEPTION, category="missing_in_psp")
    book.note(
        LEDGER,
        missing,
        pl.col("lid"),
        why="not settled when the settlement-lag window closed",
        window_closed=(pl.col("business_date") + pl.duration(days=lag_days)).cast(pl.String),
        psp_reference=pl.col("psp_reference"),
        amount_minor=pl.col("signed"),
        currency=pl.col("currency"),
    )
    rest_s = book.only_open(rest_player, SETTLEMENT)
    book.decide(SETTLEMENT, rest_s["sid"], rule="unmatched", status=EXCEPTION, category="missing_in_ledger")
    if rest_s.is_empty():
        return
    # A booking whose transaction id is the row's merchant reference (probed from the small side).
    refs = rest_s["merchant_reference"].drop_nulls().unique()
    bookings = led.filter(pl.col("transaction_id").is_in(refs.implode())).select(
        "transaction_id", cand_key=_lkey()
    )
    candidates = rest_s.join(bookings, left_on="merchant_reference", right_on="transaction_id", how="left")
    book.note(
        SETTLEMENT,
        candidates,
        pl.col("sid"),
        why="settled by the PSP, never booked",
        movement_reference=pl.col("movement_reference"),
        merchant_reference=pl.col("merchant_reference"),
        amount_minor=pl.col("amount_minor"),
        currency=pl.col("currency"),
        candidate_booking=pl.col("cand_key"),
    )


def _overlay_unlinked(led: pl.DataFrame, stl: pl.DataFrame, adjustments: pl.DataFrame, book: Book) -> None:
    """Refunds, chargebacks and reversals whose deposit is not a booked transaction, and whatever they
    paired with, become ``unlinked_adjustment`` exceptions (the pairing stays visible in the match id)."""
    originals = adjustments["original_transaction_id"].drop_nulls().unique()
    known = led.filter(pl.col("transaction_id").is_in(originals.implode()))["transaction_id"]
    unlinked = adjustments.filter(
        pl.col("original_transaction_id").is_null()
        | ~pl.col("original_transaction_id").is_in(known.implode())
    )
    if unlinked.is_empty():
        return
    book.note(
        LEDGER,
        unlinked,
        pl.col("lid"),
        why="the deposit this adjustment belongs to is not booked",
        original_transaction_id=pl.col("original_transaction_id"),
        kind=pl.col("kind"),
    )
    lids = ids_of(unlinked["lid"])
    groups = np.zeros(book.n_settlement + book.n_ledger, dtype=bool)
    anchors = book.anchor[LEDGER][lids]
    groups[anchors[anchors != NO_ANCHOR]] = True
    flags = []
    for side in (LEDGER, SETTLEMENT):
        anchor = book.anchor[side]
        flag = np.zeros(anchor.size, dtype=bool)
        has = anchor != NO_ANCHOR
        flag[has] = groups[anchor[has]]
        flags.append(flag)
    partner_l = flags[LEDGER].copy()
    partner_l[lids] = False
    flags[LEDGER][lids] = True
    for side, partners, frame, key in (
        (LEDGER, partner_l, led, "lid"),
        (SETTLEMENT, flags[SETTLEMENT], stl, "sid"),
    ):
        ids = np.flatnonzero(partners)
        if ids.size:
            rows = (
                _rows(frame, ids)
                .select(key)
                .with_columns(
                    match_id=_match_ids(led, stl, book, book.anchor[side][ids]),
                    rule_id=pl.Series(np.asarray(RULES)[book.rule[side][ids]]),
                )
            )
            book.note(
                side,
                rows,
                pl.col(key),
                why="paired with a refund or chargeback whose deposit is not booked",
                match_id=pl.col("match_id"),
                rule_id=pl.col("rule_id"),
            )
    for side in (LEDGER, SETTLEMENT):
        book.status[side][flags[side]] = EXCEPTION
        book.category[side][flags[side]] = CATEGORIES.index("unlinked_adjustment")


# ----------------------------------------------------------------------------------------------- output


def _lkeys(led: pl.DataFrame, lids: pl.Series) -> pl.Series:
    return ("ledger:" + led["transaction_id"].gather(lids)).alias("lkey")


def _skeys(stl: pl.DataFrame, sids: pl.Series) -> pl.Series:
    return _gathered(stl, sids).select(_skey()).to_series().alias("skey")


def _gathered(stl: pl.DataFrame, sids: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {c: stl[c].gather(sids) for c in ("psp", "source_file", "source_row")},
    )


def _match_ids(led: pl.DataFrame, stl: pl.DataFrame, book: Book, anchors: np.ndarray) -> pl.Series:
    """``M-`` and the anchor record's key without its record prefix (for a few records)."""
    frame = _anchor_columns(led, stl, book, anchors)
    return frame.select(_match_id_expr()).to_series()


def _anchor_columns(
    led: pl.DataFrame, stl: pl.DataFrame, book: Book, anchors: np.ndarray, names: _Names | None = None
) -> pl.DataFrame:
    """The columns a match id is made of, for each anchor code: the anchor settlement row's psp, file
    and row, or the anchor ledger record's transaction id."""
    sid = _where(anchors, (anchors != NO_ANCHOR) & (anchors < book.n_settlement))
    if names is None:  # a few records: their names as plain strings, without the frames' Enums
        psp, file = (stl[c].gather(sid).cast(pl.String) for c in ("psp", "source_file"))
    else:
        psp, file = names.s_psp.gather(sid), names.s_file.gather(sid)
    on_ledger = (anchors != NO_ANCHOR) & (anchors >= book.n_settlement)
    # Few groups are anchored on a ledger record: their transaction ids as a small Enum of their own (not
    # the process-wide Categorical mapping), so the column costs a few bytes a row, not a string view.
    lids = anchors[on_ledger] - book.n_settlement
    anchored = np.unique(lids)
    at = np.zeros(anchors.size, dtype=np.int64)
    at[on_ledger] = np.searchsorted(anchored, lids)
    position = _where(at, on_ledger)
    ids = led["transaction_id"].gather(anchored)
    return pl.DataFrame(
        {
            "m_psp": psp,
            "m_file": file,
            "m_row": stl["source_row"].gather(sid),
            "m_tx": ids.cast(pl.Enum(ids.unique().drop_nulls())).gather(position),
        }
    )


class _Names:
    """PSP and file names as Enums over their sorted distinct values: gathering them moves one byte or
    two per row instead of a string, and their physical codes sort like the names."""

    def __init__(self, led: pl.DataFrame, stl: pl.DataFrame) -> None:
        psps = (
            pl.concat([led["psp"].unique(), stl["psp"].unique()]).cast(pl.String).unique().drop_nulls().sort()
        )
        files = stl["source_file"].unique().cast(pl.String).drop_nulls().sort()
        self.l_psp = led["psp"].cast(pl.Enum(psps))
        self.s_psp = stl["psp"].cast(pl.Enum(psps))
        self.s_file = stl["source_file"].cast(pl.Enum(files))
        self._psps, self._files = psps.to_list(), files.to_list()
        rows = stl["source_row"]
        low, high = rows.min(), rows.max()
        self._rows = (
            pl.int_range(0, high + 1, eager=True).cast(pl.String)
            if isinstance(low, int) and isinstance(high, int) and low >= 0 and high <= _MAX_ROW_TEXTS
            else None
        )

    def row_text(self, row: str) -> pl.Expr | None:
        """The text of the file row numbers in column ``row``, gathered from a table of every number up
        to the largest row (a gather and a concatenation cost ~40% of casting each number again);
        None when the rows are not all in ``0.._MAX_ROW_TEXTS``."""
        if self._rows is None:
            return None
        return pl.lit(self._rows).gather(pl.col(row))

    def prefix(self, lead: str, psp: str, file: str) -> pl.Expr | None:
        """``lead + psp + ":" + file + ":"`` for columns ``psp`` and ``file`` of these Enums, gathered
        from a table of every (psp, file) pair; None when there would be too many pairs to list."""
        n_files = len(self._files)
        if len(self._psps) * n_files > _MAX_PREFIXES:
            return None
        table = pl.Series([f"{lead}{p}:{f}:" for p in self._psps for f in self._files], dtype=pl.String)
        code = pl.col(psp).to_physical().cast(pl.Int64) * n_files + pl.col(file).to_physical().cast(pl.Int64)
        return pl.lit(table).gather(code)


#: Most (psp, file) prefixes :meth:`_Names.prefix` lists.
_MAX_PREFIXES = 1_000_000
#: Largest file row number :meth:`_Names.row_text` lists the text of (a table of 16-byte views).
_MAX_ROW_TEXTS = 4_000_000


def _where(ids: np.ndarray, valid: np.ndarray) -> pl.Series:
    """Row ids where ``valid``, nulls elsewhere (gathering a null id gives a null)."""
    return pl.DataFrame({"i": ids, "v": valid}).select(pl.when("v").then("i")).to_series()


def _match_id_expr(names: _Names | None = None) -> pl.Expr:
    """``match_id`` from the anchor columns (see :func:`_file_row` for ``names``)."""
    on_settlement = _file_row("M-", "m_psp", "m_file", "m_row", names)
    # concat_str is null when a part is null: at most one of the two is not
    return pl.coalesce(on_settlement, pl.concat_str([pl.lit("M-"), pl.col("m_tx")])).alias("match_id")


def _codes(column: str, names: Sequence[str | None]) -> pl.Expr:
    """Small integer codes to their names, as an Enum of the names: a gather from the few names (a
    code out of range is an error, as a missing key of a mapping would be) that moves one byte a row,
    where a per-row mapping to strings costs ~9x more and writing strings to Parquet ~6x more."""
    return pl.lit(_enum(column, names)).gather(pl.col(column))


def _enum(name: str, values: Sequence[str | None]) -> pl.Series:
    """``values`` (None: null) as a Series of the Enum over the non-null ones, in their order."""
    return pl.Series(name, values, dtype=pl.Enum([v for v in values if v is not None]))


def _rank(codes: pl.Series) -> np.ndarray:
    """Sort rank of an Enum over sorted names (its physical code), nulls first."""
    return codes.to_physical().cast(pl.Int64).fill_null(-1).to_numpy() + 1


def _ledger_rows(led: pl.DataFrame, stl: pl.DataFrame, book: Book, names: _Names) -> pl.DataFrame:
    """The ledger side of the outcome rows, by (psp, transaction_id)."""
    by_tx = ids_of(led["transaction_id"].arg_sort(nulls_last=False))
    l_order = by_tx[np.argsort(_rank(names.l_psp)[by_tx].astype(np.uint16), kind="stable")]
    return pl.DataFrame(
        {
            "transaction_id": led["transaction_id"].gather(l_order),
            "psp": names.l_psp.gather(l_order),
            "business_date": led["business_date"].gather(l_order),
            "status": book.status[LEDGER][l_order],
            "rule": book.rule[LEDGER][l_order],
            "category": book.category[LEDGER][l_order],
        }
    ).hstack(_anchor_columns(led, stl, book, book.anchor[LEDGER][l_order], names))


def _settlement_rows(led: pl.DataFrame, stl: pl.DataFrame, book: Book, names: _Names) -> pl.DataFrame:
    """The settlement side of the outcome rows, by (psp, source_file, source_row)."""
    group = _rank(names.s_psp) * (len(names.s_file.dtype.categories) + 1) + _rank(names.s_file)  # type: ignore[attr-defined]
    rows = stl["source_row"].fill_null(-1).to_numpy()
    if rows.size and rows.min() >= -1 and rows.max() < 2**31 and group.max() < 2**31:
        s_order = ids_of(pl.Series((group << 32) + rows + 1).arg_sort())
    else:
        s_order = np.lexsort((rows, group))
    tx_of = book.tx[s_order]
    return pl.DataFrame(
        {
            "transaction_id": led["transaction_id"].gather(_where(tx_of, tx_of != NO_ANCHOR)),
            "psp": names.s_psp.gather(s_order),
            "source_file": names.s_file.gather(s_order),
            "source_row": stl["source_row"].gather(s_order),
            "business_date": stl["booking_date"].gather(s_order),
            "status": book.status[SETTLEMENT][s_order],
            "rule": book.rule[SETTLEMENT][s_order],
            "category": book.category[SETTLEMENT][s_order],
        }
    ).hstack(_anchor_columns(led, stl, book, book.anchor[SETTLEMENT][s_order], names))


def _outcome_plan(led: pl.DataFrame, stl: pl.DataFrame, book: Book) -> pl.LazyFrame:
    """The outcome rows as a lazy plan over compact columns, in a canonical order: ledger records by
    (psp, transaction_id), then settlement rows by (psp, source_file, source_row). The two sides' columns
    are gathered at once, in two threads (the sorts and gathers release the GIL; most of them use one
    core each)."""
    names = _Names(led, stl)
    with ThreadPoolExecutor(max_workers=1) as pool:
        ledger_rows = pool.submit(_ledger_rows, led, stl, book, names)
        settlement = _settlement_rows(led, stl, book, names)
        ledger = ledger_rows.result()
    records = pl.Enum(["ledger", "settlement"])
    decided = {
        "status": _codes("status", STATUSES),
        "match_id": _match_id_expr(names),
        "rule_id": _codes("rule", RULES),
        "exception_category": _codes("category", CATEGORIES),
    }
    ledger_plan = ledger.lazy().with_columns(
        record_key=_lkey(),
        record=pl.lit("ledger", records),
        source_file=pl.lit(None, names.s_file.dtype),
        source_row=pl.lit(None, pl.Int64),
        **decided,
    )
    settlement_plan = settlement.lazy().with_columns(
        record_key=_skey(names),
        record=pl.lit("settlement", records),
        **decided,
    )
    columns = ["record_key", *OUTCOME_SCHEMA]
    return pl.concat([ledger_plan.select(columns), settlement_plan.select(columns)])


def _evidence(led: pl.DataFrame, stl: pl.DataFrame, book: Book) -> pl.DataFrame:
    """Evidence per record (the last note wins), keyed by record key, in record-key order."""
    if not book.evidence:
        return pl.DataFrame(schema=_EVIDENCE)
    notes = pl.concat([e.cast(EVIDENCE_PARTS) for e in book.evidence]).unique(  # type: ignore[arg-type]
        ["side", "id"], keep="last", maintain_order=True
    )
    parts = []
    for side in (LEDGER, SETTLEMENT):
        mine = notes.filter(pl.col("side") == side)
        if mine.is_empty():
            continue
        ids = mine["id"]
        key = _lkeys(led, ids) if side == LEDGER else _skeys(stl, ids)
        parts.append(pl.DataFrame({"record_key": key, "evidence": mine["evidence"]}))
    return pl.concat(parts).sort("record_key")
