"""The demo data generator: determinism, schema, format control totals, three-way payouts, ground truth.

Control totals are recomputed here from the written files with the csv module and xml.etree, independently
of the writer code.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from reconciliation_pipeline.demo import DemoConfig, DemoManifest, generate
from reconciliation_pipeline.demo.writers import major_expr
from reconciliation_pipeline.frames import EXCEPTION_CATEGORIES, KINDS, STATUSES
from reconciliation_pipeline.money import exponent, to_major_str, to_minor

SCHEMA = (
    Path(__file__).resolve().parents[2] / "reconciliation_pipeline" / "schemas" / "transaction-event.v1.json"
)
CONFIG = DemoConfig(seed=11, days=6, transactions_per_day=150)
MESS = (
    "duplicate_booking",
    "duplicate_settlement",
    "missing_in_psp",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "unlinked_adjustment",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate(tmp_path_factory.mktemp("demo"), CONFIG)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _events(manifest: DemoManifest) -> list[str]:
    return manifest.events_file.read_text(encoding="utf-8").splitlines()


def _truth(manifest: DemoManifest) -> list[dict[str, str]]:
    with manifest.ground_truth_file.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _dec(text: str) -> Decimal:
    return Decimal(text) if text else Decimal(0)


NS = {
    "v02": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02",
    "v08": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08",
}


def _camt(path: Path) -> tuple[str, ET.Element]:
    root = ET.parse(path).getroot()
    ns = root.tag[1:].split("}")[0]
    return ns, root


def _q(ns: str, path: str) -> str:
    return "/".join(f"{{{ns}}}{part}" for part in path.split("/"))


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    config = DemoConfig(seed=3, days=4, transactions_per_day=60)
    a = generate(tmp_path / "a", config)
    b = generate(tmp_path / "b", config)
    c = generate(tmp_path / "c", DemoConfig(seed=4, days=4, transactions_per_day=60))
    assert _tree_digest(a.root) == _tree_digest(b.root)
    assert a.counts == b.counts
    assert a.events_file.read_bytes() != c.events_file.read_bytes()


# ------------------------------------------------------------------------------------------------ events


def test_events_validate_except_the_invalid_ones(demo: DemoManifest) -> None:
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()), format_checker=FormatChecker())
    invalid = [line for line in _events(demo) if list(validator.iter_errors(json.loads(line)))]
    assert len(invalid) == CONFIG.invalid_events
    assert {json.loads(line)["event_id"] for line in invalid} == {"ev-bad-00001", "ev-bad-00002"}


def test_redeliveries_are_verbatim_and_not_records(demo: DemoManifest) -> None:
    lines = _events(demo)
    by_id: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        by_id[json.loads(line)["event_id"]].add(line)
    assert all(len(variants) == 1 for variants in by_id.values()), "a repeated event_id must repeat verbatim"
    repeated = [eid for eid, n in Counter(json.loads(line)["event_id"] for line in lines).items() if n > 1]
    assert len(repeated) >= 2
    ledger = [r for r in _truth(demo) if r["record"] == "ledger"]
    valid_ids = {
        json.loads(line)["transaction_id"]
        for line in lines
        if not json.loads(line)["event_id"].startswith("ev-bad")
    }
    assert len(ledger) == len(by_id) - CONFIG.invalid_events == len(valid_ids)
    assert {r["transaction_id"] for r in ledger} == valid_ids


def test_every_currency_kind_psp_jurisdiction_and_spelling_present(demo: DemoManifest) -> None:
    events = [json.loads(line) for line in _events(demo) if not line.startswith('{"event_id":"ev-bad')]
    assert {e["currency"] for e in events} == {"EUR", "GBP", "SEK", "JPY", "KWD"}
    assert {e["kind"] for e in events} == set(KINDS)
    assert {e["psp"] for e in events} == {"adyen", "stripe", "paypal"}
    assert {"MT", "GB", "SE", "DE", "IE"} <= {e["jurisdiction"] for e in events}
    assert len({e["brand"] for e in events}) >= 3
    assert any(e["trace_id"] is None for e in events) and any(e["trace_id"] for e in events)
    assert any(e["psp_reference"] is None for e in events)
    suffixes = {e["occurred_at"][-6:] if not e["occurred_at"].endswith("Z") else "Z" for e in events}
    assert {"Z", "+01:00", "+02:00"} <= suffixes
    for e in events:
        if e["kind"] in ("refund", "chargeback", "chargeback_reversal"):
            assert e["original_transaction_id"]
        else:
            assert e["original_transaction_id"] is None
    # Stripe pays no players out; PayPal gets no KWD/SEK (STL amounts are major x 100)
    assert not [e for e in events if e["psp"] == "stripe" and e["kind"] == "withdrawal"]
    assert not [e for e in events if e["psp"] == "paypal" and e["currency"] in ("KWD", "SEK")]


def test_ledger_business_date_is_local_date_in_malta(demo: DemoManifest) -> None:
    zone = ZoneInfo(CONFIG.business_tz)
    occurred = {}
    for line in _events(demo):
        e = json.loads(line)
        if not e["event_id"].startswith("ev-bad"):
            occurred[e["transaction_id"]] = dt.datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
    for row in _truth(demo):
        if row["record"] == "ledger":
            assert occurred[row["transaction_id"]].astimezone(zone).date().isoformat() == row["business_date"]
    first = CONFIG.start.isoformat()
    last = (CONFIG.start + dt.timedelta(days=CONFIG.days - 1)).isoformat()
    assert all(first <= r["business_date"] <= last for r in _truth(demo))


# ------------------------------------------------------------------------------------------------ formats


def test_adyen_batches_balance(demo: DemoManifest) -> None:
    assert demo.settlement_files["adyen"]
    for path in demo.settlement_files["adyen"]:
        rows = _csv_rows(path)
        assert len({r["Batch Number"] for r in rows}) == 1
        assert path.name == f"settlement_detail_report_batch_{rows[0]['Batch Number']}.csv"
        assert len({r["Merchant Account"] for r in rows}) == 1
        ccy = rows[0]["Net Currency"]
        payout = [r for r in rows if r["Type"] == "MerchantPayout"]
        assert len(payout) == 1 and rows[-1]["Type"] == "MerchantPayout"
        others = [r for r in rows if r["Type"] != "MerchantPayout"]
        total = sum(
            to_minor(_dec(r["Net Credit (NC)"]), ccy) - to_minor(_dec(r["Net Debit (NC)"]), ccy)
            for r in others
        )
        assert total == to_minor(payout[0]["Net Debit (NC)"], ccy) > 0
        assert (
            f"batch {rows[0]['Batch Number']}, {rows[0]['Merchant Account']}"
            in payout[0]["Modification Reference"]
        )
        for r in others:
            if r["Type"] in ("Fee", "MerchantPayout"):
                continue
            fees = sum(
                _dec(r[c]) for c in ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")
            )
            gross = _dec(r["Gross Credit (GC)"]) - _dec(r["Gross Debit (GC)"])
            net = _dec(r["Net Credit (NC)"]) - _dec(r["Net Debit (NC)"])
            assert net == gross - fees, r
            assert len(r["Psp Reference"]) == 16 and len(r["Modification Reference"]) == 16
            assert r["Gross Currency"] == ccy == r["Merchant Account"][-3:]


def test_stripe_payouts_balance(demo: DemoManifest) -> None:
    assert demo.settlement_files["stripe"]
    for path in demo.settlement_files["stripe"]:
        by_payout: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in _csv_rows(path):
            ccy = r["currency"].upper()
            assert r["currency"] == r["currency"].lower()
            assert to_minor(r["net"], ccy) == to_minor(r["gross"], ccy) - to_minor(r["fee"], ccy)
            by_payout[r["automatic_payout_id"]].append(r)
        for po, rows in by_payout.items():
            payout = [r for r in rows if r["reporting_category"] == "payout"]
            assert len(payout) == 1 and payout[0]["source_id"] == po
            ccy = payout[0]["currency"].upper()
            assert len({r["currency"] for r in rows}) == 1
            others = sum(to_minor(r["net"], ccy) for r in rows if r["reporting_category"] != "payout")
            assert -to_minor(payout[0]["net"], ccy) == others > 0


def test_paypal_stl_footers(demo: DemoManifest) -> None:
    assert demo.settlement_files["paypal"]
    for path in demo.settlement_files["paypal"]:
        assert path.name.startswith("STL-") and path.name.endswith(".01.009.CSV")
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        types = [line[0] for line in lines]
        assert types[:4] == ["RH", "FH", "SH", "CH"] and types[-1] == "FF"
        header = lines[3][1:]
        sb = [dict(zip(header, line[1:], strict=True)) for line in lines if line[0] == "SB"]
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for r in sb:
            s = sums[r["Gross Transaction Currency"]]
            s[0 if r["Transaction Debit or Credit"] == "CR" else 1] += int(r["Gross Transaction Amount"])
            if r["Fee Amount"]:
                s[2 if r["Fee Debit or Credit"] == "CR" else 3] += int(r["Fee Amount"])
            s[4] += 1
        for kind in ("SF", "RF"):
            footers = {line[1]: line[2:] for line in lines if line[0] == kind}
            assert set(footers) == set(sums)
            for ccy, f in footers.items():
                assert [int(x) for x in f[:4]] == sums[ccy][:4]
                begin = int(f[5]) * (1 if f[4] == "CR" else -1)
                end = int(f[7]) * (1 if f[6] == "CR" else -1)
                assert begin + sums[ccy][0] - sums[ccy][1] + sums[ccy][2] - sums[ccy][3] == end
                assert int(f[-1]) == sums[ccy][4]
        assert int(lines[types.index("SC")][1]) == len(sb) == int(lines[types.index("RC")][1])
        assert int(lines[-1][1]) == len(lines)
        withdrawals = [r for r in sb if r["Transaction Event Code"] == "T0400"]
        assert withdrawals and all(r["Bank Reference ID"] for r in withdrawals)
        # JPY amounts are major x 100: always a multiple of 100
        assert all(
            int(r["Gross Transaction Amount"]) % 100 == 0
            for r in sb
            if r["Gross Transaction Currency"] == "JPY"
        )


def test_camt_balances_and_versions(demo: DemoManifest) -> None:
    versions = set()
    closing: dict[str, Decimal] = {}
    for path in demo.settlement_files["bank"]:  # sorted by name: account, then date
        ns, root = _camt(path)
        versions.add(ns[-2:])
        stmt = root.find(_q(ns, "BkToCstmrStmt/Stmt"))
        assert stmt is not None
        iban = stmt.findtext(_q(ns, "Acct/Id/IBAN"))
        assert iban and path.name.startswith(f"camt053_{iban}_")
        bal = {b.findtext(_q(ns, "Tp/CdOrPrtry/Cd")): b for b in stmt.findall(_q(ns, "Bal"))}

        def signed(el: ET.Element, ns: str = ns) -> Decimal:
            amount = Decimal(el.findtext(_q(ns, "Amt")) or "0")
            return amount if el.findtext(_q(ns, "CdtDbtInd")) == "CRDT" else -amount

        entries = stmt.findall(_q(ns, "Ntry"))
        assert signed(bal["OPBD"]) + sum((signed(e) for e in entries), Decimal(0)) == signed(bal["CLBD"])
        if iban in closing:
            assert closing[iban] == signed(bal["OPBD"])
        closing[iban] = signed(bal["CLBD"])
        debits = [e for e in entries if e.findtext(_q(ns, "CdtDbtInd")) == "DBIT"]
        assert len(debits) == 1
        for e in entries:
            if ns.endswith("02"):
                assert e.findtext(_q(ns, "Sts")) == "BOOK"
                assert e.find(_q(ns, "NtryDtls/TxDtls/Amt")) is None
            else:
                assert e.findtext(_q(ns, "Sts/Cd")) == "BOOK"
            if e.findtext(_q(ns, "CdtDbtInd")) == "CRDT":
                tx = e.find(_q(ns, "NtryDtls/TxDtls"))
                assert tx is not None
                name = tx.findtext(
                    _q(ns, "RltdPties/Dbtr/Nm") if ns.endswith("02") else _q(ns, "RltdPties/Dbtr/Pty/Nm")
                )
                assert name
    assert versions == {"02", "08"}


def test_every_psp_payout_is_one_bank_credit_same_day(demo: DemoManifest) -> None:
    credits: list[tuple[str, str, int, str, str]] = []  # (ccy, date, minor, ustrd, e2e)
    for path in demo.settlement_files["bank"]:
        ns, root = _camt(path)
        for e in root.iter(f"{{{ns}}}Ntry"):
            if e.findtext(_q(ns, "CdtDbtInd")) != "CRDT":
                continue
            amt = e.find(_q(ns, "Amt"))
            assert amt is not None
            ccy = amt.get("Ccy") or ""
            credits.append(
                (
                    ccy,
                    e.findtext(_q(ns, "BookgDt/Dt")) or "",
                    to_minor(amt.text or "", ccy),
                    e.findtext(_q(ns, "NtryDtls/TxDtls/RmtInf/Ustrd")) or "",
                    e.findtext(_q(ns, "NtryDtls/TxDtls/Refs/EndToEndId")) or "",
                )
            )
    payouts: list[tuple[str, str, int, str]] = []
    for path in demo.settlement_files["adyen"]:
        for r in _csv_rows(path):
            if r["Type"] == "MerchantPayout":
                ccy = r["Net Currency"]
                payouts.append(
                    (
                        ccy,
                        r["Creation Date"][:10],
                        to_minor(r["Net Debit (NC)"], ccy),
                        r["Modification Reference"],
                    )
                )
    for path in demo.settlement_files["stripe"]:
        for r in _csv_rows(path):
            if r["reporting_category"] == "payout":
                ccy = r["currency"].upper()
                payouts.append(
                    (ccy, r["available_on_utc"][:10], -to_minor(r["net"], ccy), f"STRIPE {r['source_id']}")
                )
    for path in demo.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        header = lines[3][1:]
        for line in lines:
            if line[0] == "SB":
                r = dict(zip(header, line[1:], strict=True))
                if r["Transaction Event Code"] == "T0400":
                    ccy = r["Gross Transaction Currency"]
                    day = r["Transaction Completion Date"][:10].replace("/", "-")
                    minor = int(r["Gross Transaction Amount"]) // (100 if ccy == "JPY" else 1)
                    payouts.append((ccy, day, minor, r["Bank Reference ID"]))
    assert len(payouts) == len(credits)
    remaining = list(credits)
    for ccy, day, minor, ref in payouts:
        hit = [c for c in remaining if c[:3] == (ccy, day, minor) and ref in c[3]]
        assert len(hit) == 1, (ccy, day, minor, ref)
        remaining.remove(hit[0])


# ------------------------------------------------------------------------------------------------ truth


def _data_rows(manifest: DemoManifest) -> set[tuple[str, str, int]]:
    keys: set[tuple[str, str, int]] = set()
    for psp in ("adyen", "stripe"):
        for path in manifest.settlement_files[psp]:
            keys |= {(psp, path.name, i + 1) for i in range(len(_csv_rows(path)))}
    for path in manifest.settlement_files["paypal"]:
        n = sum(1 for line in csv.reader(path.read_text(encoding="utf-8").splitlines()) if line[0] == "SB")
        keys |= {("paypal", path.name, i + 1) for i in range(n)}
    for path in manifest.settlement_files["bank"]:
        ns, root = _camt(path)
        keys |= {("bank", path.name, i + 1) for i in range(len(list(root.iter(f"{{{ns}}}Ntry"))))}
    return keys


def test_truth_has_one_row_per_record_and_allowed_values(demo: DemoManifest) -> None:
    truth = _truth(demo)
    assert list(truth[0]) == [
        "record",
        "transaction_id",
        "psp",
        "source_file",
        "source_row",
        "status",
        "match_id",
        "rule_id",
        "exception_category",
        "business_date",
        "scenario",
    ]
    settlement = [
        (r["psp"], r["source_file"], int(r["source_row"])) for r in truth if r["record"] == "settlement"
    ]
    assert len(settlement) == len(set(settlement))
    assert set(settlement) == _data_rows(demo)
    ledger = [r for r in truth if r["record"] == "ledger"]
    assert len({r["transaction_id"] for r in ledger}) == len(ledger)
    assert all(not r["source_file"] and not r["source_row"] for r in ledger)
    assert {r["status"] for r in truth} <= set(STATUSES)
    assert {r["exception_category"] for r in truth} <= set(EXCEPTION_CATEGORIES) | {""}
    for r in truth:
        assert bool(r["exception_category"]) == (r["status"] == "exception")
        if r["status"] == "matched":
            assert r["match_id"] and r["rule_id"]
        if r["status"] == "pending":
            assert r["record"] == "ledger" and not r["match_id"]
    lag = CONFIG.settlement_lag_days
    last = CONFIG.start + dt.timedelta(days=CONFIG.days - 1)
    for r in ledger:
        age = (last - dt.date.fromisoformat(r["business_date"])).days
        if r["status"] == "pending":
            assert age <= lag
        if r["exception_category"] == "missing_in_psp":
            assert age > lag


def test_match_groups(demo: DemoManifest) -> None:
    truth = _truth(demo)
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in truth:
        if r["match_id"]:
            groups[r["match_id"]].append(r)
    for members in groups.values():
        rules = {m["rule_id"] for m in members}
        assert len(rules) == 1
        rule = rules.pop()
        if rule in ("exact_ref", "merchant_ref"):
            assert sorted(m["record"] for m in members) == ["ledger", "settlement"]
            assert len({m["transaction_id"] for m in members}) == 1
        elif rule == "payout_bank":
            assert sorted(m["psp"] == "bank" for m in members) == [False, True]
        else:
            assert rule in ("fee_row", "bank_charge") and len(members) == 1
    assert {r["rule_id"] for r in truth} >= {
        "exact_ref",
        "merchant_ref",
        "fee_row",
        "payout_bank",
        "bank_charge",
    }


def test_every_scenario_at_least_twice(demo: DemoManifest) -> None:
    truth = _truth(demo)
    scenarios = Counter(r["scenario"] for r in truth)
    categories = Counter((r["record"], r["exception_category"]) for r in truth)
    for name in MESS:
        assert scenarios[name] >= 2, name
    for record, category in [
        ("ledger", "missing_in_psp"),
        ("settlement", "missing_in_ledger"),
        ("ledger", "amount_mismatch"),
        ("settlement", "amount_mismatch"),
        ("ledger", "currency_mismatch"),
        ("settlement", "currency_mismatch"),
        ("settlement", "duplicate_settlement"),
        ("ledger", "duplicate_booking"),
        ("ledger", "unlinked_adjustment"),
        ("settlement", "unlinked_adjustment"),
    ]:
        assert categories[(record, category)] >= 2, (record, category)
    for name in (
        "exact",
        "late_settlement",
        "no_psp_reference",
        "pending",
        "fee_row",
        "merchant_payout",
        "bank_payout_credit",
        "bank_fee",
    ):
        assert scenarios[name] >= 2, name
    assert demo.counts["event_redeliveries"] >= 2
    for name in MESS:
        assert demo.counts[f"scenario_{name}"] == scenarios[name]


def test_matched_ledger_reference_is_in_its_settlement_row(demo: DemoManifest) -> None:
    """A ledger psp_reference is the PSP movement id on the row it matches (the matcher relies on it)."""
    events = {}
    for line in _events(demo):
        e = json.loads(line)
        events[e["transaction_id"]] = e
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for psp in ("adyen", "stripe"):
        for path in demo.settlement_files[psp]:
            rows |= {(path.name, i + 1): r for i, r in enumerate(_csv_rows(path))}
    for path in demo.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        sb = [dict(zip(lines[3][1:], line[1:], strict=True)) for line in lines if line[0] == "SB"]
        rows |= {(path.name, i + 1): r for i, r in enumerate(sb)}
    by_match: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in _truth(demo):
        if r["match_id"] and r["psp"] != "bank":
            by_match[r["match_id"]].append(r)
    checked = 0
    for members in by_match.values():
        led = [m for m in members if m["record"] == "ledger"]
        st = [m for m in members if m["record"] == "settlement"]
        if not led or not st:
            continue
        event = events[led[0]["transaction_id"]]
        row = rows[(st[0]["source_file"], int(st[0]["source_row"]))]
        psp, kind, ref = event["psp"], event["kind"], event["psp_reference"]
        if ref is None:
            assert led[0]["rule_id"] == "merchant_ref"
            continue
        if psp == "adyen":
            column = "Psp Reference" if kind in ("deposit", "withdrawal") else "Modification Reference"
            assert row[column] == ref
            merchant = (
                event["transaction_id"]
                if kind in ("deposit", "withdrawal")
                else event["original_transaction_id"]
            )
            assert row["Merchant Reference"] == merchant
            if kind == "refund":
                assert row["Modification Merchant Reference"] == event["transaction_id"]
        elif psp == "stripe":
            column = "payment_intent_id" if kind == "deposit" else "source_id"
            assert row[column] == ref
            assert ref.startswith({"deposit": "pi_", "refund": "re_"}.get(kind, "du_"))
        else:
            assert row["Transaction ID"] == ref
            if kind in ("refund", "chargeback", "chargeback_reversal"):
                assert row["Invoice ID"] == event["original_transaction_id"]
                original = events.get(event["original_transaction_id"])
                if original is not None and original["psp_reference"] is not None:
                    assert row["PayPal Reference ID"] == original["psp_reference"]
        checked += 1
    assert checked > 100


def test_settlement_business_date_is_the_psp_booking_date(demo: DemoManifest) -> None:
    dates: dict[tuple[str, int], str] = {}
    for path in demo.settlement_files["adyen"]:
        dates |= {(path.name, i + 1): r["Creation Date"][:10] for i, r in enumerate(_csv_rows(path))}
    for path in demo.settlement_files["stripe"]:
        dates |= {(path.name, i + 1): r["available_on_utc"][:10] for i, r in enumerate(_csv_rows(path))}
    for path in demo.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        sb = [line for line in lines if line[0] == "SB"]
        dates |= {(path.name, i + 1): line[7][:10].replace("/", "-") for i, line in enumerate(sb)}
    for path in demo.settlement_files["bank"]:
        ns, root = _camt(path)
        entries = list(root.iter(f"{{{ns}}}Ntry"))
        dates |= {(path.name, i + 1): e.findtext(_q(ns, "BookgDt/Dt")) or "" for i, e in enumerate(entries)}
    for r in _truth(demo):
        if r["record"] == "settlement":
            assert dates[(r["source_file"], int(r["source_row"]))] == r["business_date"]


def test_dst_crossing_window_and_short_lag(tmp_path: Path) -> None:
    config = DemoConfig(
        seed=9, start=dt.date(2026, 3, 27), days=5, transactions_per_day=80, settlement_lag_days=1
    )
    manifest = generate(tmp_path, config)
    truth = _truth(manifest)
    last = config.start + dt.timedelta(days=config.days - 1)
    for r in truth:
        if r["record"] == "ledger" and r["status"] == "pending":
            assert (last - dt.date.fromisoformat(r["business_date"])).days <= 1
    assert {r["status"] for r in truth} == {"matched", "pending", "exception"}


def test_major_expr_agrees_with_money_to_major_str() -> None:
    values = [0, 1, 5, 9, 10, 99, 100, 101, 1234, 1000000, -1, -5, -100, -12345]
    currencies = ["EUR"] * len(values) + ["jpy"] * len(values) + ["KWD"] * len(values)
    frame = pl.DataFrame({"a": values * 3, "c": currencies})
    got = frame.select(major_expr(pl.col("a"), pl.col("c")).alias("m"))["m"].to_list()
    want = [to_major_str(a, c.upper()) for a, c in zip(frame["a"], frame["c"], strict=True)]
    assert got == want
    assert exponent("KWD") == 3


# ------------------------------------------------------------------------------------------------ scale


def test_scale_smoke(tmp_path: Path) -> None:
    manifest = generate(tmp_path, DemoConfig(seed=5, days=2, transactions_per_day=20_000, invalid_events=3))
    assert manifest.counts["ledger_records"] > 35_000
    truth = pl.read_csv(manifest.ground_truth_file, infer_schema_length=0)
    assert truth.filter(pl.col("record") == "ledger").height == manifest.counts["ledger_records"]
    assert sum(1 for _ in manifest.events_file.open()) == manifest.counts["event_lines"]
