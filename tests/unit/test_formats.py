"""Settlement-file parsers: the formats' own examples, edge cases, round trips and a bad-input corpus."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections import defaultdict
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats import adyen, camt053, paypal, registry, stripe
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import to_major_str
from tests.examples import ADYEN_EXAMPLE, CAMT_V02, CAMT_V08_EXAMPLE, PAYPAL_EXAMPLE, STRIPE_EXAMPLE

UTC = dt.UTC


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def raises(parse: Any, data: str | bytes, name: str = "file.csv") -> FormatError:
    with pytest.raises(FormatError) as info:
        parse(data.encode() if isinstance(data, str) else data, name)
    return info.value


# --------------------------------------------------------------------------------------------------------
# Adyen
# --------------------------------------------------------------------------------------------------------

ADYEN_HEADER = next(csv.reader(io.StringIO(ADYEN_EXAMPLE)))


def adyen_csv(records: list[dict[str, str]], header: list[str] | None = None) -> str:
    header = header or ADYEN_HEADER
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow([record.get(h, "") for h in header])
    return out.getvalue()


def adyen_row(**fields: str) -> dict[str, str]:
    base = {
        "Company Account": "ExampleCo",
        "Merchant Account": "CasinoEUR",
        "Creation Date": "2026-03-02 10:15:00",
        "TimeZone": "CET",
        "Type": "Settled",
        "Psp Reference": "PSP1",
        "Merchant Reference": "dep-1",
        "Modification Reference": "MOD1",
        "Gross Currency": "EUR",
        "Net Currency": "EUR",
        "Exchange Rate": "1",
        "Batch Number": "7",
    }
    base.update({k.replace("_", " "): v for k, v in fields.items()})
    return base


def test_adyen_example() -> None:
    frame = adyen.parse(
        ADYEN_EXAMPLE.encode(), "/landing/settlements/adyen/settlement_detail_report_batch_812.csv"
    )
    assert frame.schema == pl.Schema(frames.SETTLEMENT_LINE_SCHEMA)
    got = rows(frame)
    assert [r["source_row"] for r in got] == [1, 2, 3, 4, 5]
    assert {r["source_file"] for r in got} == {"settlement_detail_report_batch_812.csv"}
    assert {r["file_sha256"] for r in got} == {sha(ADYEN_EXAMPLE)}
    assert {r["batch_id"] for r in got} == {"ExampleCasinoEUR:812"}
    assert {r["account_id"] for r in got} == {"ExampleCasinoEUR"}
    assert [r["line_kind"] for r in got] == ["capture", "refund", "chargeback", "fee", "merchant_payout"]
    assert [r["record_type"] for r in got] == ["Settled", "Refunded", "Chargeback", "Fee", "MerchantPayout"]
    assert [r["moves_player_money"] for r in got] == [True, True, True, False, False]
    assert [r["amount_minor"] for r in got] == [10000, -2000, -5000, -310, -1000]
    assert [r["fee_minor"] for r in got] == [190, 0, 1500, 0, 0]
    assert [r["net_amount_minor"] for r in got] == [9810, -2000, -6500, -310, -1000]
    assert {r["currency"] for r in got} == {r["net_currency"] for r in got} == {"EUR"}
    assert [r["exchange_rate"] for r in got] == ["1", "1", "1", None, None]
    assert [r["movement_reference"] for r in got] == [
        "Q1W2E3R4T5Y6U7I8",
        "P0O9I8U7Y6T5R4E3",
        "M1N2B3V4C5X6Z7L8",
        None,
        None,
    ]
    assert [r["payment_reference"] for r in got] == [
        "Q1W2E3R4T5Y6U7I8",
        "Z9X8C7V6B5N4M3L2",
        "K1J2H3G4F5D6S7A8",
        None,
        None,
    ]
    assert [r["merchant_reference"] for r in got] == ["dep-000101", "wd-000077", "dep-000090", None, None]
    assert [r["payout_reference"] for r in got] == [None, None, None, None, "TX0000000001XT"]
    assert got[0]["booked_at"] == dt.datetime(2026, 3, 2, 9, 15, tzinfo=UTC)  # 10:15 CET
    assert got[0]["booking_date"] == dt.date(2026, 3, 2)


def test_adyen_reordered_and_extra_columns_quoted_empties_and_leading_dot() -> None:
    header = [*reversed(ADYEN_HEADER), "Booking Date", "Metadata", "ARN"]
    records = [
        adyen_row(
            **{
                "Gross Credit (GC)": ".11",
                "Net Credit (NC)": ".10",
                "Interchange (NC)": ".01",
                "Merchant Reference": "33992337.0",
                "ARN": "1.2302025304E+022",
                "Metadata": '{"a": "b, c"}',
                "TimeZone": "CEST",
                "Creation Date": "2026-07-01 00:30:00",
            }
        ),
        adyen_row(
            **{
                "Type": "MerchantPayout",
                "Psp Reference": "",
                "Merchant Reference": "",
                "Modification Reference": "manual payout",
                "Net Debit (NC)": "0.10",
                "Gross Currency": "",
            }
        ),
    ]
    text = adyen_csv(records, header).replace(",,", ',"",')  # quoted empties, as some fixtures have
    got = rows(adyen.parse(text.encode(), "r.csv"))
    assert got[0]["amount_minor"] == 11 and got[0]["net_amount_minor"] == 10 and got[0]["fee_minor"] == 1
    assert got[0]["merchant_reference"] == "33992337.0"
    assert got[0]["booked_at"] == dt.datetime(2026, 6, 30, 22, 30, tzinfo=UTC)
    assert got[0]["booking_date"] == dt.date(2026, 7, 1)  # as written, in the file's zone
    assert got[1]["payout_reference"] == "manual payout"  # no " batch": the whole text
    assert got[1]["amount_minor"] == -10 and got[1]["currency"] == "EUR"


def test_adyen_direction_from_populated_column_and_unknown_type() -> None:
    records = [
        adyen_row(**{"Gross Debit (GC)": "5.00", "Net Debit (NC)": "5.10", "Commission (NC)": "0.10"}),
        adyen_row(**{"Type": "SettledBulk", "Gross Credit (GC)": "1.00", "Net Credit (NC)": "1.00"}),
        adyen_row(
            **{"Type": "PaidOut", "Psp Reference": "P2", "Gross Debit (GC)": "3.00", "Net Debit (NC)": "3.00"}
        ),
    ]
    got = rows(adyen.parse(adyen_csv(records).encode(), "d.csv"))
    assert got[0]["amount_minor"] == -500 and got[0]["net_amount_minor"] == -510 and got[0]["fee_minor"] == 10
    assert got[1]["line_kind"] == "other" and got[1]["record_type"] == "SettledBulk"
    assert got[2]["line_kind"] == "payout_to_player" and got[2]["movement_reference"] == "P2"


def test_adyen_jpy_and_kwd_and_fx() -> None:
    records = [
        adyen_row(
            **{
                "Gross Currency": "JPY",
                "Gross Credit (GC)": "1500",
                "Exchange Rate": "0.0061",
                "Net Currency": "EUR",
                "Net Credit (NC)": "9.00",
                "Markup (NC)": "0.15",
            }
        ),
        adyen_row(
            **{
                "Gross Currency": "KWD",
                "Gross Credit (GC)": "1.234",
                "Net Currency": "KWD",
                "Net Credit (NC)": "1.230",
                "Scheme Fees (NC)": "0.004",
            }
        ),
    ]
    got = rows(adyen.parse(adyen_csv(records).encode(), "fx.csv"))
    assert (got[0]["amount_minor"], got[0]["currency"]) == (1500, "JPY")
    assert (got[0]["net_amount_minor"], got[0]["net_currency"], got[0]["fee_minor"]) == (900, "EUR", 15)
    assert got[0]["exchange_rate"] == "0.0061"
    assert (got[1]["amount_minor"], got[1]["net_amount_minor"], got[1]["fee_minor"]) == (1234, 1230, 4)


def test_adyen_large_file_is_vectorised_and_exact() -> None:
    n = 20_000
    body = "".join(
        f"Co,M,P{i},dep-{i},visa,2026-03-02 10:15:00,CET,Settled,X{i},EUR,,{i // 100}.{i % 100:02d},1,EUR,,"
        f"{i // 100}.{i % 100:02d},,,,,v,,9,,,,,,,\n"
        for i in range(n)
    )
    frame = adyen.parse((ADYEN_EXAMPLE.splitlines()[0] + "\n" + body).encode(), "big.csv")
    assert frame.height == n
    assert frame["amount_minor"].to_list() == list(range(n))
    assert frame["source_row"].to_list() == list(range(1, n + 1))


def test_adyen_a_row_with_both_sides_filled_nets_them() -> None:
    """Debit and credit are parsed as one column when every row fills one side; a row that fills both
    (credit minus debit) makes the parser read them side by side, and a bad value still names its column."""
    both = adyen_row(**{"Gross Credit (GC)": "5.00", "Gross Debit (GC)": "1.25", "Net Credit (NC)": "3.70"})
    one = adyen_row(**{"Psp Reference": "P2", "Gross Debit (GC)": "2.00", "Net Debit (NC)": "2.10"})
    got = rows(adyen.parse(adyen_csv([both, one]).encode(), "b.csv"))
    assert [r["amount_minor"] for r in got] == [375, -200]
    assert [r["net_amount_minor"] for r in got] == [370, -210]
    bad = adyen_row(**{"Psp Reference": "P3", "Gross Debit (GC)": "2.001", "Net Debit (NC)": "2.10"})
    for records, row in (([one, bad], 2), ([both, bad], 2)):
        with pytest.raises(FormatError) as caught:
            adyen.parse(adyen_csv(records).encode(), "b.csv")
        assert (caught.value.problem.row, caught.value.problem.field) == (row, "Gross Debit (GC)")
        assert caught.value.problem.value == "2.001"


def test_adyen_rows_that_vary_give_what_each_row_gives_alone() -> None:
    """Merchant account, batch, time zone and currency are computed once when every row has the same
    value; a file where they vary row by row must give, row for row, what each row gives on its own."""
    mixed = [
        adyen_row(Merchant_Account=m, Batch_Number=b, TimeZone=tz, Gross_Currency=c, Net_Currency=c,
                  Type=t, Psp_Reference=f"P{i}", **{"Gross Credit (GC)": "1.50", "Net Credit (NC)": "1.40"})
        for i, (m, b, tz, c, t) in enumerate(
            [
                ("CasinoEUR", "7", "CET", "eur", "Settled"),
                ("CasinoGBP", "7", "BST", "GBP", "PaidOut"),
                ("CasinoEUR", "8", "PST", "Eur", "Refunded"),
                ("CasinoEUR", "7", "CET", "EUR", "Fee"),
            ]
        )
    ]  # fmt: skip
    columns = ["batch_id", "account_id", "booked_at", "booking_date", "currency", "net_currency",
               "amount_minor", "line_kind", "movement_reference", "moves_player_money"]  # fmt: skip
    together = adyen.parse(adyen_csv(mixed).encode(), "mixed.csv").select(columns)
    alone = pl.concat([adyen.parse(adyen_csv([r]).encode(), f"r{i}.csv") for i, r in enumerate(mixed)])
    assert together.equals(alone.select(columns))
    assert together["batch_id"].to_list() == ["CasinoEUR:7", "CasinoGBP:7", "CasinoEUR:8", "CasinoEUR:7"]
    assert together["currency"].to_list() == ["EUR", "GBP", "EUR", "EUR"]
    assert [t.hour for t in together["booked_at"]] == [9, 9, 18, 9]  # 10:15 CET, BST, PST


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Settled", "Refunded", "Chargeback"]),
            st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
            st.integers(0, 10**9),
            st.integers(0, 10**4),
            st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=16),
            st.text('abcdefghijklmnopqrstuvwxyz0123456789-.," ', min_size=0, max_size=20),
        ),
        min_size=1,
        max_size=15,
    ),
    st.booleans(),
)
def test_adyen_round_trip(items: list[tuple[str, str, int, int, str, str]], with_payout: bool) -> None:
    records, expected = [], []
    totals: dict[str, int] = defaultdict(int)
    for typ, ccy, gross, fee, ref, merchant_ref in items:
        credit = typ == "Settled"
        net = gross - fee if credit else gross + fee
        gross_text, net_text, fee_text = (to_major_str(v, ccy) for v in (gross, abs(net), fee))
        if gross_text.startswith("0.") and len(gross_text) > 2:
            gross_text = gross_text[1:]  # Adyen's leading-dot values
        side = "Credit" if credit else "Debit"
        net_side = "Credit" if net >= 0 and credit else "Debit"
        signed_net = net if credit else -net
        records.append(
            adyen_row(
                **{
                    "Type": typ,
                    "Gross Currency": ccy,
                    "Net Currency": ccy,
                    f"Gross {side} (GC)": gross_text,
                    f"Net {net_side} (NC)": net_text,
                    "Commission (NC)": fee_text,
                    "Psp Reference": ref,
                    "Modification Reference": "M" + ref,
                    "Merchant Reference": merchant_ref.strip(),
                }
            )
        )
        expected.append(
            (
                gross if credit else -gross,
                ccy,
                fee,
                signed_net,
                ref if credit else "M" + ref,
                merchant_ref.strip() or None,
            )
        )
        totals[ccy] += signed_net
    if with_payout:
        for ccy, total in sorted(totals.items()):
            side = "Debit" if total >= 0 else "Credit"
            records.append(
                adyen_row(
                    **{
                        "Type": "MerchantPayout",
                        "Psp Reference": "",
                        "Merchant Reference": "",
                        "Gross Currency": "",
                        "Net Currency": ccy,
                        "Modification Reference": f"TX{ccy}XT batch 7, CasinoEUR",
                        f"Net {side} (NC)": to_major_str(abs(total), ccy),
                    }
                )
            )
    frame = adyen.parse(adyen_csv(records).encode(), "rt.csv")
    got = [
        (
            r["amount_minor"],
            r["currency"],
            r["fee_minor"],
            r["net_amount_minor"],
            r["movement_reference"],
            r["merchant_reference"],
        )
        for r in rows(frame)[: len(items)]
    ]
    assert got == expected
    assert frame["source_row"].to_list() == list(range(1, len(records) + 1))
    if with_payout:
        payouts = frame.filter(pl.col("line_kind") == "merchant_payout")
        assert sorted(payouts["payout_reference"].to_list()) == sorted(f"TX{c}XT" for c in totals)


# --------------------------------------------------------------------------------------------------------
# Stripe
# --------------------------------------------------------------------------------------------------------

STRIPE_HEADER = next(csv.reader(io.StringIO(STRIPE_EXAMPLE)))


def stripe_csv(records: list[dict[str, str]], header: list[str] | None = None) -> str:
    header = header or STRIPE_HEADER
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow([record.get(h, "") for h in header])
    return out.getvalue()


def test_stripe_example() -> None:
    frame = stripe.parse(STRIPE_EXAMPLE.encode(), "payout_reconciliation.csv")
    assert frame.schema == pl.Schema(frames.SETTLEMENT_LINE_SCHEMA)
    got = rows(frame)
    assert [r["source_row"] for r in got] == [1, 2, 3, 4, 5]
    assert {r["batch_id"] for r in got} == {"po_1TestPayout0001"}
    assert {r["psp"] for r in got} == {"stripe"} and {r["file_sha256"] for r in got} == {sha(STRIPE_EXAMPLE)}
    assert [r["line_kind"] for r in got] == ["capture", "capture", "refund", "chargeback", "merchant_payout"]
    assert [r["amount_minor"] for r in got] == [10000, 2500, -2000, -5000, -3766]
    assert [r["fee_minor"] for r in got] == [165, 69, 0, 1500, 0]
    assert [r["net_amount_minor"] for r in got] == [9835, 2431, -2000, -6500, -3766]
    assert {r["currency"] for r in got} == {"EUR"}
    assert [r["movement_reference"] for r in got] == [
        "pi_1A",
        "pi_1B",
        "re_1C",
        "du_1D",
        "po_1TestPayout0001",
    ]
    assert [r["payment_reference"] for r in got] == ["pi_1A", "pi_1B", "pi_1C", "pi_1D", None]
    assert [r["merchant_reference"] for r in got] == [
        "dep-000101",
        "dep-000102",
        "dep-000090",
        "dep-000070",
        None,
    ]
    assert [r["payout_reference"] for r in got] == [None, None, None, None, "po_1TestPayout0001"]
    assert got[0]["booked_at"] == dt.datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
    assert got[0]["booking_date"] == dt.date(2026, 3, 4)  # available_on_utc


def test_stripe_jpy_kwd_and_fallbacks() -> None:
    header = [
        "automatic_payout_id",
        "balance_transaction_id",
        "created_utc",
        "currency",
        "gross",
        "fee",
        "net",
        "reporting_category",
        "source_id",
        "charge_id",
    ]
    records = [
        {
            "automatic_payout_id": "po_J",
            "balance_transaction_id": "t1",
            "created_utc": "2026-03-02 23:59:59",
            "currency": "jpy",
            "gross": "2700",
            "fee": "100",
            "net": "2600",
            "reporting_category": "charge",
            "source_id": "ch_J",
            "charge_id": "ch_J",
        },
        {
            "automatic_payout_id": "po_K",
            "balance_transaction_id": "t2",
            "created_utc": "2026-03-02 10:00:00",
            "currency": "kwd",
            "gross": "1.234",
            "fee": "0.004",
            "net": "1.230",
            "reporting_category": "network_cost",
            "source_id": "x",
        },
    ]
    got = rows(stripe.parse(stripe_csv(records, header).encode(), "s.csv"))
    assert (got[0]["amount_minor"], got[0]["currency"], got[0]["fee_minor"]) == (2700, "JPY", 100)
    assert got[0]["movement_reference"] == "ch_J"  # no payment_intent_id column: charge_id
    assert got[0]["booking_date"] == dt.date(2026, 3, 2)  # no available_on_utc: created_utc
    assert (got[1]["amount_minor"], got[1]["net_amount_minor"], got[1]["line_kind"]) == (1234, 1230, "fee")
    assert got[0]["merchant_reference"] is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["eur", "jpy", "kwd", "usd"]),
    st.lists(
        st.tuples(
            st.sampled_from(["charge", "refund", "dispute", "refund_failure", "fee", "other_adjustment"]),
            st.integers(-(10**9), 10**9),
            st.integers(0, 10**5),
            st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=20),
            st.text('abcdefghijklmnopqrstuvwxyz0123456789-,"', min_size=1, max_size=20),
        ),
        min_size=1,
        max_size=15,
    ),
)
def test_stripe_round_trip(ccy: str, items: list[tuple[str, int, int, str, str]]) -> None:
    records, expected = [], []
    total = 0
    for i, (category, gross, fee, ref, order) in enumerate(items):
        net = gross - fee
        total += net
        records.append(
            {
                "automatic_payout_id": "po_X",
                "balance_transaction_id": f"txn_{i}",
                "created_utc": "2026-03-02 10:00:00",
                "available_on_utc": "2026-03-04 00:00:00",
                "currency": ccy,
                "gross": to_major_str(gross, ccy),
                "fee": to_major_str(fee, ccy),
                "net": to_major_str(net, ccy),
                "reporting_category": category,
                "source_id": "src_" + ref,
                "payment_intent_id": "pi_" + ref,
                "payment_metadata[order_id]": order,
            }
        )
        movement = "pi_" + ref if category == "charge" else "src_" + ref
        expected.append((gross, ccy.upper(), fee, net, movement, "pi_" + ref, order))
    records.append(
        {
            "automatic_payout_id": "po_X",
            "balance_transaction_id": "txn_po",
            "created_utc": "2026-03-05 00:00:00",
            "currency": ccy,
            "gross": to_major_str(-total, ccy),
            "fee": "0",
            "net": to_major_str(-total, ccy),
            "reporting_category": "payout",
            "source_id": "po_X",
        }
    )
    frame = stripe.parse(stripe_csv(records).encode(), "rt.csv")
    got = [
        (
            r["amount_minor"],
            r["currency"],
            r["fee_minor"],
            r["net_amount_minor"],
            r["movement_reference"],
            r["payment_reference"],
            r["merchant_reference"],
        )
        for r in rows(frame)[:-1]
    ]
    assert got == expected
    assert frame["payout_reference"][-1] == "po_X" and frame["amount_minor"][-1] == -total


# --------------------------------------------------------------------------------------------------------
# PayPal
# --------------------------------------------------------------------------------------------------------


def test_paypal_example() -> None:
    frame = paypal.parse(PAYPAL_EXAMPLE.encode(), "/sftp/STL-20260302.01.009.CSV")
    assert frame.schema == pl.Schema(frames.SETTLEMENT_LINE_SCHEMA)
    got = rows(frame)
    assert [r["source_row"] for r in got] == [1, 2, 3]
    assert {r["source_file"] for r in got} == {"STL-20260302.01.009.CSV"}
    assert {r["batch_id"] for r in got} == {"EXAMPLEACCT01:2026-03-02"}
    assert {r["account_id"] for r in got} == {"EXAMPLEACCT01"}
    assert [r["record_type"] for r in got] == ["T0006", "T1107", "T0400"]
    assert [r["line_kind"] for r in got] == ["capture", "refund", "merchant_payout"]
    assert [r["amount_minor"] for r in got] == [10000, -2000, -5000]
    assert [r["fee_minor"] for r in got] == [349, -35, 0]
    assert [r["net_amount_minor"] for r in got] == [9651, -1965, -5000]
    assert [r["movement_reference"] for r in got] == [
        "1AB23456CD789012E",
        "2FG34567HI890123J",
        "3KL45678MN901234P",
    ]
    assert [r["payment_reference"] for r in got] == [
        "1AB23456CD789012E",
        "1ZY98765XW432109V",
        "3KL45678MN901234P",
    ]
    assert [r["merchant_reference"] for r in got] == ["dep-000101", "dep-000090", None]
    assert [r["payout_reference"] for r in got] == [None, None, "BANKREF0001"]
    assert got[0]["booked_at"] == dt.datetime(2026, 3, 2, 18, 15, 2, tzinfo=UTC)
    assert got[2]["booked_at"] == dt.datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    assert got[2]["booking_date"] == dt.date(2026, 3, 2)  # the Pacific date as written


def test_paypal_bom_unquoted_fields_and_no_report_header() -> None:
    lines = [line.replace('"', "") for line in PAYPAL_EXAMPLE.splitlines()]
    lines[3] = lines[3].replace("Transaction Debit or Credit", "Transaction  Debit or Credit")  # Magento's
    text = "\r\n".join(lines[2:]) + "\r\n"  # starts with SH, CRLF line ends
    text = text.replace("FF,12", "FF,10")  # 10 lines; counting every line but FF (9) is accepted as well
    data = b"\xef\xbb\xbf" + text.encode()
    assert paypal.looks_like(data)
    got = rows(paypal.parse(data, "STL-20260302.01.009.CSV"))
    assert [r["amount_minor"] for r in got] == [10000, -2000, -5000]
    assert [r["fee_minor"] for r in got] == [349, -35, 0]
    assert [r["merchant_reference"] for r in got] == ["dep-000101", "dep-000090", None]
    text9 = text.replace("FF,10", "FF,9")
    assert paypal.parse(text9.encode(), "x.csv").height == 3


def stl(sb: list[list[str]], *, sections: int = 1, tamper: dict[str, str] | None = None) -> str:
    """An STL file with correct footers for the given SB rows (CH = the doc's 21 columns)."""
    ch = next(csv.reader(io.StringIO(PAYPAL_EXAMPLE.splitlines()[3])))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    lines: list[list[str]] = [["RH", "2026/03/03 02:10:00 -0800", "A", "ACCT", "009"], ["FH", "01"]]
    report: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    per = -(-len(sb) // sections) if sb else 0
    chunks = [sb[i * per : (i + 1) * per] for i in range(sections)] if sb else [[]]
    for n, chunk in enumerate(chunks):
        lines.append(
            ["SH", f"2026/03/0{n + 1} 00:00:00 -0800", f"2026/03/0{n + 1} 23:59:59 -0800", "ACCT", ""]
        )
        lines.append(ch)
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for row in chunk:
            lines.append(["SB", *row])
            dc, gross, gccy, fdc, fee, fccy = (
                row[7],
                int(row[8]),
                row[9],
                row[10],
                int(row[11] or 0),
                row[12] or row[9],
            )
            for s in (sums, report):
                s[gccy][0 if dc == "CR" else 1] += gross
                if fdc:
                    s[fccy][2 if fdc == "CR" else 3] += fee
        for ccy, (cg, dg, cf, df) in sorted(sums.items()):
            net = cg - dg + cf - df
            end = 1000000 + net
            lines.append(
                [
                    "SF",
                    ccy,
                    str(cg),
                    str(dg),
                    str(cf),
                    str(df),
                    "CR",
                    "1000000",
                    "CR" if end >= 0 else "DR",
                    str(abs(end)),
                    "CR",
                    "0",
                    "CR",
                    "0",
                    "CR",
                    "0",
                    "CR",
                    "0",
                    "0",
                ]
            )
        lines.append(["SC", str(len(chunk))])
    for ccy, (cg, dg, cf, df) in sorted(report.items()):
        end = 1000000 + cg - dg + cf - df
        lines.append(
            [
                "RF",
                ccy,
                str(cg),
                str(dg),
                str(cf),
                str(df),
                "CR",
                "1000000",
                "CR" if end >= 0 else "DR",
                str(abs(end)),
                "CR",
                "0",
                "CR",
                "0",
                "CR",
                "0",
                "CR",
                "0",
                "0",
            ]
        )
    lines.append(["RC", str(len(sb))])
    lines.append(["FF", str(len(lines) + 1)])
    for line in lines:
        w.writerow(line)
    text = out.getvalue()
    for old, new in (tamper or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def sb_row(
    txn: str,
    code: str,
    dc: str,
    gross: int,
    ccy: str,
    *,
    fee: int = 0,
    fee_dc: str = "",
    invoice: str = "",
    ref: str = "",
    bank_ref: str = "",
    completed: str = "2026/03/02 10:15:02 -0800",
) -> list[str]:
    return [
        txn,
        invoice,
        ref,
        "TXN" if ref else "",
        code,
        completed,
        completed,
        dc,
        str(gross),
        ccy,
        fee_dc,
        str(fee) if fee_dc else "",
        ccy if fee_dc else "",
        "",
        "",
        "",
        "",
        bank_ref,
        "",
        "",
        "",
    ]


def test_paypal_jpy_kwd_kinds_and_sections() -> None:
    text = stl(
        [
            sb_row(
                "A", "T0006", "CR", 10000, "JPY", fee=300, fee_dc="DR", invoice="dep-1"
            ),  # 100 JPY, fee 3 JPY
            sb_row("B", "T0000", "DR", 1234, "KWD", invoice="wd-1"),  # 12.34 KWD = 12340 fils
            sb_row("C", "T0106", "DR", 1500, "EUR"),
            sb_row("D", "T1201", "DR", 2500, "EUR", ref="A"),
            sb_row("E", "T1202", "CR", 2500, "EUR", ref="A"),
            sb_row("F", "T0200", "DR", 100, "EUR"),
            sb_row("G", "T9999", "CR", 1, "EUR"),
        ],
        sections=2,
    )
    got = rows(paypal.parse(text.encode(), "STL-20260302.01.009.CSV"))
    assert (got[0]["amount_minor"], got[0]["currency"], got[0]["fee_minor"], got[0]["net_amount_minor"]) == (
        100,
        "JPY",
        3,
        97,
    )
    assert (got[1]["amount_minor"], got[1]["currency"], got[1]["line_kind"]) == (
        -12340,
        "KWD",
        "payout_to_player",
    )
    assert [r["line_kind"] for r in got[2:]] == [
        "fee",
        "chargeback",
        "chargeback_reversal",
        "adjustment",
        "other",
    ]
    assert [r["source_row"] for r in got] == list(range(1, 8))
    assert [r["batch_id"] for r in got] == ["ACCT:2026-03-01"] * 4 + ["ACCT:2026-03-02"] * 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [("T0006", "CR"), ("T0000", "DR"), ("T1107", "DR"), ("T0400", "DR"), ("T1202", "CR")]
            ),
            st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
            st.integers(0, 10**10),
            st.integers(0, 10**5),
            st.sampled_from(["", "DR", "CR"]),
            st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=17),
            st.text('abcdefghijklmnopqrstuvwxyz0123456789-,"', min_size=0, max_size=20),
        ),
        min_size=0,
        max_size=12,
    ),
    st.integers(1, 3),
)
def test_paypal_round_trip(items: list[Any], sections: int) -> None:
    sb, expected = [], []
    for (code, dc), ccy, gross_units, fee_units, fee_dc, txn, invoice in items:
        # File units are hundredths of the major unit; hundredths of a yen are not representable.
        gross, fee = (gross_units * 100, fee_units * 100) if ccy == "JPY" else (gross_units, fee_units)
        to_minor_units = {"JPY": lambda u: u // 100, "KWD": lambda u: u * 10}.get(ccy, lambda u: u)
        g, f = to_minor_units(gross), to_minor_units(fee) if fee_dc else 0
        sb.append(
            sb_row(
                txn,
                code,
                dc,
                gross,
                ccy,
                fee=fee,
                fee_dc=fee_dc,
                invoice=invoice,
                bank_ref="BR" + txn if code == "T0400" else "",
            )
        )
        signed = g if dc == "CR" else -g
        signed_fee = -f if fee_dc == "CR" else f
        expected.append(
            (
                signed,
                ccy,
                signed_fee,
                signed - signed_fee,
                txn,
                invoice or None,
                "BR" + txn if code == "T0400" else None,
            )
        )
    frame = paypal.parse(stl(sb, sections=sections).encode(), "STL-20260302.01.009.CSV")
    got = [
        (
            r["amount_minor"],
            r["currency"],
            r["fee_minor"],
            r["net_amount_minor"],
            r["movement_reference"],
            r["merchant_reference"],
            r["payout_reference"],
        )
        for r in rows(frame)
    ]
    assert got == expected
    assert frame["source_row"].to_list() == list(range(1, len(items) + 1))


# --------------------------------------------------------------------------------------------------------
# camt.053
# --------------------------------------------------------------------------------------------------------


def test_camt_v08_example() -> None:
    frame = camt053.parse(CAMT_V08_EXAMPLE.encode(), "camt053_20260305.xml")
    assert frame.schema == pl.Schema(frames.SETTLEMENT_LINE_SCHEMA)
    got = rows(frame)
    assert [r["source_row"] for r in got] == [1, 2, 3]
    assert {r["psp"] for r in got} == {"bank"}
    assert {r["batch_id"] for r in got} == {"STMT-20260305-MT01"}
    assert {r["account_id"] for r in got} == {"MT84MALT011000012345MTLCAST001S"}
    assert [r["amount_minor"] for r in got] == [1000, 3766, -2500]
    assert [r["net_amount_minor"] for r in got] == [1000, 3766, -2500]
    assert [r["fee_minor"] for r in got] == [0, 0, 0]
    assert [r["line_kind"] for r in got] == ["bank_credit", "bank_credit", "bank_debit"]
    assert [r["record_type"] for r in got] == [
        "CRDT/PMNT/RCDT/ESCT",
        "CRDT/PMNT/RCDT/ESCT",
        "DBIT/ACMT/MDOP/CHRG",
    ]
    assert [r["movement_reference"] for r in got] == ["BANKREF-0001", "BANKREF-0002", "BANKREF-0003"]
    assert [r["remittance_info"] for r in got] == [
        "TX0000000001XT | TX0000000001XT batch 812, ExampleCasinoEUR",
        "STRIPE po_1TestPayout0001",
        "Account maintenance fee",
    ]
    assert {r["booking_date"] for r in got} == {dt.date(2026, 3, 5)}
    assert not any(r["moves_player_money"] for r in got)


def test_camt_v02_statuses_dttm_and_several_statements() -> None:
    got = rows(camt053.parse(CAMT_V02.encode(), "v02.xml"))
    assert [r["source_row"] for r in got] == [1, 2, 3]
    assert [r["batch_id"] for r in got] == ["STMT-A", "STMT-A", "STMT-B"]
    assert [r["account_id"] for r in got] == ["MT84MALT011000012345MTLCAST001S"] * 2 + ["ACC-JPY-1"]
    assert [r["amount_minor"] for r in got] == [1000, 9900, -300]
    assert [r["currency"] for r in got] == ["EUR", "EUR", "JPY"]
    assert got[0]["remittance_info"] == "TX0000000001XT | part one | part two | Adyen payout"
    assert got[0]["booked_at"] == dt.datetime(2026, 3, 5, 22, 30, tzinfo=UTC)
    assert got[0]["booking_date"] == dt.date(2026, 3, 5)
    assert got[1]["record_type"] == "CRDT/NTRF+166;PDNG"  # pending: kept, flagged, not in the balance
    assert got[1]["booking_date"] == dt.date(2026, 3, 6)
    assert got[2]["record_type"] == "DBIT"


def test_camt_reversal_keeps_its_own_direction_and_kwd() -> None:
    # ISO 20022: a reversal's CdtDbtInd is the direction of the reversal booking itself; a CRDT
    # reversal (cancelling an earlier debit) adds to the balance: 1000 + 300 = 1300.
    doc = CAMT_V02.replace(
        '<Amt Ccy="JPY">300</Amt><CdtDbtInd>DBIT</CdtDbtInd>',
        '<Amt Ccy="JPY">300</Amt><CdtDbtInd>CRDT</CdtDbtInd><RvslInd>true</RvslInd>',
    ).replace('<Amt Ccy="JPY">700</Amt>', '<Amt Ccy="JPY">1300</Amt>')
    got = rows(camt053.parse(doc.encode(), "r.xml"))
    assert got[2]["amount_minor"] == 300 and got[2]["line_kind"] == "bank_credit"
    assert got[2]["record_type"] == "CRDT;RVSL"
    flipped = doc.replace('<Amt Ccy="JPY">1300</Amt>', '<Amt Ccy="JPY">700</Amt>')
    with pytest.raises(FormatError, match="CLBD"):
        camt053.parse(flipped.encode(), "r.xml")
    kwd = CAMT_V02.replace('Ccy="JPY">1000<', 'Ccy="KWD">1.000<').replace(
        'Ccy="JPY">700<', 'Ccy="KWD">0.700<'
    )
    kwd = kwd.replace('<Amt Ccy="JPY">300</Amt>', '<Amt Ccy="KWD">0.300</Amt>')
    assert rows(camt053.parse(kwd.encode(), "k.xml"))[2]["amount_minor"] == -300


def test_camt_in_business_application_envelope() -> None:
    body = CAMT_V08_EXAMPLE.split("?>", 1)[1]
    doc = (
        '<BizMsgEnvlp><AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02"><BizMsgIdr>1'
        f"</BizMsgIdr></AppHdr>{body}</BizMsgEnvlp>"
    )
    assert registry.detect(doc.encode()) == "bank"
    assert camt053.parse(doc.encode(), "env.xml").height == 3


# --------------------------------------------------------------------------------------------------------
# Bad inputs: every one refused whole with file, row and field
# --------------------------------------------------------------------------------------------------------

ADYEN_LINES = ADYEN_EXAMPLE.splitlines(keepends=True)
STRIPE_LINES = STRIPE_EXAMPLE.splitlines(keepends=True)

BAD: list[tuple[str, Any, str | bytes, int | None, str | None, str]] = [
    # (id, parser, data, row, field, message fragment)
    ("adyen-empty", adyen.parse, b"", None, None, "empty"),
    ("adyen-header-only", adyen.parse, ADYEN_LINES[0], None, None, "no data rows"),
    (
        "adyen-missing-column",
        adyen.parse,
        ADYEN_EXAMPLE.replace("Net Credit (NC)", "Net Kredit (NC)"),
        None,
        "Net Credit (NC)",
        "no 'Net Credit (NC)' column",
    ),
    (
        "adyen-bad-amount",
        adyen.parse,
        ADYEN_EXAMPLE.replace(",20.00,,1,EUR", ",20,00,,1,EUR", 1).replace(
            "Refunded,P0O9I8U7Y6T5R4E3,EUR,20,00,", 'Refunded,P0O9I8U7Y6T5R4E3,EUR,"20,00",'
        ),
        2,
        "Gross Debit (GC)",
        "not a decimal amount",
    ),
    (
        "adyen-too-many-decimals",
        adyen.parse,
        ADYEN_EXAMPLE.replace(",65.00,", ",65.001,"),
        3,
        "Net Debit (NC)",
        "more decimals",
    ),
    (
        "adyen-jpy-decimals",
        adyen.parse,
        ADYEN_EXAMPLE.replace(
            "Refunded,P0O9I8U7Y6T5R4E3,EUR,20.00,,1,EUR", "Refunded,P0O9I8U7Y6T5R4E3,JPY,5.5,,1,EUR"
        ),
        2,
        "Gross Debit (GC)",
        "more decimals",
    ),
    (
        "adyen-unknown-currency",
        adyen.parse,
        ADYEN_EXAMPLE.replace("Chargeback,M1N2B3V4C5X6Z7L8,EUR", "Chargeback,M1N2B3V4C5X6Z7L8,XXX"),
        3,
        "Gross Currency",
        "unknown currency",
    ),
    (
        "adyen-bad-date",
        adyen.parse,
        ADYEN_EXAMPLE.replace("2026-03-03 09:30:00", "03/03/2026 09:30"),
        3,
        "Creation Date",
        "date",
    ),
    (
        "adyen-unknown-tz",
        adyen.parse,
        ADYEN_EXAMPLE.replace("09:30:00,CET", "09:30:00,IST"),
        3,
        "TimeZone",
        "time-zone",
    ),
    (
        "adyen-control-total",
        adyen.parse,
        ADYEN_EXAMPLE.replace(",EUR,3.10,", ",EUR,3.11,"),
        5,
        "Net Debit (NC)",
        "control total",
    ),
    (
        "adyen-not-utf8",
        adyen.parse,
        ADYEN_EXAMPLE.encode().replace(b"dep-000090", b"dep-\xff00090"),
        3,
        None,
        "not UTF-8",
    ),
    ("stripe-empty", stripe.parse, b"  \n", None, None, "empty"),
    ("stripe-header-only", stripe.parse, STRIPE_LINES[0], None, None, "no data rows"),
    (
        "stripe-missing-column",
        stripe.parse,
        STRIPE_EXAMPLE.replace(",fee,", ",fees,"),
        None,
        "fee",
        "no 'fee'",
    ),
    (
        "stripe-bad-amount",
        stripe.parse,
        STRIPE_EXAMPLE.replace("-50.00,15.00", "-50.00,1.5e1"),
        4,
        "fee",
        "not a decimal amount",
    ),
    (
        "stripe-too-many-decimals",
        stripe.parse,
        STRIPE_EXAMPLE.replace("100.00,1.65,98.35", "100.00,1.655,98.345"),
        1,
        "fee",
        "more decimals",
    ),
    (
        "stripe-net-not-gross-minus-fee",
        stripe.parse,
        STRIPE_EXAMPLE.replace("24.31", "24.32"),
        2,
        "net",
        "net is not gross - fee",
    ),
    (
        "stripe-unknown-currency",
        stripe.parse,
        STRIPE_EXAMPLE.replace("09:00:00,2026-03-04 00:00:00,eur", "09:00:00,2026-03-04 00:00:00,eu"),
        3,
        "currency",
        "unknown currency",
    ),
    (
        "stripe-bad-date",
        stripe.parse,
        STRIPE_EXAMPLE.replace("2026-03-03 11:00:00", "2026-03-32 11:00:00"),
        4,
        "created_utc",
        "timestamp",
    ),
    (
        "stripe-control-total",
        stripe.parse,
        STRIPE_EXAMPLE.replace("-37.66,0.00,-37.66", "-37.67,0.00,-37.67"),
        5,
        "net",
        "control total",
    ),
    ("paypal-empty", paypal.parse, b"\xef\xbb\xbf", None, None, "empty"),
    (
        "paypal-missing-column",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"Fee Amount"', '"Fee Amt"'),
        4,
        "Fee Amount",
        "no 'Fee Amount' column",
    ),
    (
        "paypal-bad-amount",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"CR",10000,"EUR"', '"CR",100.00,"EUR"'),
        5,
        "Gross Transaction Amount",
        "not an unsigned integer",
    ),
    (
        "paypal-bad-sign",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('-0800,"DR",2000', '-0800,"D",2000'),
        6,
        "Transaction Debit or Credit",
        "CR or DR",
    ),
    (
        "paypal-jpy-not-representable",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"CR",10000,"EUR","DR",349,"EUR"', '"CR",10050,"JPY","DR",349,"EUR"'),
        5,
        "Gross Transaction Amount",
        "more decimals",
    ),
    (
        "paypal-unknown-currency",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('2000,"EUR"', '2000,"EURO"'),
        6,
        "Gross Transaction Currency",
        "unknown currency",
    ),
    (
        "paypal-bad-date",
        paypal.parse,
        PAYPAL_EXAMPLE.replace("2026/03/02 12:00:01 -0800", "2026-03-02 12:00:01"),
        6,
        "Transaction Completion Date",
        "date",
    ),
    (
        "paypal-sf-gross",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"SF","EUR",10000,7000', '"SF","EUR",10000,7001'),
        8,
        "SF field 3 (total gross debit)",
        "control total",
    ),
    (
        "paypal-sf-fee",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"SF","EUR",10000,7000,35,349', '"SF","EUR",10000,7000,35,350'),
        8,
        "SF field 5 (total fee debit)",
        "control total",
    ),
    (
        "paypal-sf-balance",
        paypal.parse,
        PAYPAL_EXAMPLE.replace(
            '"SF","EUR",10000,7000,35,349,"CR",20000,"CR",22686',
            '"SF","EUR",10000,7000,35,349,"CR",20000,"CR",22687',
        ),
        8,
        "SF field 9 (ending balance)",
        "balance",
    ),
    (
        "paypal-sc",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"SC",3', '"SC",4'),
        9,
        "SC field 1 (record count)",
        "control total",
    ),
    (
        "paypal-rf",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"RF","EUR",10000', '"RF","EUR",10001'),
        10,
        "RF field 2 (total gross credit)",
        "control total",
    ),
    (
        "paypal-rc",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"RC",3', '"RC",2'),
        11,
        "RC field 1 (record count)",
        "control total",
    ),
    (
        "paypal-ff",
        paypal.parse,
        PAYPAL_EXAMPLE.replace('"FF",12', '"FF",14'),
        12,
        "FF field 1 (record count)",
        "counts 14",
    ),
    (
        "paypal-truncated",
        paypal.parse,
        "".join(PAYPAL_EXAMPLE.splitlines(keepends=True)[:7]),
        7,
        "SC",
        "truncated",
    ),
    (
        "paypal-no-ff",
        paypal.parse,
        "".join(PAYPAL_EXAMPLE.splitlines(keepends=True)[:-1]),
        11,
        "FF",
        "truncated",
    ),
    (
        "paypal-not-utf8",
        paypal.parse,
        PAYPAL_EXAMPLE.encode().replace(b"player-17", b"player\xe9"),
        6,
        None,
        "not UTF-8",
    ),
    ("camt-empty", camt053.parse, b"", None, None, "empty"),
    (
        "camt-truncated",
        camt053.parse,
        CAMT_V08_EXAMPLE[: len(CAMT_V08_EXAMPLE) // 2],
        None,
        None,
        "not well-formed",
    ),
    (
        "camt-doctype",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace("<Document", '<!DOCTYPE d [<!ENTITY x "y">]>\n<Document', 1),
        None,
        None,
        "DTD",
    ),
    (
        "camt-wrong-namespace",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace("camt.053.001.08", "camt.052.001.08"),
        None,
        "Document",
        "not a camt.053",
    ),
    (
        "camt-too-many-decimals",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace(">37.66<", ">37.665<"),
        2,
        "Ntry/Amt",
        "more decimals",
    ),
    (
        "camt-negative-amount",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace(">25.00<", ">-25.00<"),
        3,
        "Ntry/Amt",
        "unsigned",
    ),
    (
        "camt-unknown-currency",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace('Ccy="EUR">25.00', 'Ccy="EUX">25.00'),
        3,
        "Ntry/Amt/@Ccy",
        "unknown currency",
    ),
    (
        "camt-bad-indicator",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace("<CdtDbtInd>DBIT</CdtDbtInd><Sts>", "<CdtDbtInd>DEBIT</CdtDbtInd><Sts>"),
        3,
        "Ntry/CdtDbtInd",
        "CRDT or DBIT",
    ),
    (
        "camt-bad-date",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace(
            "<Dt>2026-03-05</Dt></BookgDt><ValDt><Dt>2026-03-05</Dt></ValDt>\n"
            + " " * 8
            + "<AcctSvcrRef>BANKREF-0003",
            "<Dt>05.03.2026</Dt></BookgDt><ValDt><Dt>2026-03-05</Dt></ValDt>\n"
            + " " * 8
            + "<AcctSvcrRef>BANKREF-0003",
        ),
        3,
        "Ntry/BookgDt/Dt",
        "ISO 8601",
    ),
    (
        "camt-control-total",
        camt053.parse,
        CAMT_V08_EXAMPLE.replace(">1022.66<", ">1022.67<"),
        None,
        "Bal/CLBD",
        "STMT-20260305-MT01",
    ),
]


@pytest.mark.parametrize(
    ("parse", "data", "row", "field", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_refused_with_row_and_field(
    parse: Any, data: str | bytes, row: int | None, field: str | None, fragment: str
) -> None:
    error = raises(parse, data, "/landing/some/dir/bad_file.csv")
    problem = error.problem
    assert problem.file == "bad_file.csv"
    assert (problem.row, problem.field) == (row, field), str(error)
    assert fragment in problem.message, str(error)
    assert problem.hint
    assert "bad_file.csv" in str(error)


def test_bad_value_is_reported() -> None:
    error = raises(adyen.parse, ADYEN_EXAMPLE.replace(",65.00,", ",65.001,"))
    assert error.problem.value == "65.001"
    error = raises(paypal.parse, PAYPAL_EXAMPLE.replace('"SC",3', '"SC",4'))
    assert error.problem.value == "4"


def test_first_problem_in_file_order() -> None:
    text = ADYEN_EXAMPLE.replace(",65.00,", ",65.001,").replace(
        ",20.00,,1,EUR,20.00,", ",20.001,,1,EUR,20.00,"
    )
    assert raises(adyen.parse, text).problem.row == 2


# --------------------------------------------------------------------------------------------------------
# Registry: detection and parse_as
# --------------------------------------------------------------------------------------------------------


def test_detect() -> None:
    assert registry.detect(ADYEN_EXAMPLE.encode()) == "adyen"
    assert registry.detect(STRIPE_EXAMPLE.encode()) == "stripe"
    assert registry.detect(PAYPAL_EXAMPLE.encode()) == "paypal"
    assert registry.detect(b"\xef\xbb\xbfSH,2026/03/02 00:00:00 -0800") == "paypal"
    assert registry.detect(CAMT_V08_EXAMPLE.encode()) == "bank"
    assert registry.detect(CAMT_V02.encode()) == "bank"
    assert registry.detect(b"a,b,c\n1,2,3\n") is None
    assert registry.detect(b"") is None
    assert set(registry.PARSERS) == {"adyen", "stripe", "paypal", "bank"}
    for module in registry.PARSERS.values():
        assert isinstance(module.FORMAT, str) and callable(module.looks_like) and callable(module.parse)


def test_parse_as_refuses_a_stripe_file_given_as_adyen() -> None:
    with pytest.raises(FormatError) as info:
        registry.parse_as("adyen", STRIPE_EXAMPLE.encode(), "/tmp/upload/payouts.csv")
    problem = info.value.problem
    assert problem.file == "payouts.csv" and problem.field is None
    assert "Stripe" in problem.message and "Adyen" in problem.message
    assert "--psp stripe" in problem.hint


def test_parse_as_unknown_content_and_psp() -> None:
    with pytest.raises(FormatError) as info:
        registry.parse_as("paypal", b"hello,world\n1,2\n", "x.csv")
    assert "hello,world" in info.value.problem.message
    with pytest.raises(FormatError):
        registry.parse_as("worldpay", ADYEN_EXAMPLE.encode(), "x.csv")
    with pytest.raises(FormatError) as info:
        registry.parse_as("bank", b"", "x.xml")
    assert "empty" in info.value.problem.message


def test_parse_as_parses_each_format() -> None:
    for psp, data in (
        ("adyen", ADYEN_EXAMPLE),
        ("stripe", STRIPE_EXAMPLE),
        ("paypal", PAYPAL_EXAMPLE),
        ("bank", CAMT_V08_EXAMPLE),
    ):
        frame = registry.parse_as(psp, data.encode(), f"f.{psp}")
        assert frame.height > 0 and set(frame["psp"]) == {psp}
        frames.SettlementLineModel.validate(frame)


# --------------------------------------------------------------------------------------------------------
# camt.053 round trip: entries written as a statement (v02 or v08), parsed back
# --------------------------------------------------------------------------------------------------------

_camt_text = (
    st.text(
        alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs"), exclude_characters="\x00"),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)


@given(
    ccy=st.sampled_from(["EUR", "JPY", "KWD"]),
    version=st.sampled_from(["02", "08"]),
    opening=st.integers(min_value=0, max_value=10**9),
    entries=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**10),
            st.booleans(),
            _camt_text,
            st.lists(_camt_text, max_size=3),
        ),
        min_size=1,
        max_size=12,
    ),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_camt_round_trip(
    ccy: str, version: str, opening: int, entries: list[tuple[int, bool, str, list[str]]]
) -> None:
    from xml.sax.saxutils import escape

    signed = [amount if credit else -amount for amount, credit, _, _ in entries]
    closing = opening + sum(signed)

    def bal(code: str, minor: int) -> str:
        ind = "CRDT" if minor >= 0 else "DBIT"
        return (
            f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
            f'<Amt Ccy="{ccy}">{to_major_str(abs(minor), ccy)}</Amt><CdtDbtInd>{ind}</CdtDbtInd>'
            "<Dt><Dt>2026-03-05</Dt></Dt></Bal>"
        )

    status = "<Sts>BOOK</Sts>" if version == "02" else "<Sts><Cd>BOOK</Cd></Sts>"
    body = "".join(
        f'<Ntry><Amt Ccy="{ccy}">{to_major_str(amount, ccy)}</Amt>'
        f"<CdtDbtInd>{'CRDT' if credit else 'DBIT'}</CdtDbtInd>{status}"
        f"<BookgDt><Dt>2026-03-05</Dt></BookgDt><ValDt><Dt>2026-03-06</Dt></ValDt>"
        f"<AcctSvcrRef>{escape(ref)}</AcctSvcrRef>"
        "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>"
        + (
            "<NtryDtls><TxDtls><RmtInf>"
            + "".join(f"<Ustrd>{escape(u)}</Ustrd>" for u in texts)
            + "</RmtInf></TxDtls></NtryDtls>"
            if texts
            else ""
        )
        + "</Ntry>"
        for amount, credit, ref, texts in entries
    )
    doc = (
        f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">'
        "<BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-03-05T18:00:00</CreDtTm></GrpHdr>"
        f"<Stmt><Id>S1</Id><CreDtTm>2026-03-05T18:00:00</CreDtTm><Acct><Id><IBAN>MT84MALT011000012345MTLCAST001S</IBAN>"
        f"</Id></Acct>{bal('OPBD', opening)}{bal('CLBD', closing)}{body}</Stmt></BkToCstmrStmt></Document>"
    )
    got = rows(camt053.parse(doc.encode(), "rt.xml"))
    assert [r["source_row"] for r in got] == list(range(1, len(entries) + 1))
    assert [r["amount_minor"] for r in got] == signed
    assert {r["currency"] for r in got} == {ccy}
    assert [r["movement_reference"] for r in got] == [ref for _, _, ref, _ in entries]
    expected_text = [" | ".join(texts) or None for _, _, _, texts in entries]
    assert [r["remittance_info"] for r in got] == expected_text
    assert all(r["booking_date"] == dt.date(2026, 3, 5) for r in got)


# --------------------------------------------------------------------------------------------------------
# Vectorised amounts agree with the Decimal reference (money.to_minor) on arbitrary text
# --------------------------------------------------------------------------------------------------------

_AMOUNT_TEXT = st.one_of(
    st.from_regex(r"\A[+-]?[0-9]{0,16}(\.[0-9]{0,6})?\Z", fullmatch=True),
    st.from_regex(r"\A[+-]?\.[0-9]{1,4}\Z", fullmatch=True),
    st.text(alphabet="0123456789.+- e_,", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(_AMOUNT_TEXT, min_size=1, max_size=20), ccy=st.sampled_from(["EUR", "JPY", "KWD", "CLF"])
)
def test_vectorised_minor_units_equal_decimal_reference(texts: list[str], ccy: str) -> None:
    from reconciliation_pipeline.formats.common import DECIMAL_RE, minor_units
    from reconciliation_pipeline.money import MoneyError, exponent, to_minor

    frame = pl.DataFrame({"amount": texts}).with_columns(pl.col("amount").replace("", None))
    got = minor_units(frame, "amount", pl.lit(exponent(ccy)), "minor").get_column("minor").to_list()
    for text, value in zip(texts, got, strict=True):
        expected: int | None
        if text == "" or not re.match(DECIMAL_RE, text):
            expected = None
        else:
            try:
                expected = to_minor(text, ccy)
            except MoneyError:
                expected = None
            whole = text.lstrip("+-").split(".")[0].lstrip("0")
            if len(whole) > 14:
                expected = None
            # the digits without the point must fit an int64 (18 digits in all always do, ISO 20022's
            # totalDigits); more, even trailing zeros, is refused rather than read
            if int(text.lstrip("+-").replace(".", "", 1) or "0") >= 2**63:
                expected = None
        assert value == expected, (text, ccy, value, expected)


def test_an_amount_of_more_than_18_digits_is_refused_with_its_row_and_the_limit() -> None:
    """The case hypothesis found: 14 integer digits and 6 trailing zeros are 20 digits, more than an int64
    holds; the amount is refused (never misread), and the error says which limit it breaks."""
    from reconciliation_pipeline.formats.common import ROW, FormatError, amounts_to_minor

    frame = pl.DataFrame({ROW: [1, 2], "amount": ["12.30", "10000000000000.000000"], "ccy": ["EUR", "EUR"]})
    with pytest.raises(FormatError) as caught:
        amounts_to_minor(frame, "report.csv", [("amount", "ccy")])
    problem = caught.value.problem
    assert (problem.row, problem.field, problem.value) == (2, "amount", "10000000000000.000000")
    assert "18 digits" in problem.hint


def _reference_minor(text: str | None, ccy: str) -> int | None:
    """What an amount text is in minor units by the Decimal reference, None where it must be refused."""
    from reconciliation_pipeline.formats.common import DECIMAL_RE
    from reconciliation_pipeline.money import MoneyError, to_minor

    if not text or not re.match(DECIMAL_RE, text):
        return None
    if len(text.lstrip("+-").split(".")[0].lstrip("0")) > 14:
        return None
    try:
        return to_minor(text, ccy)
    except MoneyError:
        return None


@st.composite
def _written_to_exponent(draw: st.DrawFn, exp: int) -> str:
    """Amount text with its point ``exp`` characters from the end (none for 0), as PSPs write them,
    with odd signs, digits and characters mixed in."""
    sign = draw(st.sampled_from(["", "", "-", "+", "--", " ", "+-"]))
    whole = draw(st.from_regex(r"\A[0-9]{0,20}\Z", fullmatch=True))
    if exp == 0:
        return sign + (whole or "0")
    frac = draw(st.text(alphabet="0123456789" * 4 + "-+.", min_size=exp, max_size=exp))
    return f"{sign}{whole}.{frac}"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), ccy=st.sampled_from(["EUR", "JPY", "KWD", "CLF"]), n=st.integers(1, 12))
def test_amounts_written_to_the_exponent_equal_decimal_reference(
    data: st.DataObject, ccy: str, n: int
) -> None:
    """Whole columns written the way PSPs write amounts (the currency's number of decimals, odd signs and
    characters mixed in) give what the Decimal reference gives, value for value, and the first value it
    refuses is the one named."""
    from reconciliation_pipeline.formats.common import ROW, amounts_to_minor, minor_col
    from reconciliation_pipeline.money import exponent

    exp = exponent(ccy)
    texts = data.draw(st.lists(st.one_of(_written_to_exponent(exp), st.none()), min_size=n, max_size=n))
    frame = pl.DataFrame(
        {"amount": texts, "ccy": [ccy] * n, ROW: range(1, n + 1)},
        schema={"amount": pl.String, "ccy": pl.String, ROW: pl.Int64},
    )
    got = (
        amounts_to_minor(frame, "f.csv", [("amount", "ccy")]).get_column(minor_col("amount")).to_list()
        if all(_reference_minor(t, ccy) is not None or t is None for t in texts)
        else None
    )
    if got is None:  # some value must be refused: the error names the first such row
        with pytest.raises(FormatError) as caught:
            amounts_to_minor(frame, "f.csv", [("amount", "ccy")])
        first = next(i for i, t in enumerate(texts) if t is not None and _reference_minor(t, ccy) is None)
        assert caught.value.problem.value == texts[first]
    else:
        assert got == [None if t is None else _reference_minor(t, ccy) for t in texts]


def test_a_sign_right_after_a_leading_point_is_refused() -> None:
    """ ".-0" EUR has its point two characters from the end, but without the point it reads as the integer
    -0; it is not a decimal amount and must be refused, and named first."""
    from reconciliation_pipeline.formats.common import ROW, amounts_to_minor

    for texts in ([".-0"], [".-0", "--.00"], [".+05", "1.00"]):
        frame = pl.DataFrame({"amount": texts, "ccy": "EUR", ROW: range(1, len(texts) + 1)})
        with pytest.raises(FormatError, match=r"not a decimal") as caught:
            amounts_to_minor(frame, "f.csv", [("amount", "ccy")])
        assert caught.value.problem.value == texts[0]


def test_the_smallest_int64_is_not_an_amount() -> None:
    from reconciliation_pipeline.formats.common import ROW, amounts_to_minor

    # alone (every value written to the exponent) and beside a value that is not (the general path)
    cases = [
        ("-92233720368547758.08", "EUR"),
        ("-9223372036854775808", "JPY"),
        ("-922337203685477580.8", "EUR"),
    ]
    for text, ccy in cases:
        for texts in ([text], [text, "1.0"]):
            frame = pl.DataFrame({"amount": texts, "ccy": ccy, ROW: range(1, len(texts) + 1)})
            with pytest.raises(FormatError, match=r"out of range|decimals") as caught:
                amounts_to_minor(frame, "f.csv", [("amount", "ccy")])
            assert caught.value.problem.value == text


def test_settlement_line_contract_refuses_a_repeated_file_row_and_allows_it_across_files() -> None:
    import pandera.errors

    one = adyen.parse(ADYEN_EXAMPLE.encode(), "sdr.csv")
    other_file = one.with_columns(pl.lit("f" * 64).alias("file_sha256"))
    assert frames.SettlementLineModel.validate(pl.concat([one, other_file])).height == 2 * one.height
    # Rows in any order are fine as long as none repeats (the ascending fast path and the hashing path).
    assert frames.SettlementLineModel.validate(one.reverse()).height == one.height
    assert frames.SettlementLineModel.validate(one.head(1)).height == 1
    repeated_in_order = pl.concat([one.head(2), one.slice(1)])  # rows 1, 2, 2, 3, ...: not strictly ascending
    for frame in (
        pl.concat([one, one.head(1)]),
        pl.concat([one, other_file, other_file.tail(1)]),
        repeated_in_order,
    ):
        with pytest.raises(pandera.errors.SchemaError, match="must be unique"):
            frames.SettlementLineModel.validate(frame)


@pytest.mark.parametrize(
    ("psp", "text"),
    [
        ("adyen", ADYEN_EXAMPLE),
        ("stripe", STRIPE_EXAMPLE),
        ("paypal", PAYPAL_EXAMPLE),
        ("bank", CAMT_V08_EXAMPLE),
    ],
)
def test_a_checksum_the_caller_computed_is_the_one_every_row_carries(psp: str, text: str) -> None:
    """Ingestion hashes a file once (it recognises known files by the hash) and hands the checksum to the
    parser; the parser's own checksum gives the same frame."""
    data = text.encode()
    own = registry.parse_as(psp, data, "f")
    given = registry.parse_as(psp, data, "f", file_sha256=sha(text))
    assert own.equals(given)
    assert set(own["file_sha256"]) == {sha(text)}
