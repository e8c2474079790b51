"""Deterministic demo data: transaction events, PSP settlement files, bank statements and the ground truth.

The scenario model works column-wise (numpy arrays over *movements*: one money movement at one PSP, a
deposit, withdrawal, refund, chargeback or chargeback reversal) so a million ledger rows take seconds:

1. base deposits and withdrawals per business day, adjustments (refunds, chargebacks, their reversals)
   derived from earlier deposits, and "phantom" deposits from before the window that unlinked adjustments
   point to;
2. a settlement lag per movement (0-3 days) giving the PSP booking date; movements settling after the last
   demo date are absent from the files;
3. the mess, disjoint and at low rates (every kind at least twice): redelivered events, duplicate bookings,
   duplicate settlements, missing in PSP, missing in ledger, amount and currency mismatches, unlinked
   adjustments, ledger records without psp_reference; and what matches, but not one to one or not at first
   sight: split captures (one Adyen deposit settled as 2-3 ``Settled`` rows inside its lag window), split
   bookings (one payment booked as two deposits), cross-currency settlement (SEK/JPY Stripe charges paid out
   in EUR, presentment in ``customer_facing_*``; SEK Adyen captures with EUR net at the PSP's rate), refunds
   settled before their deposit, chargebacks booked after the deposit's lag window;
4. settlement batches per PSP, currency and booking date with per-row fees, a batch-level fee row and the
   merchant payout, which the bank statement (camt.053) credits the same day. A batch whose payout would not
   be positive gets a top-up deposit (an ordinary, exactly matching ledger record);
5. the ground truth: the state after reconciling every demo date in order with the settlement-lag window.

Randomness comes only from ``numpy.random.default_rng(config.seed)``; timestamps derive from the config.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from numpy.typing import NDArray

from reconciliation_pipeline.demo import writers
from reconciliation_pipeline.frames import KINDS
from reconciliation_pipeline.money import exponent

# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 7
    start: dt.date = dt.date(2026, 3, 2)
    days: int = 7  # business dates start .. start+days-1
    transactions_per_day: int = 300  # ledger transactions per day over all PSPs (before mess)
    invalid_events: int = 2  # events that break the JSON Schema, written into events.jsonl
    business_tz: str = "Europe/Malta"
    settlement_lag_days: int = 3  # RECON_SETTLEMENT_LAG_DAYS used for the ground truth


@dataclass(frozen=True)
class DemoManifest:
    root: Path
    events_file: Path
    settlement_files: dict[str, list[Path]]  # psp -> files ("adyen", "stripe", "paypal", "bank")
    ground_truth_file: Path
    counts: dict[str, int]


# --------------------------------------------------------------------------------------------------------
# Constants of the scenario
# --------------------------------------------------------------------------------------------------------

PSPS = ("adyen", "stripe", "paypal")
ADYEN, STRIPE, PAYPAL = 0, 1, 2
CURRENCIES = ("EUR", "GBP", "SEK", "JPY", "KWD")
EUR, GBP, SEK, JPY, KWD = 0, 1, 2, 3, 4
DEPOSIT, WITHDRAWAL, REFUND, CHARGEBACK, REVERSAL = (KINDS.index(k) for k in KINDS)
KIND_SIGN = np.array([1, -1, -1, -1, 1], dtype=np.int64)

EXP = np.array([exponent(c) for c in CURRENCIES], dtype=np.int64)
UNIT = 10**EXP  # minor units per major unit
FX = np.array([1.0, 0.86, 11.2, 160.0, 0.31])  # major units per EUR, roughly
PSP_SHARE = np.array([0.45, 0.30, 0.25])
CCY_SHARE = {
    ADYEN: np.array([0.46, 0.20, 0.12, 0.10, 0.12]),
    STRIPE: np.array([0.52, 0.25, 0.13, 0.10, 0.0]),
    PAYPAL: np.array([0.60, 0.28, 0.0, 0.12, 0.0]),
}
WITHDRAWAL_SHARE = {ADYEN: 0.15, STRIPE: 0.0, PAYPAL: 0.15}  # Stripe has no player payouts here
REFUND_RATE, CHARGEBACK_RATE, REVERSAL_RATE = 0.04, 0.02, 0.4
LAG_P = np.array([0.15, 0.45, 0.28, 0.12])  # lag 0..3 days (Adyen, PayPal)
STRIPE_LAG_P = np.array([0.0, 0.5, 0.35, 0.15])  # Stripe makes funds available T+1 at the earliest

BRANDS = ("LuckyFjord", "MaltaMillions", "SpinHarbour", "RoyalReels")
JURISDICTIONS = {EUR: ("MT", "DE", "IE"), GBP: ("GB",), SEK: ("SE",), JPY: ("MT",), KWD: ("MT",)}

# fees in minor units of each currency (EUR, GBP, SEK, JPY, KWD)
CHARGEBACK_FEE = np.array([1500, 1300, 16000, 2400, 5000], dtype=np.int64)
ADYEN_ROW_FEE = np.array([10, 9, 110, 16, 35], dtype=np.int64)  # batch "Transaction Fees" per row
STRIPE_FIXED_FEE = np.array([25, 20, 180, 40, 0], dtype=np.int64)
STRIPE_RADAR_FEE = np.array([5, 5, 50, 8, 0], dtype=np.int64)
PAYPAL_FIXED_FEE = np.array([35, 30, 0, 40, 0], dtype=np.int64)
PAYPAL_DAILY_FEE = np.array([100, 100, 0, 150, 0], dtype=np.int64)
MIN_PAYOUT = (np.array([50.0, 50.0, 500.0, 8000.0, 15.0]) * UNIT).astype(np.int64)
BANK_FEE = np.array([250, 200, 2500, 400, 1000], dtype=np.int64)

ADYEN_TZ = "Europe/Amsterdam"
PAYPAL_TZ = "America/Los_Angeles"
COMPANY = "ExampleCo"
PAYPAL_ACCOUNT = "EXAMPLECASINOMT1"
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# bank accounts per currency: (BBAN country, BBAN, camt version)
BANK_ACCOUNTS = {
    EUR: ("MT", "MALT01100000000000012345EUR", "08"),
    GBP: ("GB", "NWBK60161331926819", "08"),
    SEK: ("SE", "50000000058398257466", "02"),
    JPY: ("MT", "MALT01100000000000012345JPY", "08"),
    KWD: ("MT", "MALT01100000000000012345KWD", "08"),
}
BANK_OPENING = (np.array([25000.0, 12000.0, 150000.0, 2500000.0, 4000.0]) * UNIT).astype(np.int64)
DEBTOR_NAMES = ("Adyen N.V.", "Stripe Payments Europe Limited", "PayPal (Europe) S.a r.l. et Cie, S.C.A.")
PAYPAL_RESERVE = np.array([250000, 180000, 0, 30000000, 0], dtype=np.int64)  # STL units

# scenario names (index = code)
SCENARIOS = (
    "exact",
    "late_settlement",
    "pending",
    "no_psp_reference",
    "missing_in_psp",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_settlement",
    "duplicate_booking",
    "unlinked_adjustment",
    "split_capture",
    "split_booking",
    "cross_currency",
    "cross_currency_net",
    "refund_before_deposit_settles",
    "chargeback_after_window",
)
S_NONE, S_MISS_PSP, S_MISS_LEDGER, S_AMOUNT, S_CCY, S_DUP_SETTLE, S_DUP_BOOK, S_UNLINKED = (
    0,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
)
S_SPLIT_CAPTURE, S_SPLIT_BOOKING, S_CROSS, S_CROSS_NET, S_REFUND_EARLY, S_CB_LATE = range(11, 17)
#: matching rule of a settled movement by scenario (everything else with a reference: exact_ref)
RULE_OF_SCENARIO = {
    S_SPLIT_CAPTURE: "split_settlement",
    S_SPLIT_BOOKING: "split_booking",
    S_CROSS: "cross_currency",
}
SPLIT_CAPTURE_RATE = 0.005  # of Adyen deposits: one booking settled as 2-3 partial captures
SPLIT_BOOKING_RATE = 0.002  # of Adyen and PayPal deposits: one payment booked as two deposits
CROSS_CURRENCY_RATE = 0.02  # of Stripe deposits: SEK/JPY charge settled in a EUR payout
HANDFUL_RATE = 0.001  # of all transactions: Adyen net-currency FX, forced early refunds, late chargebacks
RATE_SCALE = 10**8  # PSP FX rates have 8 decimals

US = 1_000_000  # microseconds per second
DAY_US = 86_400 * US
EPOCH = dt.date(1970, 1, 1)

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def _epoch_day(day: dt.date) -> int:
    return (day - EPOCH).days


def _date(epoch_day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(epoch_day))


class _Midnights:
    """UTC instants (µs) of local midnights in one time zone, for a range of epoch days."""

    def __init__(self, tz: str, first: int, last: int) -> None:
        zone = ZoneInfo(tz)
        self.first = first
        self.values = np.array(
            [
                int(dt.datetime.combine(_date(d), dt.time(0), tzinfo=zone).timestamp()) * US
                for d in range(first, last + 2)
            ],
            dtype=np.int64,
        )

    def __call__(self, epoch_days: IntArray | int) -> IntArray:
        return self.values[np.asarray(epoch_days, dtype=np.int64) - self.first]

    def day_of(self, instants: IntArray) -> IntArray:
        return (np.searchsorted(self.values, instants, side="right") - 1 + self.first).astype(np.int64)


def _rand_str(rng: np.random.Generator, n: int, length: int, alphabet: str) -> NDArray[np.str_]:
    table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    codes = table[rng.integers(0, len(table), size=(n, length))]
    return np.ascontiguousarray(codes).view(f"S{length}").ravel().astype(f"U{length}")


UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _lookup(values: Sequence[str | None], index: pl.Expr) -> pl.Expr:
    """``values[index]`` per row: a constant table looked up by an integer column."""
    return pl.lit(pl.Series(list(values), dtype=pl.String)).gather(index)


def _psp_rate(ccy: int, day: int) -> int:
    """The PSP's rate from ``ccy`` to EUR on an epoch day, in units of 1/RATE_SCALE (deterministic)."""
    wiggle = 1.0 + 0.002 * (((day * 7 + ccy * 3) % 5) - 2)
    return round(RATE_SCALE / float(FX[ccy]) * wiggle)


def _to_eur(amount_minor: int, ccy: int, rate: int) -> int:
    """``amount_minor`` of ``ccy`` in EUR cents at ``rate``, rounded half up (amounts are positive)."""
    den = int(UNIT[ccy]) * RATE_SCALE
    return max(1, (2 * amount_minor * rate * 100 + den) // (2 * den))


def _rate_text(rate: int) -> str:
    return f"{rate // RATE_SCALE}.{rate % RATE_SCALE:08d}"


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


# --------------------------------------------------------------------------------------------------------
# The movement table
# --------------------------------------------------------------------------------------------------------

_COLUMNS: dict[str, type] = {
    "psp": np.int64,
    "ccy": np.int64,
    "kind": np.int64,
    "amount": np.int64,
    "occ": np.int64,
    "player": np.int64,
    "parent": np.int64,
    "cb_of": np.int64,
    "phantom": np.bool_,
    "filler": np.bool_,
    "must_settle": np.bool_,
    "plan": np.int64,  # scenario decided when the movement was made (forced late chargebacks)
}


class _Movements:
    def __init__(self) -> None:
        self.cols: dict[str, IntArray] = {name: np.zeros(0, dtype=t) for name, t in _COLUMNS.items()}

    @property
    def n(self) -> int:
        return int(self.cols["psp"].shape[0])

    def append(self, **values: IntArray | BoolArray) -> IntArray:
        n = len(next(iter(values.values())))
        start = self.n
        defaults = {"parent": -1, "cb_of": -1}
        for name, typ in _COLUMNS.items():
            value = values.get(name)
            if value is None:
                value = np.full(n, defaults.get(name, 0), dtype=typ)
            self.cols[name] = np.concatenate([self.cols[name], np.asarray(value, dtype=typ)])
        return np.arange(start, start + n, dtype=np.int64)

    def __getitem__(self, name: str) -> IntArray:
        return self.cols[name]


class _Scenario:
    """Builds the whole data set in memory (arrays), then the frames the writers need."""

    def __init__(self, config: DemoConfig) -> None:
        if config.days < 1 or config.transactions_per_day < 1:
            raise ValueError("days and transactions_per_day must be at least 1")
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.first = _epoch_day(config.start)
        self.last = self.first + config.days - 1
        self.max_lag = max(0, min(3, config.settlement_lag_days))
        lo, hi = self.first - 40, self.last + 8
        self.malta = _Midnights(config.business_tz, lo, hi)
        self.adyen_mid = _Midnights(ADYEN_TZ, lo, hi)
        self.paypal_mid = _Midnights(PAYPAL_TZ, lo, hi)
        self.m = _Movements()

    # ---------------------------------------------------------------- helpers
    def _occ_in_day(self, days: IntArray) -> IntArray:
        """Random whole-second instants inside the local business day (not in its last 5 minutes)."""
        lo = self.malta(days)
        span = (self.malta(days + 1) - lo) // US - 300
        return lo + (self.rng.random(len(days)) * span).astype(np.int64) * US

    def _clamp_to_day(self, occ: IntArray) -> IntArray:
        day = self.malta.day_of(occ)
        limit = self.malta(day + 1) - 300 * US
        return np.minimum(occ, limit)

    def _players(self, ccy: IntArray) -> IntArray:
        total = self.cfg.transactions_per_day * self.cfg.days
        per_ccy = max(40, min(999_999, total // 12))
        # a skewed draw: some players are far more active than others
        k = (self.rng.power(0.35, len(ccy)) * per_ccy).astype(np.int64)
        return ccy * 1_000_000 + k

    def _amounts(self, ccy: IntArray, median_eur: float, sigma: float, low: float, high: float) -> IntArray:
        n = len(ccy)
        major_eur = np.clip(np.exp(self.rng.normal(np.log(median_eur), sigma, n)), low, high)
        major = major_eur * FX[ccy]
        whole = self.rng.random(n) < 0.6
        step = np.where(ccy == JPY, 100.0, 1.0)  # round yen to hundreds, others to whole units
        minor = np.where(whole, np.round(major / step) * step * UNIT[ccy], np.round(major * UNIT[ccy]))
        return np.maximum(minor.astype(np.int64), UNIT[ccy])

    def _draw_ccy(self, psp: IntArray) -> IntArray:
        ccy = np.zeros(len(psp), dtype=np.int64)
        for p in (ADYEN, STRIPE, PAYPAL):
            idx = np.flatnonzero(psp == p)
            ccy[idx] = self.rng.choice(5, size=len(idx), p=CCY_SHARE[p])
        return ccy

    def _draw_lag(self, psp: IntArray) -> IntArray:
        lag = np.where(
            psp == STRIPE,
            self.rng.choice(4, size=len(psp), p=STRIPE_LAG_P),
            self.rng.choice(4, size=len(psp), p=LAG_P),
        ).astype(np.int64)
        lower = np.where(psp == STRIPE, 1, 0)
        upper = np.where(psp == STRIPE, max(1, self.max_lag), self.max_lag)
        return np.minimum(np.maximum(lag, lower), upper).astype(np.int64)

    # ---------------------------------------------------------------- 1. movements
    def build_movements(self) -> None:
        cfg, rng, m = self.cfg, self.rng, self.m
        per_day = max(1, round(cfg.transactions_per_day / 1.04))
        days = np.repeat(np.arange(self.first, self.last + 1, dtype=np.int64), per_day)
        n = len(days)
        psp = rng.choice(3, size=n, p=PSP_SHARE).astype(np.int64)
        ccy = self._draw_ccy(psp)
        wd_p = np.array([WITHDRAWAL_SHARE[p] for p in (ADYEN, STRIPE, PAYPAL)])[psp]
        kind = np.where(rng.random(n) < wd_p, WITHDRAWAL, DEPOSIT).astype(np.int64)
        amount = np.where(
            kind == DEPOSIT,
            self._amounts(ccy, 35.0, 0.9, 5.0, 3000.0),
            self._amounts(ccy, 90.0, 0.8, 10.0, 5000.0),
        )
        occ = self._occ_in_day(days)
        base = m.append(psp=psp, ccy=ccy, kind=kind, amount=amount, occ=occ, player=self._players(ccy))

        # adjustments derived from deposits
        deposits = base[kind == DEPOSIT]
        u = rng.random(len(deposits))
        window_end = int(self.malta(self.last + 1)[()])
        refunded = deposits[u < REFUND_RATE]
        charged = deposits[(u >= REFUND_RATE) & (u < REFUND_RATE + CHARGEBACK_RATE)]
        r_occ = m["occ"][refunded] + rng.integers(3600, 72 * 3600, len(refunded)) * US
        full = rng.random(len(refunded)) < 0.7
        r_amt = np.where(
            full,
            m["amount"][refunded],
            np.maximum(1, (m["amount"][refunded] * rng.uniform(0.2, 0.9, len(refunded)))),
        ).astype(np.int64)
        keep = r_occ < window_end
        self._append_children(refunded[keep], REFUND, r_occ[keep], r_amt[keep])
        c_occ = m["occ"][charged] + rng.integers(24 * 3600, 96 * 3600, len(charged)) * US
        keep = c_occ < window_end
        cbs = self._append_children(charged[keep], CHARGEBACK, c_occ[keep], m["amount"][charged[keep]])
        reversed_ = cbs[rng.random(len(cbs)) < REVERSAL_RATE]
        v_occ = m["occ"][reversed_] + rng.integers(24 * 3600, 72 * 3600, len(reversed_)) * US
        keep = v_occ < window_end
        rev = self._append_children(
            m["parent"][reversed_[keep]], REVERSAL, v_occ[keep], m["amount"][reversed_[keep]]
        )
        m["cb_of"][rev] = reversed_[keep]

        # chargebacks booked after the deposit's settlement-lag window closed (one with its reversal)
        total = cfg.transactions_per_day * cfg.days
        lag_days = cfg.settlement_lag_days
        dep_bd = self.malta.day_of(m["occ"][deposits])
        late = deposits[(u >= REFUND_RATE + CHARGEBACK_RATE) & (dep_bd <= self.last - lag_days - 2)]
        k = min(len(late), max(2, round(total * HANDFUL_RATE)))
        if k:
            late = np.sort(rng.choice(late, size=k, replace=False))
            late_bd = self.malta.day_of(m["occ"][late])
            cb_day = np.minimum(late_bd + lag_days + 1 + rng.integers(0, 2, k), self.last - 1)
            cbs = self._append_children(late, CHARGEBACK, self._occ_in_day(cb_day), m["amount"][late])
            m["plan"][cbs] = S_CB_LATE
            v_occ = m["occ"][cbs[:1]] + rng.integers(3600, 20 * 3600, 1) * US
            v_occ = np.minimum(v_occ, self.malta(self.last) - 300 * US)
            rev = self._append_children(late[:1], REVERSAL, v_occ, m["amount"][late[:1]])
            m["cb_of"][rev] = cbs[:1]
            m["plan"][rev] = S_CB_LATE

        # unlinked adjustments: refunds/chargebacks of deposits booked before the window (not in the ledger)
        k = max(2, round(total * 0.0005))
        p_psp = rng.choice(3, size=k, p=PSP_SHARE).astype(np.int64)
        p_ccy = self._draw_ccy(p_psp)
        p_days = self.first - rng.integers(5, 20, k)
        phantom = m.append(
            psp=p_psp,
            ccy=p_ccy,
            kind=np.full(k, DEPOSIT),
            amount=self._amounts(p_ccy, 60.0, 0.6, 10.0, 800.0),
            occ=self._occ_in_day(p_days),
            player=self._players(p_ccy),
            phantom=np.ones(k, dtype=bool),
        )
        span = max(1, self.cfg.days - 1)
        u_days = self.first + rng.integers(0, span, k)
        u_kind = np.where(np.arange(k) % 2 == 0, REFUND, CHARGEBACK)
        adj = self._append_children(phantom, u_kind, self._occ_in_day(u_days), m["amount"][phantom])
        m["must_settle"][adj] = True

    def _append_children(
        self, parents: IntArray, kind: IntArray | int, occ: IntArray, amount: IntArray
    ) -> IntArray:
        m = self.m
        n = len(parents)
        return m.append(
            psp=m["psp"][parents],
            ccy=m["ccy"][parents],
            kind=np.broadcast_to(np.asarray(kind), (n,)).copy(),
            amount=amount,
            occ=self._clamp_to_day(occ),
            player=m["player"][parents],
            parent=parents,
        )

    # ---------------------------------------------------------------- 2./3. lag and mess
    def settle_and_mess(self) -> None:
        m, rng, cfg = self.m, self.rng, self.cfg
        n = m.n
        self.bd = self.malta.day_of(m["occ"])
        self.lag = self._draw_lag(m["psp"])
        must = m["must_settle"] | (m["plan"] > 0)
        # movements that must settle inside the window (unlinked adjustments, late chargebacks)
        room = np.maximum(self.last - self.bd, 0)
        self.lag[must] = np.minimum(self.lag[must], room[must])
        self.lag[must & (m["psp"] == STRIPE)] = np.maximum(1, self.lag[must & (m["psp"] == STRIPE)])
        self._force_early_refunds()
        self.settle_day = self.bd + self.lag
        self.in_ledger = ~m["phantom"]
        self.settled = (~m["phantom"]) & (self.settle_day <= self.last)
        self.settle_amount = m["amount"].copy()
        self.settle_ccy = m["ccy"].copy()
        self.n_settle = np.ones(n, dtype=np.int64)
        self.ref_null = np.zeros(n, dtype=bool)
        self.dup_book = np.zeros(n, dtype=bool)
        self.mess = np.zeros(n, dtype=np.int64)
        self.fx_rate: dict[int, str] = {}  # movement -> PSP rate text (gross currency -> EUR)

        is_parent = np.zeros(n, dtype=bool)
        is_parent[m["parent"][m["parent"] >= 0]] = True
        is_child = m["parent"] >= 0
        plain = ~is_parent & ~is_child & ~m["phantom"]
        total = cfg.transactions_per_day * cfg.days
        rate = {"small": max(2, round(total * 0.0015)), "tiny": max(2, round(total * 0.001))}
        taken = np.zeros(n, dtype=bool)

        def pick(candidates: BoolArray, count: int, code: int) -> IntArray:
            idx = np.flatnonzero(candidates & ~taken)
            chosen = np.sort(rng.choice(idx, size=min(count, len(idx)), replace=False)) if len(idx) else idx
            taken[chosen] = True
            self.mess[chosen] = code
            return chosen

        kind = m["kind"]
        dep = plain & (kind == DEPOSIT)
        dep_wd = plain & ((kind == DEPOSIT) | (kind == WITHDRAWAL))
        old = self.bd <= self.last - cfg.settlement_lag_days - 1
        chosen = pick(dep_wd & old, rate["small"], S_MISS_PSP)
        self.settled[chosen] = False
        chosen = pick(dep_wd & self.settled, rate["small"], S_MISS_LEDGER)
        self.in_ledger[chosen] = False
        chosen = pick(dep & self.settled, rate["small"], S_AMOUNT)
        amt = self.settle_amount[chosen]
        small = rng.integers(1, 6, len(chosen)) * np.where(m["ccy"][chosen] == JPY, 10, 1)
        delta = np.where(
            np.arange(len(chosen)) % 2 == 0, small, np.maximum(amt // 10, 2 * UNIT[m["ccy"][chosen]])
        )
        sign = np.where(rng.random(len(chosen)) < 0.5, -1, 1)
        sign = np.where(amt + sign * delta <= 0, 1, sign)
        self.settle_amount[chosen] = amt + sign * delta
        two_digit = (m["ccy"] == EUR) | (m["ccy"] == GBP) | ((m["ccy"] == SEK) & (m["psp"] != PAYPAL))
        chosen = pick(dep & self.settled & two_digit, rate["tiny"], S_CCY)
        for i in chosen:
            options = [EUR, GBP] if m["psp"][i] == PAYPAL else [EUR, GBP, SEK]
            options.remove(int(m["ccy"][i]))
            self.settle_ccy[i] = options[int(rng.integers(0, len(options)))]
        chosen = pick(dep & self.settled, rate["small"], S_DUP_SETTLE)
        self.n_settle[chosen] = 2
        chosen = pick(dep & self.settled, rate["small"], S_DUP_BOOK)
        self.dup_book[chosen] = True

        # matched, but not one to one: split captures, split bookings, cross-currency settlement
        psp = m["psp"]
        big = m["amount"] >= 20 * UNIT[m["ccy"]]
        n_dep = {p: int((plain & (kind == DEPOSIT) & (psp == p)).sum()) for p in (ADYEN, STRIPE, PAYPAL)}
        count = max(2, round(n_dep[ADYEN] * SPLIT_CAPTURE_RATE))
        chosen = pick(dep & self.settled & (psp == ADYEN) & big, count, S_SPLIT_CAPTURE)
        self._split_captures(chosen)
        count = max(2, round((n_dep[ADYEN] + n_dep[PAYPAL]) * SPLIT_BOOKING_RATE))
        on_paypal = pick(dep & self.settled & (psp == PAYPAL) & big, max(1, count // 2), S_SPLIT_BOOKING)
        on_adyen = pick(dep & self.settled & (psp == ADYEN) & big, count - len(on_paypal), S_SPLIT_BOOKING)
        self._split_bookings(np.sort(np.concatenate([on_paypal, on_adyen])))
        count = max(2, round(n_dep[STRIPE] * CROSS_CURRENCY_RATE))
        foreign = (m["ccy"] == SEK) | (m["ccy"] == JPY)
        chosen = pick(dep & self.settled & (psp == STRIPE) & foreign, count, S_CROSS)
        self._convert_to_eur(chosen)
        count = max(2, round(total * HANDFUL_RATE))
        chosen = pick(dep & self.settled & (psp == ADYEN) & (m["ccy"] == SEK), count, S_CROSS_NET)
        self._convert_to_eur(chosen)

        self.mess[m["must_settle"]] = S_UNLINKED
        no_ref = dep_wd & ~taken & self.in_ledger & (rng.random(n) < 0.05)
        self.ref_null[no_ref] = True

        # orderings that happen on their own too: a refund settled before its deposit, a chargeback (or
        # reversal) booked after the deposit's settlement-lag window; labelled wherever they occur
        par = m["parent"]
        child = np.flatnonzero((par >= 0) & ~m["phantom"][np.maximum(par, 0)] & (self.mess == 0))
        p = par[child]
        both = self.settled[child] & self.settled[p] & self.in_ledger[child] & self.in_ledger[p]
        early = child[both & (kind[child] == REFUND) & (self.settle_day[child] < self.settle_day[p])]
        self.mess[early] = S_REFUND_EARLY
        self.mess[par[early]] = S_REFUND_EARLY
        is_cb = (kind[child] == CHARGEBACK) | (kind[child] == REVERSAL)
        late = child[both & is_cb & (self.bd[child] - self.bd[p] > cfg.settlement_lag_days)]
        self.mess[late] = S_CB_LATE
        planned = np.flatnonzero(m["plan"] > 0)
        self.mess[planned] = m["plan"][planned]

    def _force_early_refunds(self) -> None:
        """A few refunds that settle the day they are booked while their deposit settles late (max lag)."""
        m, rng, cfg = self.m, self.rng, self.cfg
        if self.max_lag < 1:
            return
        par = m["parent"]
        p = np.maximum(par, 0)
        ok = (
            (m["kind"] == REFUND)
            & (par >= 0)
            & ~m["phantom"][p]
            & ~m["must_settle"]
            & (m["psp"] != STRIPE)  # Stripe makes nothing available the same day
            & (self.bd[p] + self.max_lag <= self.last)
            & (self.bd < self.bd[p] + self.max_lag)
        )
        idx = np.flatnonzero(ok)
        k = min(len(idx), max(2, round(cfg.transactions_per_day * cfg.days * HANDFUL_RATE)))
        chosen = np.sort(rng.choice(idx, size=k, replace=False)) if k else idx
        self.lag[par[chosen]] = self.max_lag
        self.lag[chosen] = 0

    def _split_captures(self, chosen: IntArray) -> None:
        """Each chosen Adyen deposit settles as 2-3 captures inside its lag window, amounts summing up."""
        rng = self.rng
        mv: list[int] = []
        amounts: list[int] = []
        days: list[int] = []
        part: list[int] = []
        for i in chosen.tolist():
            total = int(self.settle_amount[i])
            k = 3 if rng.random() < 0.35 else 2
            shares = rng.uniform(0.2, 0.45, k - 1)
            pieces = [max(1, int(total * s)) for s in shares]
            pieces.append(total - sum(pieces))
            first = int(self.settle_day[i])
            last = min(int(self.bd[i]) + self.max_lag, self.last)
            later = sorted(int(d) for d in rng.integers(first, max(first, last) + 1, k - 1))
            mv += [i] * k
            amounts += pieces
            days += [first, *later]
            part += list(range(k))
        self.part_mv = np.array(mv, dtype=np.int64)
        self.part_amount = np.array(amounts, dtype=np.int64)
        self.part_day = np.array(days, dtype=np.int64)
        self.part_no = np.array(part, dtype=np.int64)
        self.part_ref = _rand_str(rng, len(mv), 16, UPPER_DIGITS)

    def _split_bookings(self, chosen: IntArray) -> None:
        """Each chosen deposit is booked as two deposits (whole major units first) summing to the payment."""
        unit = UNIT[self.m["ccy"][chosen]]
        total = self.settle_amount[chosen]
        first = np.round(total * self.rng.uniform(0.3, 0.7, len(chosen)) / unit).astype(np.int64) * unit
        self.split_book_mv = chosen
        self.split_book_first = np.clip(first, unit, total - unit)

    def _convert_to_eur(self, chosen: IntArray) -> None:
        """Settle the chosen movements in EUR at the PSP's rate of their business date."""
        m = self.m
        for i in chosen.tolist():
            rate = _psp_rate(int(m["ccy"][i]), int(self.bd[i]))
            self.settle_amount[i] = _to_eur(int(m["amount"][i]), int(m["ccy"][i]), rate)
            self.settle_ccy[i] = EUR
            self.fx_rate[i] = _rate_text(rate)

    # ---------------------------------------------------------------- 4. settlement rows and batches
    def _player_rows(self) -> pl.DataFrame:
        """Numeric settlement rows of player movements (one per settlement occurrence)."""
        m = self.m
        mv = np.flatnonzero(self.settled)
        is_split = np.zeros(m.n, dtype=bool)
        is_split[self.part_mv] = True
        mv = mv[~is_split[mv]]
        mv = np.repeat(mv, self.n_settle[mv])
        occurrence = np.zeros(len(mv), dtype=np.int64)
        occurrence[1:] = (mv[1:] == mv[:-1]).astype(np.int64)
        # split captures: one row per part, each with its own amount and booking day
        n_whole, n_parts = len(mv), len(self.part_mv)
        part_idx = np.concatenate([np.full(n_whole, -1, dtype=np.int64), np.arange(n_parts, dtype=np.int64)])
        day = np.concatenate([self.settle_day[mv], self.part_day])
        amount = np.concatenate([self.settle_amount[mv], self.part_amount])
        mv = np.concatenate([mv, self.part_mv])
        occurrence = np.concatenate([occurrence, np.zeros(n_parts, dtype=np.int64)])
        psp, kind, ccy = m["psp"][mv], m["kind"][mv], self.settle_ccy[mv]
        gross = KIND_SIGN[kind] * amount
        # what the player was charged: the booking itself for cross-currency settlement
        fx = np.isin(self.mess[mv], [S_CROSS, S_CROSS_NET])
        pres_amount = np.where(fx, m["amount"][mv], amount)
        pres_ccy = np.where(fx, m["ccy"][mv], ccy)
        fee = np.zeros(len(mv), dtype=np.int64)
        markup = scheme = interchange = np.zeros(len(mv), dtype=np.int64)
        a_dep = (psp == ADYEN) & (kind == DEPOSIT)
        markup = np.where(a_dep, amount * 12 // 10000, 0)
        scheme = np.where(a_dep, amount * 20 // 10000, 0)
        interchange = np.where(a_dep, amount * 30 // 10000, 0)
        commission = np.where((psp == ADYEN) & (kind == CHARGEBACK), CHARGEBACK_FEE[ccy], 0)
        fee = markup + scheme + interchange + commission
        fee += np.where((psp == STRIPE) & (kind == DEPOSIT), amount * 15 // 1000 + STRIPE_FIXED_FEE[ccy], 0)
        fee += np.where((psp == STRIPE) & (kind == CHARGEBACK), CHARGEBACK_FEE[ccy], 0)
        fee += np.where((psp == PAYPAL) & (kind == DEPOSIT), amount * 29 // 1000 + PAYPAL_FIXED_FEE[ccy], 0)
        return pl.DataFrame(
            {
                "mv": mv,
                "occurrence": occurrence,
                "part_idx": part_idx,
                "part": np.concatenate([np.full(n_whole, -1, dtype=np.int64), self.part_no]),
                "psp": psp,
                "kind": kind,
                "ccy": ccy,
                "day": day,
                "amount": amount,
                "gross": gross,
                "pres_amount": pres_amount,
                "pres_ccy": pres_ccy,
                "fee": fee,
                "net": gross - fee,
                "commission": commission,
                "markup": markup,
                "scheme": scheme,
                "interchange": interchange,
            }
        )

    def _batches(self, rows: pl.DataFrame) -> pl.DataFrame:
        batches = rows.group_by("psp", "ccy", "day").agg(
            pl.len().alias("n_rows"),
            (pl.col("kind") == DEPOSIT).sum().alias("n_deposits"),
            pl.col("net").sum().alias("player_net"),
        )
        ccy = batches["ccy"].to_numpy()
        psp = batches["psp"].to_numpy()
        n_rows = batches["n_rows"].to_numpy().astype(np.int64)
        n_dep = batches["n_deposits"].to_numpy().astype(np.int64)
        batch_fee = np.where(
            psp == ADYEN,
            ADYEN_ROW_FEE[ccy] * n_rows,
            np.where(psp == STRIPE, STRIPE_RADAR_FEE[ccy] * np.maximum(n_dep, 1), PAYPAL_DAILY_FEE[ccy]),
        )
        return batches.with_columns(
            pl.Series("batch_fee", batch_fee, dtype=pl.Int64),
            (pl.col("player_net") - pl.Series(batch_fee)).alias("payout"),
        ).sort("day", "psp", "ccy")

    def top_up(self) -> None:
        """Give every batch whose payout would be below the minimum an extra (ordinary) deposit."""
        for _ in range(10):
            batches = self._batches(self._player_rows())
            short = batches.filter(pl.col("payout") < pl.lit(pl.Series(MIN_PAYOUT)).gather(pl.col("ccy")))
            if short.height == 0:
                return
            psp = short["psp"].to_numpy().astype(np.int64)
            ccy = short["ccy"].to_numpy().astype(np.int64)
            day = short["day"].to_numpy().astype(np.int64)
            deficit = MIN_PAYOUT[ccy] - short["payout"].to_numpy()
            amount = (deficit * 1.3).astype(np.int64) + MIN_PAYOUT[ccy]
            amount = np.where(ccy == JPY, (amount // 100 + 1) * 100, amount)
            bd = day - np.where(psp == STRIPE, 1, 0)
            idx = self.m.append(
                psp=psp,
                ccy=ccy,
                kind=np.full(len(psp), DEPOSIT),
                amount=amount,
                occ=self._occ_in_day(bd),
                player=self._players(ccy),
                filler=np.ones(len(psp), dtype=bool),
            )
            self.bd = np.concatenate([self.bd, bd])
            self.lag = np.concatenate([self.lag, day - bd])
            self.settle_day = np.concatenate([self.settle_day, day])
            for name, value in (
                ("in_ledger", True),
                ("settled", True),
                ("ref_null", False),
                ("dup_book", False),
            ):
                setattr(self, name, np.concatenate([getattr(self, name), np.full(len(idx), value)]))
            self.settle_amount = np.concatenate([self.settle_amount, amount])
            self.settle_ccy = np.concatenate([self.settle_ccy, ccy])
            self.n_settle = np.concatenate([self.n_settle, np.ones(len(idx), dtype=np.int64)])
            self.mess = np.concatenate([self.mess, np.zeros(len(idx), dtype=np.int64)])
        raise RuntimeError("could not make every payout positive")  # pragma: no cover

    # ---------------------------------------------------------------- 5. ids
    def assign_ids(self) -> None:
        m, rng = self.m, self.rng
        n = m.n
        # bookings: every non-phantom movement plus the second booking of duplicate-booked ones (same
        # amount) and of split-booked ones (the payment's remainder)
        dup_src = np.flatnonzero(self.dup_book)
        split_src = self.split_book_mv
        extra_src = np.concatenate([dup_src, split_src])
        extra_occ = m["occ"][extra_src] + rng.integers(1, 600, len(extra_src)) * US
        extra_occ = np.minimum(extra_occ, self.malta(self.bd[extra_src] + 1) - US)
        self.extra_dup = np.arange(len(extra_src)) < len(dup_src)
        self.extra_amount = np.concatenate(
            [m["amount"][dup_src], self.settle_amount[split_src] - self.split_book_first]
        )
        self.book_amount = m["amount"].copy()
        self.book_amount[split_src] = self.split_book_first
        real = np.flatnonzero(~m["phantom"])
        occ_all = np.concatenate([m["occ"][real], extra_occ])
        seq = np.concatenate([real, n + np.arange(len(extra_src))])
        order = np.lexsort((seq, occ_all))
        tx_num = np.zeros(n + len(extra_src), dtype=np.int64)
        tx_num[seq[order]] = 100_001 + np.arange(len(order))
        phantom = np.flatnonzero(m["phantom"])
        tx_num[phantom] = 10_000 + np.sort(rng.choice(80_000, len(phantom), replace=False))
        self.tx_num = tx_num[:n]
        self.extra_src = extra_src
        self.extra_occ = extra_occ
        self.extra_tx_num = tx_num[n:]

        psp, kind = m["psp"], m["kind"]
        ref = np.full(n, "", dtype=object)
        pay_ref = np.full(n, "", dtype=object)
        aux = np.full(n, "", dtype=object)  # Adyen capture reference / Stripe charge id
        is_a, is_s, is_p = psp == ADYEN, psp == STRIPE, psp == PAYPAL
        ref[is_a] = _rand_str(rng, int(is_a.sum()), 16, UPPER_DIGITS)
        aux[is_a] = _rand_str(rng, int(is_a.sum()), 16, UPPER_DIGITS)
        ref[is_p] = _rand_str(rng, int(is_p.sum()), 17, UPPER_DIGITS)
        s_idx = np.flatnonzero(is_s)
        body = _rand_str(rng, len(s_idx), 24, ALNUM).astype(object)
        prefix = np.array(["pi_3", "", "re_3", "du_1", ""], dtype=object)[kind[s_idx]]
        ref[s_idx] = prefix + body
        s_dep = np.flatnonzero(is_s & (kind == DEPOSIT))
        aux[s_dep] = "ch_3" + _rand_str(rng, len(s_dep), 24, ALNUM).astype(object)
        rev = np.flatnonzero(is_s & (kind == REVERSAL))
        ref[rev] = ref[m["cb_of"][rev]]
        parent = m["parent"]
        has_parent = parent >= 0
        pay_ref[~has_parent] = ref[~has_parent]
        pay_ref[has_parent] = ref[parent[has_parent]]
        child_s = np.flatnonzero(has_parent & is_s)
        aux[child_s] = aux[parent[child_s]]
        self.ref, self.pay_ref, self.aux = ref, pay_ref, aux
        n_book = n + len(extra_src)
        self.trace = _rand_str(rng, n_book, 32, "0123456789abcdef")
        self.trace_null = rng.random(n_book) < 0.08
        self.spelling = rng.choice(3, size=n_book, p=[0.5, 0.35, 0.15])
        self.millis = np.where(rng.random(n_book) < 0.2, rng.integers(1, 1000, n_book), 0)

    # ---------------------------------------------------------------- frames
    def movement_frame(self) -> pl.DataFrame:
        m = self.m
        tx = pl.lit("tx-") + pl.col("tx_num").cast(pl.String).str.zfill(9)
        frame = pl.DataFrame(
            {
                "mv": np.arange(m.n),
                "psp_i": m["psp"],
                "kind_i": m["kind"],
                "ccy_i": m["ccy"],
                "amount": m["amount"],
                "occ": m["occ"],
                "player_i": m["player"],
                "parent": m["parent"],
                "tx_num": self.tx_num,
                "bd": self.bd,
                "settle_day": self.settle_day,
                "settled": self.settled,
                "in_ledger": self.in_ledger,
                "ref_null": self.ref_null,
                "mess": self.mess,
                "lag": self.lag,
                "filler": m["filler"],
            }
        ).with_columns(
            tx.alias("transaction_id"),
            pl.Series("ref", self.ref, dtype=pl.String),
            pl.Series("pay_ref", self.pay_ref, dtype=pl.String),
            pl.Series("aux", self.aux, dtype=pl.String),
            self._fx_rate_column(),
        )
        parent_tx = frame.select(pl.col("transaction_id").gather(pl.col("parent").clip(0, None)).alias("x"))[
            "x"
        ]
        return frame.with_columns(
            pl.when(pl.col("parent") >= 0).then(parent_tx).otherwise(None).alias("original_transaction_id"),
            pl.when(pl.col("parent") >= 0)
            .then(parent_tx)
            .otherwise(pl.col("transaction_id"))
            .alias("merchant_ref"),
        )

    def _fx_rate_column(self) -> pl.Series:
        rates = pl.Series("fx_rate", [None] * self.m.n, dtype=pl.String)
        if self.fx_rate:
            at = sorted(self.fx_rate)
            rates = rates.scatter(at, [self.fx_rate[i] for i in at])
        return rates

    def ledger_frame(self, mv: pl.DataFrame) -> pl.DataFrame:
        """One row per ledger record (after de-duplication), in booking order."""
        n = self.m.n
        primary = mv.filter(pl.col("in_ledger")).with_columns(
            pl.col("mv").alias("booking"),
            pl.lit(False).alias("dup_extra"),
            pl.lit(pl.Series("amount", self.book_amount)).gather(pl.col("mv")).alias("amount"),
        )
        extra = (
            mv[self.extra_src.tolist()]
            .with_columns(
                pl.Series("occ", self.extra_occ),
                pl.Series("tx_num", self.extra_tx_num),
                pl.Series("booking", n + np.arange(len(self.extra_src))),
                pl.Series("dup_extra", self.extra_dup),
                pl.Series("amount", self.extra_amount),
            )
            .with_columns(
                (pl.lit("tx-") + pl.col("tx_num").cast(pl.String).str.zfill(9)).alias("transaction_id")
            )
        )
        ledger = pl.concat([primary, extra.select(primary.columns)]).sort("occ", "tx_num")
        book = ledger["booking"].to_numpy()
        players = ledger["player_i"].to_numpy()
        ccy = players // 1_000_000
        k = players % 1_000_000
        jur = np.empty(len(players), dtype=object)
        for c, options in JURISDICTIONS.items():
            sel = ccy == c
            jur[sel] = np.array(options, dtype=object)[k[sel] % len(options)]
        brand = np.array(BRANDS, dtype=object)[(k * 7 + ccy) % len(BRANDS)]
        return ledger.with_columns(
            pl.Series("jurisdiction", jur, dtype=pl.String),
            pl.Series("brand", brand, dtype=pl.String),
            (pl.lit("pl-") + pl.col("player_i").cast(pl.String).str.zfill(7)).alias("player_id"),
            pl.Series("trace_id", self.trace[book], dtype=pl.String),
            pl.Series("trace_null", self.trace_null[book]),
            pl.Series("spelling", self.spelling[book]),
            pl.Series("millis", self.millis[book]),
        )

    def events(self, ledger: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[int, str]], int]:
        cfg = self.cfg
        ts = pl.col("occ_ts") + pl.duration(milliseconds=pl.col("millis"))

        def spelled(zone: str, suffix: str) -> pl.Expr:
            local = ts.dt.convert_time_zone(zone)
            base = local.dt.strftime("%Y-%m-%dT%H:%M:%S")
            fraction = pl.lit(".") + pl.col("millis").cast(pl.String).str.zfill(3)
            offset = pl.lit("Z") if suffix == "Z" else local.dt.strftime("%:z")
            return base + pl.when(pl.col("millis") > 0).then(fraction).otherwise(pl.lit("")) + offset

        frame = (
            ledger.with_columns(pl.col("occ").cast(pl.Datetime("us", "UTC")).alias("occ_ts"))
            .select(
                pl.lit("ev-") + pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(10),
                pl.col("transaction_id"),
                _lookup(PSPS, pl.col("psp_i")).alias("psp"),
                pl.when(pl.col("ref_null")).then(None).otherwise(pl.col("ref")).alias("psp_reference"),
                pl.col("original_transaction_id"),
                _lookup(KINDS, pl.col("kind_i")).alias("kind"),
                pl.col("amount").alias("amount_minor"),
                _lookup(CURRENCIES, pl.col("ccy_i")).alias("currency"),
                pl.when(pl.col("spelling") == 0)
                .then(spelled("UTC", "Z"))
                .when(pl.col("spelling") == 1)
                .then(spelled(cfg.business_tz, "offset"))
                .otherwise(spelled("Etc/GMT-2", "offset"))
                .alias("occurred_at"),
                pl.col("player_id"),
                pl.col("brand"),
                pl.col("jurisdiction"),
                pl.when(pl.col("trace_null")).then(None).otherwise(pl.col("trace_id")).alias("trace_id"),
            )
            .rename({"literal": "event_id"})
        )
        # exact redeliveries: the same event repeated verbatim a few lines later
        total = cfg.transactions_per_day * cfg.days
        n_redeliver = min(frame.height, max(2, round(total * 0.003)))
        rng = self.rng
        picks = (
            np.sort(rng.choice(frame.height, size=n_redeliver, replace=False))
            if frame.height
            else np.array([])
        )
        key = np.concatenate(
            [np.arange(frame.height, dtype=np.float64), picks + rng.integers(1, 40, len(picks)) + 0.5]
        )
        order = np.argsort(key, kind="stable")
        stream = frame[np.concatenate([np.arange(frame.height), picks]).astype(np.int64)[order].tolist()]
        extra: list[tuple[int, str]] = []
        for i in range(cfg.invalid_events):
            position = (i + 1) * stream.height // (cfg.invalid_events + 1)
            base = stream.row(min(position, stream.height - 1), named=True) if stream.height else {}
            event = dict(base)
            event["event_id"] = f"ev-bad-{i + 1:05d}"
            event["transaction_id"] = f"tx-{99_000 + i:09d}"
            event["psp_reference"] = None
            variant = i % 4
            if variant == 0:
                event["amount_minor"] = "12.5"
            elif variant == 1:
                event.pop("currency", None)
            elif variant == 2:
                event["occurred_at"] = str(event.get("occurred_at", "2026-03-02T10:00:00Z"))[:19]
            else:
                event["jurisdiction"] = "Malta"
            extra.append((position, json.dumps(event, separators=(",", ":"))))
        return stream, extra, n_redeliver

    # ---------------------------------------------------------------- settlement files
    def booking_times(self) -> None:
        """PSP booking instant of every settled movement (UTC µs), on its settlement day in the PSP's zone."""
        m, rng = self.m, self.rng
        booked = self.settle_day * DAY_US  # Stripe: available_on = midnight UTC of the settlement day
        for psp, mid in ((ADYEN, self.adyen_mid), (PAYPAL, self.paypal_mid)):
            idx = np.flatnonzero((m["psp"] == psp) & self.settled)
            low = np.maximum(m["occ"][idx] + US, mid(self.settle_day[idx]))
            span = np.maximum(mid(self.settle_day[idx] + 1) - 180 * US - low, 0) // US
            booked[idx] = low + (rng.random(len(idx)) * span).astype(np.int64) * US
        self.booked = booked
        occ = m["occ"][self.part_mv]
        low = np.maximum(occ + US, self.adyen_mid(self.part_day))
        span = np.maximum(self.adyen_mid(self.part_day + 1) - 180 * US - low, 0) // US
        self.part_booked = low + (rng.random(len(occ)) * span).astype(np.int64) * US

    def settlement_rows(self, mv: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Player rows joined with movement attributes, and the batches (with ids) they belong to."""
        rows = self._player_rows()
        batches = self._batches(rows).with_row_index("batch")
        rng = self.rng
        nb = batches.height
        psp = batches["psp"].to_numpy()
        adyen_rank = np.cumsum(psp == ADYEN) - 1
        po_ids = "po_1" + _rand_str(rng, nb, 24, ALNUM).astype(object)
        bank_refs = "PPWD" + _rand_str(rng, nb, 12, UPPER_DIGITS).astype(object)
        transfer = rng.choice(9_000_000_000, nb, replace=False) + 1_000_000_000
        batches = batches.with_columns(
            pl.Series("batch_number", 1001 + adyen_rank),
            pl.Series("po_id", po_ids, dtype=pl.String),
            pl.Series("bank_ref", bank_refs, dtype=pl.String),
            pl.Series("transfer", transfer),
        )
        part_idx = rows["part_idx"].to_numpy()
        has_part = part_idx >= 0
        at = np.maximum(part_idx, 0)
        booked = self.booked[rows["mv"].to_numpy()]
        n_rows = rows.height
        part_ref = pl.Series("part_ref", [None] * n_rows, dtype=pl.String)
        if len(self.part_mv):
            booked = np.where(has_part, self.part_booked[at], booked)
            part_ref = part_ref.scatter(np.flatnonzero(has_part), self.part_ref[at[has_part]].tolist())
        rows = (
            rows.with_columns(
                pl.Series("booked", booked),
                part_ref,
                pl.Series("txn", "txn_3" + _rand_str(rng, n_rows, 24, ALNUM).astype(object), dtype=pl.String),
                pl.Series("pp_dup_id", _rand_str(rng, n_rows, 17, UPPER_DIGITS), dtype=pl.String),
            )
            .join(mv.drop("psp_i", "kind_i"), on="mv", how="left")
            .join(batches.select("psp", "ccy", "day", "batch"), on=["psp", "ccy", "day"], how="left")
        )
        return rows, batches

    def adyen_files(self, rows: pl.DataFrame, batches: pl.DataFrame) -> pl.DataFrame:
        """Rows of every Adyen settlement details report, with their file and 1-based data row."""
        ccy_name = _lookup(CURRENCIES, pl.col("ccy"))
        account = pl.lit("ExampleCasino") + ccy_name
        b = batches.filter(pl.col("psp") == ADYEN).with_columns(
            (
                pl.lit("settlement_detail_report_batch_")
                + pl.col("batch_number").cast(pl.String)
                + pl.lit(".csv")
            ).alias("source_file"),
            account.alias("merchant_account"),
        )
        kind = pl.col("kind")
        pm_code = (pl.col("mv") * 7) % 10
        pm = (
            pl.when(pm_code < 6)
            .then(pl.lit("visa"))
            .when(pm_code < 9)
            .then(pl.lit("mc"))
            .otherwise(pl.lit("amex"))
        )
        variant = (
            pl.when(pm_code < 4)
            .then(pl.lit("visaclassic"))
            .when(pm_code < 6)
            .then(pl.lit("visadebit"))
            .when(pm_code < 8)
            .then(pl.lit("mccredit"))
            .when(pm_code < 9)
            .then(pl.lit("mcdebit"))
            .otherwise(pl.lit("amex"))
        )
        credit = pl.col("gross") > 0
        net_credit = pl.col("net") >= 0
        player = (
            rows.filter(pl.col("psp") == ADYEN)
            .join(b.select("batch", "source_file", "merchant_account", "batch_number"), on="batch")
            .sort("batch", "booked", "mv", "occurrence", "part")
            .with_columns(
                pl.lit(0).alias("line"),
                pl.when(kind.is_in([DEPOSIT, WITHDRAWAL]))
                .then(pl.col("ref"))
                .otherwise(pl.col("pay_ref"))
                .alias("psp_reference"),
                pl.col("merchant_ref").alias("merchant_reference"),
                pm.alias("payment_method"),
                _lookup(["Settled", "PaidOut", "Refunded", "Chargeback", "ChargebackReversed"], kind).alias(
                    "type"
                ),
                pl.when(kind.is_in([DEPOSIT, WITHDRAWAL]))
                .then(pl.coalesce(pl.col("part_ref"), pl.col("aux")))
                .otherwise(pl.col("ref"))
                .alias("modification_reference"),
                pl.when(credit).then(None).otherwise(pl.col("pres_amount")).alias("gross_debit"),
                pl.when(credit).then(pl.col("pres_amount")).otherwise(None).alias("gross_credit"),
                _lookup(CURRENCIES, pl.col("pres_ccy")).alias("gross_currency"),
                pl.coalesce(pl.col("fx_rate"), pl.lit("1")).alias("exchange_rate"),
                pl.when(net_credit).then(None).otherwise(-pl.col("net")).alias("net_debit"),
                pl.when(net_credit).then(pl.col("net")).otherwise(None).alias("net_credit"),
                pl.when(pl.col("commission") > 0)
                .then(pl.col("commission"))
                .otherwise(None)
                .alias("commission"),
                pl.when(kind == DEPOSIT).then(pl.col("markup")).otherwise(None).alias("markup"),
                pl.when(kind == DEPOSIT).then(pl.col("scheme")).otherwise(None).alias("scheme_fees"),
                pl.when(kind == DEPOSIT).then(pl.col("interchange")).otherwise(None).alias("interchange"),
                variant.alias("payment_method_variant"),
                pl.when(kind == REFUND)
                .then(pl.col("transaction_id"))
                .otherwise(None)
                .alias("modification_merchant_reference"),
            )
        )
        end = self.adyen_mid(b["day"].to_numpy() + 1) - 60 * US
        month = [MONTHS[_date(d).month - 1] for d in b["day"].to_list()]
        batch_rows = b.with_columns(pl.Series("booked", end), pl.Series("month", month))
        fee = batch_rows.select(
            "batch",
            "source_file",
            "merchant_account",
            "batch_number",
            "booked",
            "ccy",
            "day",
            pl.lit(1).alias("line"),
            pl.lit("Fee").alias("type"),
            (
                pl.lit("Transaction Fees ")
                + pl.col("day").cast(pl.Date).dt.strftime("%d ")
                + pl.col("month")
                + pl.col("day").cast(pl.Date).dt.strftime(" %Y")
            ).alias("modification_reference"),
            pl.col("batch_fee").alias("net_debit"),
        )
        payout = batch_rows.select(
            "batch",
            "source_file",
            "merchant_account",
            "batch_number",
            "booked",
            "ccy",
            "day",
            pl.lit(2).alias("line"),
            pl.lit("MerchantPayout").alias("type"),
            (
                pl.lit("TX")
                + pl.col("transfer").cast(pl.String)
                + pl.lit("XT batch ")
                + pl.col("batch_number").cast(pl.String)
                + pl.lit(", ")
                + pl.col("merchant_account")
            ).alias("modification_reference"),
            pl.col("payout").alias("net_debit"),
        )
        allrows = (
            pl.concat([player, fee, payout], how="diagonal_relaxed")
            .sort("batch", "line", maintain_order=True)
            .with_columns(
                pl.lit(COMPANY).alias("company"),
                ccy_name.alias("currency"),
                pl.col("booked").cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(ADYEN_TZ).alias("local"),
                (pl.int_range(1, pl.len() + 1).over("batch")).alias("source_row"),
            )
            .with_columns(
                pl.col("local").dt.strftime("%Y-%m-%d %H:%M:%S").alias("creation_date"),
                pl.col("local").dt.strftime("%Z").alias("timezone"),
            )
        )
        return allrows

    def stripe_files(self, rows: pl.DataFrame, batches: pl.DataFrame) -> pl.DataFrame:
        kind = pl.col("kind")
        day_ts = (pl.col("day") * DAY_US).cast(pl.Datetime("us", "UTC"))
        b = batches.filter(pl.col("psp") == STRIPE).with_columns(
            (
                pl.lit("stripe_payout_reconciliation_itemized_5_")
                + pl.col("day").cast(pl.Date).dt.strftime("%Y%m%d")
                + pl.lit(".csv")
            ).alias("source_file")
        )
        pm_code = (pl.col("mv") * 7) % 10
        brand = pl.when(pm_code < 6).then(pl.lit("visa")).when(pm_code < 9).then(pl.lit("mastercard"))
        player = (
            rows.filter(pl.col("psp") == STRIPE)
            .join(b.select("batch", "source_file", "po_id"), on="batch")
            .with_columns(
                pl.lit(0).alias("line"),
                pl.when(pl.col("occurrence") == 0)
                .then(pl.col("txn"))
                .otherwise(pl.col("txn") + pl.lit("d"))
                .alias("balance_transaction_id"),
                pl.col("occ").cast(pl.Datetime("us", "UTC")).alias("created"),
                _lookup(["charge", "payout", "refund", "dispute", "dispute_reversal"], kind).alias(
                    "reporting_category"
                ),
                pl.when(kind == DEPOSIT).then(pl.col("aux")).otherwise(pl.col("ref")).alias("source_id"),
                pl.when(kind == DEPOSIT)
                .then(pl.lit("Deposit ") + pl.col("merchant_ref"))
                .when(kind == REFUND)
                .then(pl.lit("REFUND FOR CHARGE (Deposit ") + pl.col("merchant_ref") + pl.lit(")"))
                .when(kind == CHARGEBACK)
                .then(pl.lit("Chargeback withdrawal for ") + pl.col("aux"))
                .otherwise(pl.lit("Chargeback reversal for ") + pl.col("aux"))
                .alias("description"),
                (pl.col("gross").sign() * pl.col("pres_amount")).alias("customer_facing_amount"),
                _lookup(CURRENCIES, pl.col("pres_ccy")).alias("customer_facing_currency"),
                pl.col("aux").alias("charge_id"),
                pl.col("pay_ref").alias("payment_intent_id"),
                pl.lit("card").alias("payment_method_type"),
                brand.otherwise(pl.lit("amex")).alias("card_brand"),
                pl.col("merchant_ref").alias("order_id"),
            )
        )
        txn_fee = "txn_3" + _rand_str(self.rng, b.height, 24, ALNUM).astype(object)
        txn_po = "txn_3" + _rand_str(self.rng, b.height, 24, ALNUM).astype(object)
        fee = b.select(
            "batch",
            "source_file",
            "po_id",
            "ccy",
            "day",
            pl.lit(1).alias("line"),
            pl.Series(txn_fee, dtype=pl.String).alias("balance_transaction_id"),
            day_ts.alias("created"),
            pl.lit("fee").alias("reporting_category"),
            (
                pl.lit("Radar (")
                + pl.col("day").cast(pl.Date).dt.strftime("%Y-%m-%d")
                + pl.lit("): Standard")
            ).alias("description"),
            (-pl.col("batch_fee")).alias("gross"),
            pl.lit(0, dtype=pl.Int64).alias("fee"),
        )
        payout = b.select(
            "batch",
            "source_file",
            "po_id",
            "ccy",
            "day",
            pl.lit(2).alias("line"),
            pl.Series(txn_po, dtype=pl.String).alias("balance_transaction_id"),
            day_ts.alias("created"),
            pl.lit("payout").alias("reporting_category"),
            pl.col("po_id").alias("source_id"),
            pl.lit("STRIPE PAYOUT").alias("description"),
            (-pl.col("payout")).alias("gross"),
            pl.lit(0, dtype=pl.Int64).alias("fee"),
        )
        return (
            pl.concat([player, fee, payout], how="diagonal_relaxed")
            .sort("day", "ccy", "line", "created", "mv", "occurrence", "part", maintain_order=True)
            .with_columns(
                _lookup(CURRENCIES, pl.col("ccy")).alias("currency"),
                pl.col("po_id").alias("automatic_payout_id"),
                day_ts.alias("payout_effective_at"),
                day_ts.alias("available_on"),
                pl.int_range(1, pl.len() + 1).over("source_file").alias("source_row"),
            )
        )

    def paypal_files(self, rows: pl.DataFrame, batches: pl.DataFrame) -> pl.DataFrame:
        kind = pl.col("kind")
        ccy_name = _lookup(CURRENCIES, pl.col("ccy"))
        b = batches.filter(pl.col("psp") == PAYPAL).with_columns(
            (
                pl.lit("STL-") + pl.col("day").cast(pl.Date).dt.strftime("%Y%m%d") + pl.lit(".01.009.CSV")
            ).alias("source_file")
        )
        fee_ids = _rand_str(self.rng, b.height, 17, UPPER_DIGITS)
        wd_ids = _rand_str(self.rng, b.height, 17, UPPER_DIGITS)
        end = self.paypal_mid(b["day"].to_numpy() + 1)
        player = (
            rows.filter(pl.col("psp") == PAYPAL)
            .join(b.select("batch", "source_file"), on="batch")
            .with_columns(
                pl.lit(0).alias("line"),
                pl.col("ref").alias("transaction_id_pp"),
                pl.col("merchant_ref").alias("invoice_id"),
                pl.when(kind.is_in([DEPOSIT, WITHDRAWAL]))
                .then(pl.lit(""))
                .otherwise(pl.col("pay_ref"))
                .alias("reference_id"),
                pl.when(kind.is_in([DEPOSIT, WITHDRAWAL]))
                .then(pl.lit(""))
                .otherwise(pl.lit("TXN"))
                .alias("reference_id_type"),
                _lookup(["T0006", "T0000", "T1107", "T1201", "T1202"], kind).alias("event_code"),
                pl.col("occ").alias("initiated"),
                pl.when(pl.col("gross") > 0).then(pl.lit("CR")).otherwise(pl.lit("DR")).alias("debit_credit"),
                pl.when(pl.col("fee") > 0).then(pl.lit("DR")).otherwise(None).alias("fee_debit_credit"),
                pl.when(pl.col("fee") > 0).then(pl.col("fee")).otherwise(None).alias("fee_minor"),
                (pl.lit("pl-") + pl.col("player_i").cast(pl.String).str.zfill(7)).alias("custom_field"),
                (pl.lit("PAYER") + pl.col("player_i").cast(pl.String).str.zfill(8)).alias("consumer_id"),
            )
        )
        fee = b.select(
            "batch",
            "source_file",
            "ccy",
            "day",
            pl.lit(1).alias("line"),
            pl.Series(fee_ids, dtype=pl.String).alias("transaction_id_pp"),
            pl.lit("T0100").alias("event_code"),
            pl.Series(end - 90 * US).alias("initiated"),
            pl.Series(end - 90 * US).alias("booked"),
            pl.lit("DR").alias("debit_credit"),
            pl.col("batch_fee").alias("amount"),
        )
        payout = b.select(
            "batch",
            "source_file",
            "ccy",
            "day",
            pl.lit(2).alias("line"),
            pl.Series(wd_ids, dtype=pl.String).alias("transaction_id_pp"),
            pl.lit("T0400").alias("event_code"),
            pl.Series(end - 60 * US).alias("initiated"),
            pl.Series(end - 60 * US).alias("booked"),
            pl.lit("DR").alias("debit_credit"),
            pl.col("payout").alias("amount"),
            pl.col("bank_ref").alias("bank_reference_id"),
        )

        def local(col: str) -> pl.Expr:
            ts = pl.col(col).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(PAYPAL_TZ)
            return ts.dt.strftime(writers.PAYPAL_TS)

        return (
            pl.concat([player, fee, payout], how="diagonal_relaxed")
            .sort("day", "line", "booked", "ccy", "mv", "occurrence", "part", maintain_order=True)
            .with_columns(
                ccy_name.alias("currency"),
                writers.paypal_units(pl.col("amount"), ccy_name).alias("gross_units"),
                writers.paypal_units(pl.col("fee_minor"), ccy_name).alias("fee_units"),
                local("initiated").alias("initiated_at"),
                local("booked").alias("completed_at"),
                pl.int_range(1, pl.len() + 1).over("source_file").alias("source_row"),
            )
        )

    def bank_statements(
        self, payouts: pl.DataFrame
    ) -> tuple[list[tuple[str, writers.CamtStatement]], pl.DataFrame]:
        """One camt.053 statement per bank account and demo date; the truth rows of their entries."""
        by_key: dict[tuple[int, int], list[dict[str, object]]] = {}
        for row in payouts.sort("day", "ccy", "psp").iter_rows(named=True):
            by_key.setdefault((row["day"], row["ccy"]), []).append(row)
        malta = ZoneInfo(self.cfg.business_tz)
        statements: list[tuple[str, writers.CamtStatement]] = []
        truth: list[dict[str, object]] = []
        balance = {c: int(BANK_OPENING[c]) for c in range(5)}
        for n_day, day in enumerate(range(self.first, self.last + 1)):
            date = _date(day)
            stamp = date.strftime("%Y%m%d")
            created = dt.datetime.combine(date, dt.time(18, 0), tzinfo=malta).isoformat()
            for c, (country, bban, version) in BANK_ACCOUNTS.items():
                iban = _iban(country, bban)
                code = CURRENCIES[c]
                entries: list[writers.CamtEntry] = []
                for row in by_key.get((day, c), []):
                    psp = int(str(row["psp"]))
                    ref = str(row["payout_ref"])
                    e2e = str(row["end_to_end"])
                    entries.append(
                        writers.CamtEntry(
                            amount_minor=int(str(row["payout"])),
                            credit=True,
                            booking_date=date,
                            account_servicer_ref=f"{bban[:4]}{stamp}{code}{len(entries) + 1:04d}",
                            domain=("PMNT", "RCDT", "ESCT" if c == EUR else "XBCT"),
                            end_to_end_id=e2e,
                            debtor_name=DEBTOR_NAMES[psp],
                            remittance=ref,
                        )
                    )
                    truth.append(
                        {
                            "source_file": None,
                            "source_row": len(entries),
                            "kind": "payout",
                            "batch": row["batch"],
                            "day": day,
                            "ccy": c,
                        }
                    )
                entries.append(
                    writers.CamtEntry(
                        amount_minor=int(BANK_FEE[c]),
                        credit=False,
                        booking_date=date,
                        account_servicer_ref=f"{bban[:4]}{stamp}{code}{len(entries) + 1:04d}",
                        domain=("ACMT", "MDOP", "CHRG"),
                        additional_info="Account maintenance fee",
                    )
                )
                truth.append(
                    {
                        "source_file": None,
                        "source_row": len(entries),
                        "kind": "fee",
                        "batch": None,
                        "day": day,
                        "ccy": c,
                    }
                )
                name = f"camt053_{iban}_{stamp}.xml"
                for t in truth[len(truth) - len(entries) :]:
                    t["source_file"] = name
                stmt = writers.CamtStatement(
                    version=version,
                    message_id=f"MSG-{stamp}-{code}-{n_day + 1:04d}",
                    statement_id=f"STMT-{stamp}-{code}",
                    created_at=created,
                    sequence_number=100 + n_day,
                    iban=iban,
                    currency=code,
                    date=date,
                    opening_minor=balance[c],
                    entries=tuple(entries),
                )
                balance[c] = stmt.closing_minor
                statements.append((name, stmt))
        frame = pl.DataFrame(
            truth,
            schema={
                "source_file": pl.String,
                "source_row": pl.Int64,
                "kind": pl.String,
                "batch": pl.UInt32,
                "day": pl.Int64,
                "ccy": pl.Int64,
            },
        )
        return statements, frame


# --------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------


def _movement_scenario(lag_days: int, last: int) -> pl.Expr:
    mess_names = _lookup(SCENARIOS, pl.col("mess"))
    unsettled = (
        pl.when(pl.lit(last) - pl.col("bd") <= lag_days)
        .then(pl.lit("pending"))
        .otherwise(pl.lit("missing_in_psp"))
    )
    return (
        pl.when(pl.col("mess") > 0)
        .then(mess_names)
        .when(~pl.col("settled"))
        .then(unsettled)
        .when(pl.col("ref_null"))
        .then(pl.lit("no_psp_reference"))
        .when(pl.col("lag") >= 2)
        .then(pl.lit("late_settlement"))
        .otherwise(pl.lit("exact"))
    )


_PAIRED_EXCEPTIONS = {
    S_AMOUNT: "amount_mismatch",
    S_CCY: "currency_mismatch",
    S_UNLINKED: "unlinked_adjustment",
}


def _truth(
    sc: _Scenario, mv: pl.DataFrame, ledger: pl.DataFrame, settlement: pl.DataFrame, bank: pl.DataFrame
) -> pl.DataFrame:
    """The outcome export as of the last demo date, plus the scenario column."""
    lag_days, last = sc.cfg.settlement_lag_days, sc.last
    paired = pl.col("mess").is_in(list(_PAIRED_EXCEPTIONS))
    cat_of_mess = [_PAIRED_EXCEPTIONS.get(i) for i in range(len(SCENARIOS))]
    rule_of_mess = [RULE_OF_SCENARIO.get(i, "exact_ref") for i in range(len(SCENARIOS))]
    rule = (
        pl.when(pl.col("ref_null"))
        .then(pl.lit("merchant_ref"))
        .otherwise(_lookup(rule_of_mess, pl.col("mess")))
    )
    n_mv = mv.height
    # ledger records
    led = ledger.with_columns(_movement_scenario(lag_days, last).alias("scenario")).with_columns(
        pl.when(pl.col("dup_extra"))
        .then(pl.lit("exception"))
        .when(pl.col("settled") & paired)
        .then(pl.lit("exception"))
        .when(pl.col("settled"))
        .then(pl.lit("matched"))
        .when(pl.lit(last) - pl.col("bd") <= lag_days)
        .then(pl.lit("pending"))
        .otherwise(pl.lit("exception"))
        .alias("status"),
        pl.when(pl.col("dup_extra"))
        .then(pl.lit("duplicate_booking"))
        .when(pl.col("settled") & paired)
        .then(_lookup(cat_of_mess, pl.col("mess")))
        .when(pl.col("settled"))
        .then(None)
        .when(pl.lit(last) - pl.col("bd") <= lag_days)
        .then(None)
        .otherwise(pl.lit("missing_in_psp"))
        .alias("exception_category"),
        pl.when(pl.col("settled") & ~pl.col("dup_extra")).then(pl.col("mv")).otherwise(None).alias("group"),
        pl.when(pl.col("settled") & ~pl.col("dup_extra")).then(rule).otherwise(None).alias("rule_id"),
        pl.lit("ledger").alias("record"),
        pl.lit(None, dtype=pl.String).alias("source_file"),
        pl.lit(None, dtype=pl.Int64).alias("source_row"),
        _lookup(PSPS, pl.col("psp_i")).alias("psp"),
        pl.col("bd").cast(pl.Date).alias("business_date"),
    )
    # PSP file rows
    player = pl.col("line") == 0
    dup = pl.col("occurrence") > 0
    no_ledger = ~pl.col("in_ledger")
    set_rows = (
        settlement.join(
            mv.select("mv", "mess", "ref_null", "bd", "lag", "settled", "in_ledger").rename({"mv": "mv_"}),
            left_on="mv",
            right_on="mv_",
            how="left",
            suffix="_mv",
        )
        .with_columns(
            pl.col("in_ledger").fill_null(True),
            pl.col("ref_null").fill_null(False),
            pl.col("mess").fill_null(0),
        )
        .with_columns(
            pl.when(~player)
            .then(pl.lit("matched"))
            .when(no_ledger | dup | paired)
            .then(pl.lit("exception"))
            .otherwise(pl.lit("matched"))
            .alias("status"),
            pl.when(~player)
            .then(None)
            .when(no_ledger)
            .then(pl.lit("missing_in_ledger"))
            .when(dup)
            .then(pl.lit("duplicate_settlement"))
            .when(paired)
            .then(_lookup(cat_of_mess, pl.col("mess")))
            .otherwise(None)
            .alias("exception_category"),
            pl.when(pl.col("line") == 1)
            .then(pl.int_range(pl.len()) + 2 * n_mv)
            .when(pl.col("line") == 2)
            .then(pl.col("batch").cast(pl.Int64) + n_mv)
            .when(no_ledger | dup)
            .then(None)
            .otherwise(pl.col("mv"))
            .alias("group"),
            pl.when(pl.col("line") == 1)
            .then(pl.lit("fee_row"))
            .when(pl.col("line") == 2)
            .then(pl.lit("payout_bank"))
            .when(no_ledger | dup)
            .then(None)
            .otherwise(rule)
            .alias("rule_id"),
            pl.when(pl.col("line") == 1)
            .then(pl.lit("fee_row"))
            .when(pl.col("line") == 2)
            .then(pl.lit("merchant_payout"))
            .otherwise(_movement_scenario(lag_days, last))
            .alias("scenario"),
            pl.when(player & pl.col("in_ledger"))
            .then(pl.col("transaction_id"))
            .otherwise(None)
            .alias("transaction_id"),
            pl.lit("settlement").alias("record"),
            pl.col("day").cast(pl.Date).alias("business_date"),
        )
    )
    offset = 2 * n_mv + settlement.height
    bank_rows = bank.with_columns(
        pl.lit("settlement").alias("record"),
        pl.lit(None, dtype=pl.String).alias("transaction_id"),
        pl.lit("bank").alias("psp"),
        pl.lit("matched").alias("status"),
        pl.lit(None, dtype=pl.String).alias("exception_category"),
        pl.when(pl.col("kind") == "payout")
        .then(pl.col("batch").cast(pl.Int64) + n_mv)
        .otherwise(pl.int_range(pl.len()) + offset)
        .alias("group"),
        pl.when(pl.col("kind") == "payout")
        .then(pl.lit("payout_bank"))
        .otherwise(pl.lit("bank_charge"))
        .alias("rule_id"),
        pl.when(pl.col("kind") == "payout")
        .then(pl.lit("bank_payout_credit"))
        .otherwise(pl.lit("bank_fee"))
        .alias("scenario"),
        pl.col("day").cast(pl.Date).alias("business_date"),
    )
    cols = [
        "record",
        "transaction_id",
        "psp",
        "source_file",
        "source_row",
        "status",
        "group",
        "rule_id",
        "exception_category",
        "business_date",
        "scenario",
    ]
    truth = pl.concat(
        [
            led.select(cols),
            set_rows.with_columns(pl.col("source_row").cast(pl.Int64)).select(cols),
            bank_rows.with_columns(pl.col("source_row").cast(pl.Int64)).select(cols),
        ],
        how="vertical_relaxed",
    )
    return truth.with_columns(
        (pl.lit("m-") + pl.col("group").rank("dense").cast(pl.String)).alias("match_id")
    ).drop("group")


# --------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------


def generate(out_dir: Path, config: DemoConfig = DemoConfig()) -> DemoManifest:
    """Write the demo data set under ``out_dir`` and return where everything is (deterministic per config)."""
    out_dir = Path(out_dir)
    sc = _Scenario(config)
    sc.build_movements()
    sc.settle_and_mess()
    sc.top_up()
    sc.assign_ids()
    sc.booking_times()
    mv = sc.movement_frame()
    ledger = sc.ledger_frame(mv)
    stream, invalid, n_redeliver = sc.events(ledger)
    events_file = writers.write_events(out_dir / "events.jsonl", stream, invalid)

    rows, batches = sc.settlement_rows(mv)
    files: dict[str, list[Path]] = {"adyen": [], "stripe": [], "paypal": [], "bank": []}

    adyen = sc.adyen_files(rows, batches)
    for (name,), part in adyen.partition_by("source_file", as_dict=True, maintain_order=True).items():
        files["adyen"].append(writers.write_adyen_sdr(out_dir / "settlements" / "adyen" / str(name), part))
    stripe = sc.stripe_files(rows, batches)
    for (name,), part in stripe.partition_by("source_file", as_dict=True, maintain_order=True).items():
        files["stripe"].append(
            writers.write_stripe_itemized(out_dir / "settlements" / "stripe" / str(name), part)
        )
    paypal = sc.paypal_files(rows, batches)
    for (name,), part in paypal.partition_by("source_file", as_dict=True, maintain_order=True).items():
        day = _date(int(part["day"][0]))
        zone = ZoneInfo(PAYPAL_TZ)
        start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        end = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=zone)
        generated = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2, 10), tzinfo=zone)
        fmt = "%Y/%m/%d %H:%M:%S %z"
        present = set(part["currency"].to_list())
        header = writers.StlHeader(
            account_id=PAYPAL_ACCOUNT,
            generated_at=generated.strftime(fmt),
            period_start=start.strftime(fmt),
            period_end=end.strftime(fmt),
            beginning_balance={CURRENCIES[c]: int(PAYPAL_RESERVE[c]) for c in range(5)},
        )
        sb = part.select(
            pl.col("transaction_id_pp").alias("transaction_id"),
            "invoice_id",
            "reference_id",
            "reference_id_type",
            "event_code",
            "initiated_at",
            "completed_at",
            "debit_credit",
            pl.col("gross_units").alias("gross"),
            "currency",
            "fee_debit_credit",
            pl.col("fee_units").alias("fee"),
            "custom_field",
            "consumer_id",
            "bank_reference_id",
        )
        ccys = [c for c in CURRENCIES if c in present]
        files["paypal"].append(
            writers.write_paypal_stl(out_dir / "settlements" / "paypal" / str(name), header, sb, ccys)
        )

    payouts = pl.concat(
        [
            adyen.filter(pl.col("line") == 2).select(
                "batch",
                "ccy",
                "day",
                pl.lit(ADYEN).alias("psp"),
                pl.col("net_debit").alias("payout"),
                pl.col("modification_reference").alias("payout_ref"),
                pl.col("modification_reference").str.extract(r"^(TX\d+XT)").alias("end_to_end"),
            ),
            stripe.filter(pl.col("line") == 2).select(
                "batch",
                "ccy",
                "day",
                pl.lit(STRIPE).alias("psp"),
                (-pl.col("gross")).alias("payout"),
                (pl.lit("STRIPE ") + pl.col("po_id")).alias("payout_ref"),
                pl.col("po_id").alias("end_to_end"),
            ),
            paypal.filter(pl.col("line") == 2).select(
                "batch",
                "ccy",
                "day",
                pl.lit(PAYPAL).alias("psp"),
                pl.col("amount").alias("payout"),
                pl.col("bank_reference_id").alias("payout_ref"),
                pl.col("bank_reference_id").alias("end_to_end"),
            ),
        ],
        how="vertical_relaxed",
    )
    statements, bank = sc.bank_statements(payouts)
    for name, stmt in statements:
        files["bank"].append(writers.write_camt053(out_dir / "bank" / name, stmt))

    settlement = pl.concat(
        [
            frame.select(
                pl.lit(psp).alias("psp"),
                "source_file",
                pl.col("source_row").cast(pl.Int64),
                "line",
                "mv",
                "occurrence",
                "batch",
                "day",
                "transaction_id",
            )
            for psp, frame in (("adyen", adyen), ("stripe", stripe), ("paypal", paypal))
        ],
        how="vertical_relaxed",
    ).sort("psp", "source_file", "source_row")
    truth = _truth(sc, mv, ledger, settlement, bank)
    truth_file = writers.write_ground_truth(out_dir / "ground_truth.csv", truth)

    counts: dict[str, int] = {
        "ledger_records": ledger.height,
        "event_lines": stream.height + len(invalid),
        "event_redeliveries": n_redeliver,
        "invalid_events": len(invalid),
        "settlement_rows": settlement.height,
        "bank_entries": bank.height,
        **{f"files_{psp}": len(paths) for psp, paths in files.items()},
    }
    for name, n in truth.group_by("scenario").len().sort("scenario").iter_rows():
        counts[f"scenario_{name}"] = int(n)
    counts["scenario_event_redelivery"] = n_redeliver
    return DemoManifest(
        root=out_dir,
        events_file=events_file,
        settlement_files={k: sorted(v) for k, v in files.items()},
        ground_truth_file=truth_file,
        counts=counts,
    )
