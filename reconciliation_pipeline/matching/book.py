"""What the matching rules have decided so far, per record, kept as integer arrays.

Records are addressed by integer row ids (``lid`` for ledger, ``sid`` for settlement rows, their
position in the frames the engine prepared); strings (record keys, match ids) are made only at the
output boundary. A decision is a handful of small integers per record, written in place, so "what is
still open" is a mask lookup rather than an anti-join on string keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

LEDGER, SETTLEMENT = 0, 1

#: Status codes; 0 = not decided yet.
STATUSES = (None, "matched", "pending", "exception")
MATCHED, PENDING, EXCEPTION = 1, 2, 3
#: Exception category codes; 0 = none.
CATEGORIES = (
    None,
    "missing_in_psp",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_settlement",
    "duplicate_booking",
    "unlinked_adjustment",
    "unclassified_row",
    "missing_in_bank",
)
NO_ANCHOR = -1

EVIDENCE_PARTS = {"side": pl.UInt8, "id": pl.Int64, "evidence": pl.String}


def ids_of(values: pl.Series | np.ndarray) -> np.ndarray:
    """Row ids as an int64 numpy array."""
    if isinstance(values, pl.Series):
        return values.cast(pl.Int64).to_numpy()
    return np.asarray(values, dtype=np.int64)


def _repeated(ids: np.ndarray) -> np.ndarray:
    """The ids that occur more than once."""
    values, counts = np.unique(ids, return_counts=True)
    return values[counts > 1]


def code_type(records: int) -> type[np.signedinteger]:
    """The integer type of anchor codes and row ids for ``records`` records (ledger + settlement): four
    bytes a record while they fit (at 20M records, 120 MB less than eight), eight beyond."""
    return np.int32 if records < 2**31 else np.int64


@dataclass
class Book:
    """One slot per record: status, rule, category, match anchor, and (settlement rows) the ledger
    record whose ``transaction_id`` the outcome carries.

    A match group is named by its anchor record: anchor code ``sid`` for a settlement row,
    ``n_settlement + lid`` for a ledger record; ``-1`` means no match id.
    """

    n_ledger: int
    n_settlement: int
    rules: tuple[str, ...]
    status: list[np.ndarray] = field(init=False)
    rule: list[np.ndarray] = field(init=False)
    category: list[np.ndarray] = field(init=False)
    anchor: list[np.ndarray] = field(init=False)
    tx: np.ndarray = field(init=False)
    evidence: list[pl.DataFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        sizes = (self.n_ledger, self.n_settlement)
        self.status = [np.zeros(n, np.uint8) for n in sizes]
        self.rule = [np.zeros(n, np.uint8) for n in sizes]
        self.category = [np.zeros(n, np.uint8) for n in sizes]
        code = code_type(self.n_settlement + self.n_ledger)
        self.anchor = [np.full(n, NO_ANCHOR, code) for n in sizes]
        self.tx = np.full(self.n_settlement, NO_ANCHOR, code)

    # ------------------------------------------------------------------------------------------ reading

    def open_mask(self, side: int) -> pl.Series:
        """True for every record of ``side`` no rule has decided yet (indexed by row id)."""
        return pl.Series(self.status[side] == 0)

    def only_open(self, frame: pl.DataFrame, side: int) -> pl.DataFrame:
        """The rows of ``frame`` (with an ``lid`` or ``sid`` column) not decided yet."""
        column = "lid" if side == LEDGER else "sid"
        if frame.is_empty():
            return frame
        return frame.filter(pl.Series(self.status[side][ids_of(frame[column])] == 0))

    def ledger_anchor(self, lids: pl.Series | np.ndarray) -> np.ndarray:
        return ids_of(lids) + self.n_settlement

    # ------------------------------------------------------------------------------------------ writing

    def decide(
        self,
        side: int,
        ids: pl.Series | np.ndarray,
        *,
        rule: str,
        status: int,
        category: str | None = None,
        anchor: pl.Series | np.ndarray | None = None,
        tx: pl.Series | np.ndarray | None = None,
    ) -> None:
        """Decide the records ``ids`` of ``side``; each record must be decided exactly once."""
        where = ids_of(ids)
        if where.size == 0:
            return
        name = ("ledger", "settlement")[side]
        slots = self.status[side]
        already = slots[where] != 0
        if already.any():
            raise AssertionError(f"{name} records decided twice (rule {rule}): ids {where[already][:5]}")
        decided = np.count_nonzero(slots)
        slots[where] = status
        # every id was open: the decided count grows by the number of ids unless one was given twice
        if np.count_nonzero(slots) - decided != where.size:
            raise AssertionError(
                f"{name} records decided twice (rule {rule}): ids {_repeated(where)[:5]} given more than once"
            )
        self.rule[side][where] = self.rules.index(rule)
        self.category[side][where] = CATEGORIES.index(category)
        if anchor is not None:
            self.anchor[side][where] = ids_of(anchor)
        if tx is not None:
            if side != SETTLEMENT:
                raise ValueError("only settlement rows carry another record's transaction_id")
            self.tx[where] = ids_of(tx)

    def decide_pairs(
        self,
        lids: pl.Series | np.ndarray,
        sids: pl.Series | np.ndarray,
        *,
        rule: str,
        status: int,
        category: str | None = None,
    ) -> None:
        """Decide 1:1 pairs: both records share a match id anchored on the settlement row; the settlement
        row carries the ledger record's transaction_id."""
        lids, sids = ids_of(lids), ids_of(sids)
        self.decide(LEDGER, lids, rule=rule, status=status, category=category, anchor=sids)
        self.decide(SETTLEMENT, sids, rule=rule, status=status, category=category, anchor=sids, tx=lids)

    def note(
        self, side: int, frame: pl.DataFrame, ids: pl.Expr, **fields: pl.Expr | str | int | None
    ) -> None:
        """Evidence for records: a JSON object per row of ``frame`` (fields in the order given)."""
        if frame.is_empty():
            return
        exprs = [
            (value if isinstance(value, pl.Expr) else pl.lit(value)).alias(name)
            for name, value in fields.items()
        ]
        self.evidence.append(
            frame.select(
                side=pl.lit(side, pl.UInt8),
                id=ids.cast(pl.Int64),
                evidence=pl.struct(exprs).struct.json_encode(),
            )
        )

    def undecided(self, side: int) -> np.ndarray:
        return np.flatnonzero(self.status[side] == 0)
