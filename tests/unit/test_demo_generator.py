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
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from reconciliation_pipeline.demo import DemoConfig, DemoManifest, generate
from reconciliation_pipeline.demo.writers import major_expr
from reconciliation_pipeline.formats.registry import parse_as
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
#: scenarios the matching engine's newer rules handle: all matched, at low rates
NEW_SCENARIOS = (
    "split_capture",
    "split_booking",
    "cross_currency",
    "cross_currency_net",
    "refund_before_deposit_settles",
    "chargeback_after_window",
)
#: rule -> allowed (ledger records, settlement records) of one match group
GROUP_SHAPES = {
    "split_settlement": {(1, 2), (1, 3)},
    "split_booking": {(2, 1)},
    "cross_currency": {(1, 1)},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate(tmp_path_factory.mktemp("demo"), CONFIG)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    """The data set ``recon demo`` makes (default config)."""
    return generate(tmp_path_factory.mktemp("default"), DemoConfig())


@pytest.fixture(scope="module", params=["demo", "default_demo"])
def any_demo(request: pytest.FixtureRequest) -> DemoManifest:
    """Whole-file and truth checks run on the small test config and on the default config."""
    manifest: DemoManifest = request.getfixturevalue(request.param)
    return manifest


def _config_of(manifest: DemoManifest) -> DemoConfig:
    """The config a fixture's manifest was made with."""
    return DemoConfig() if manifest.root.name.startswith("default") else CONFIG


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


def test_adyen_batches_balance(any_demo: DemoManifest) -> None:
    assert any_demo.settlement_files["adyen"]
    for path in any_demo.settlement_files["adyen"]:
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
            rate = Decimal(r["Exchange Rate"])
            cent = Decimal(1).scaleb(-exponent(ccy))
            assert net == (gross * rate).quantize(cent, rounding=ROUND_HALF_UP) - fees, r
            assert len(r["Psp Reference"]) == 16 and len(r["Modification Reference"]) == 16
            assert ccy == r["Merchant Account"][-3:]
            if r["Gross Currency"] == ccy:
                assert rate == 1
            else:  # cross-currency capture: gross in the player's currency, net in the account's
                assert r["Type"] == "Settled" and rate != 1, r


def test_stripe_payouts_balance(any_demo: DemoManifest) -> None:
    assert any_demo.settlement_files["stripe"]
    for path in any_demo.settlement_files["stripe"]:
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


def test_paypal_stl_footers(any_demo: DemoManifest) -> None:
    assert any_demo.settlement_files["paypal"]
    for path in any_demo.settlement_files["paypal"]:
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


def test_camt_balances_and_versions(any_demo: DemoManifest) -> None:
    versions = set()
    closing: dict[str, Decimal] = {}
    for path in any_demo.settlement_files["bank"]:  # sorted by name: account, then date
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


def test_every_psp_payout_is_one_bank_credit_same_day(any_demo: DemoManifest) -> None:
    credits: list[tuple[str, str, int, str, str]] = []  # (ccy, date, minor, ustrd, e2e)
    for path in any_demo.settlement_files["bank"]:
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
    for path in any_demo.settlement_files["adyen"]:
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
    for path in any_demo.settlement_files["stripe"]:
        for r in _csv_rows(path):
            if r["reporting_category"] == "payout":
                ccy = r["currency"].upper()
                payouts.append(
                    (ccy, r["available_on_utc"][:10], -to_minor(r["net"], ccy), f"STRIPE {r['source_id']}")
                )
    for path in any_demo.settlement_files["paypal"]:
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


def test_truth_has_one_row_per_record_and_allowed_values(any_demo: DemoManifest) -> None:
    truth = _truth(any_demo)
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
    assert set(settlement) == _data_rows(any_demo)
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
    config = _config_of(any_demo)
    lag = config.settlement_lag_days
    last = config.start + dt.timedelta(days=config.days - 1)
    for r in ledger:
        age = (last - dt.date.fromisoformat(r["business_date"])).days
        if r["status"] == "pending":
            assert age <= lag
        if r["exception_category"] == "missing_in_psp":
            assert age > lag


def test_match_groups(any_demo: DemoManifest) -> None:
    truth = _truth(any_demo)
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
        elif rule in GROUP_SHAPES:
            records = Counter(m["record"] for m in members)
            assert (records["ledger"], records["settlement"]) in GROUP_SHAPES[rule], (rule, members)
            assert {m["status"] for m in members} == {"matched"}
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


def test_matched_ledger_reference_is_in_its_settlement_row(any_demo: DemoManifest) -> None:
    """A ledger psp_reference is the PSP movement id on the row it matches (the matcher relies on it)."""
    events = {}
    for line in _events(any_demo):
        e = json.loads(line)
        events[e["transaction_id"]] = e
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for psp in ("adyen", "stripe"):
        for path in any_demo.settlement_files[psp]:
            rows |= {(path.name, i + 1): r for i, r in enumerate(_csv_rows(path))}
    for path in any_demo.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        sb = [dict(zip(lines[3][1:], line[1:], strict=True)) for line in lines if line[0] == "SB"]
        rows |= {(path.name, i + 1): r for i, r in enumerate(sb)}
    by_match: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in _truth(any_demo):
        if r["match_id"] and r["psp"] != "bank":
            by_match[r["match_id"]].append(r)
    checked = 0
    for members in by_match.values():
        led = [m for m in members if m["record"] == "ledger"]
        st = [m for m in members if m["record"] == "settlement"]
        if not led or not st:
            continue
        led.sort(key=lambda m: m["transaction_id"])  # a split booking's first booking is the PSP's order
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


def test_settlement_business_date_is_the_psp_booking_date(any_demo: DemoManifest) -> None:
    dates: dict[tuple[str, int], str] = {}
    for path in any_demo.settlement_files["adyen"]:
        dates |= {(path.name, i + 1): r["Creation Date"][:10] for i, r in enumerate(_csv_rows(path))}
    for path in any_demo.settlement_files["stripe"]:
        dates |= {(path.name, i + 1): r["available_on_utc"][:10] for i, r in enumerate(_csv_rows(path))}
    for path in any_demo.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        sb = [line for line in lines if line[0] == "SB"]
        dates |= {(path.name, i + 1): line[7][:10].replace("/", "-") for i, line in enumerate(sb)}
    for path in any_demo.settlement_files["bank"]:
        ns, root = _camt(path)
        entries = list(root.iter(f"{{{ns}}}Ntry"))
        dates |= {(path.name, i + 1): e.findtext(_q(ns, "BookgDt/Dt")) or "" for i, e in enumerate(entries)}
    for r in _truth(any_demo):
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


# ------------------------------------------------------------------------------------------------ newer rules


def _event_map(manifest: DemoManifest) -> dict[str, dict[str, Any]]:
    events = (json.loads(line) for line in _events(manifest))
    return {e["transaction_id"]: e for e in events if not e["event_id"].startswith("ev-bad")}


def _file_rows(manifest: DemoManifest) -> dict[tuple[str, int], dict[str, str]]:
    """Every PSP data row by (file name, 1-based row); PayPal rows are the SB lines under the CH header."""
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for psp in ("adyen", "stripe"):
        for path in manifest.settlement_files[psp]:
            rows |= {(path.name, i + 1): r for i, r in enumerate(_csv_rows(path))}
    for path in manifest.settlement_files["paypal"]:
        lines = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        sb = [dict(zip(lines[3][1:], line[1:], strict=True)) for line in lines if line[0] == "SB"]
        rows |= {(path.name, i + 1): r for i, r in enumerate(sb)}
    return rows


def _groups_of(truth: list[dict[str, str]], scenario: str) -> list[list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in truth:
        if r["scenario"] == scenario:
            groups[r["match_id"]].append(r)
    return list(groups.values())


def _split(members: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    led = sorted((m for m in members if m["record"] == "ledger"), key=lambda m: m["transaction_id"])
    return led, [m for m in members if m["record"] == "settlement"]


def _row(rows: dict[tuple[str, int], dict[str, str]], record: dict[str, str]) -> dict[str, str]:
    return rows[(record["source_file"], int(record["source_row"]))]


def test_new_scenarios_at_least_twice_at_low_rates(any_demo: DemoManifest) -> None:
    truth = _truth(any_demo)
    events = _event_map(any_demo)
    ledger = [r for r in truth if r["record"] == "ledger"]
    per_scenario = Counter(r["scenario"] for r in ledger)
    instances = {
        "split_capture": per_scenario["split_capture"],
        "split_booking": per_scenario["split_booking"] // 2,
        "cross_currency": per_scenario["cross_currency"],
        "cross_currency_net": per_scenario["cross_currency_net"],
        "refund_before_deposit_settles": sum(
            1
            for r in ledger
            if r["scenario"] == "refund_before_deposit_settles"
            and events[r["transaction_id"]]["kind"] == "refund"
        ),
        "chargeback_after_window": per_scenario["chargeback_after_window"],
    }
    for name in NEW_SCENARIOS:
        assert instances[name] >= 2, name
        assert any_demo.counts[f"scenario_{name}"] == sum(1 for r in truth if r["scenario"] == name)
        assert {r["status"] for r in truth if r["scenario"] == name} == {"matched"}, name
    deposits = Counter(e["psp"] for e in events.values() if e["kind"] == "deposit")
    assert per_scenario["split_capture"] <= 0.015 * deposits["adyen"]
    assert per_scenario["split_booking"] // 2 <= 0.01 * (deposits["adyen"] + deposits["paypal"])
    assert per_scenario["cross_currency"] <= 0.04 * deposits["stripe"]
    assert sum(per_scenario[name] for name in NEW_SCENARIOS) <= 0.05 * len(ledger)
    usual = per_scenario["exact"] + per_scenario["late_settlement"] + per_scenario["pending"]
    assert usual >= 0.85 * len(ledger)
    assert any_demo.counts["scenario_event_redelivery"] >= 2


def test_split_capture_truth(any_demo: DemoManifest) -> None:
    config = _config_of(any_demo)
    last = config.start + dt.timedelta(days=config.days - 1)
    truth, events, rows = _truth(any_demo), _event_map(any_demo), _file_rows(any_demo)
    groups = _groups_of(truth, "split_capture")
    assert len(groups) >= 2
    for members in groups:
        led, st = _split(members)
        assert len(led) == 1 and len(st) in (2, 3)
        assert {m["rule_id"] for m in members} == {"split_settlement"}
        assert {m["status"] for m in members} == {"matched"}
        event = events[led[0]["transaction_id"]]
        assert event["psp"] == "adyen" and event["kind"] == "deposit"
        ccy = event["currency"]
        captures = [_row(rows, m) for m in st]
        assert {r["Type"] for r in captures} == {"Settled"}
        assert {r["Psp Reference"] for r in captures} == {event["psp_reference"]}
        assert {r["Merchant Reference"] for r in captures} == {event["transaction_id"]}
        assert len({r["Modification Reference"] for r in captures}) == len(captures)
        assert {r["Gross Currency"] for r in captures} == {ccy}
        assert all(not r["Gross Debit (GC)"] for r in captures)
        parts = [to_minor(r["Gross Credit (GC)"], ccy) for r in captures]
        assert sum(parts) == event["amount_minor"] and all(0 < p < event["amount_minor"] for p in parts)
        booked = dt.date.fromisoformat(led[0]["business_date"])
        for m, r in zip(st, captures, strict=True):
            day = dt.date.fromisoformat(m["business_date"])
            assert m["business_date"] == r["Creation Date"][:10]
            assert booked <= day <= min(last, booked + dt.timedelta(days=config.settlement_lag_days))


def test_split_booking_truth(any_demo: DemoManifest) -> None:
    truth, events, rows = _truth(any_demo), _event_map(any_demo), _file_rows(any_demo)
    groups = _groups_of(truth, "split_booking")
    assert len(groups) >= 2
    psps = set()
    for members in groups:
        led, st = _split(members)
        assert len(led) == 2 and len(st) == 1
        assert {m["rule_id"] for m in members} == {"split_booking"}
        assert {m["status"] for m in members} == {"matched"}
        first, second = (events[m["transaction_id"]] for m in led)
        assert first["transaction_id"] != second["transaction_id"]
        for key in ("psp", "psp_reference", "currency", "kind", "player_id"):
            assert first[key] == second[key], key
        assert first["kind"] == "deposit" and first["psp"] in ("adyen", "paypal")
        psps.add(first["psp"])
        assert first["psp_reference"]
        ccy = first["currency"]
        row = _row(rows, st[0])
        if first["psp"] == "adyen":
            assert row["Type"] == "Settled" and row["Psp Reference"] == first["psp_reference"]
            assert row["Gross Currency"] == ccy
            settled = to_minor(row["Gross Credit (GC)"], ccy)
        else:
            assert (
                row["Transaction Event Code"] == "T0006" and row["Transaction ID"] == first["psp_reference"]
            )
            assert row["Gross Transaction Currency"] == ccy and row["Transaction Debit or Credit"] == "CR"
            settled = int(row["Gross Transaction Amount"]) // (100 if ccy == "JPY" else 1)
        assert first["amount_minor"] + second["amount_minor"] == settled
        assert settled not in (first["amount_minor"], second["amount_minor"])
    assert psps == {"adyen", "paypal"}
    # a duplicate booking is the other shape: equal amounts, each the settled amount
    by_ref: dict[str, list[int]] = defaultdict(list)
    for r in truth:
        if r["record"] == "ledger" and r["scenario"] == "duplicate_booking":
            event = events[r["transaction_id"]]
            by_ref[event["psp_reference"]].append(event["amount_minor"])
    assert by_ref and all(len(a) == 2 and a[0] == a[1] for a in by_ref.values())


def test_cross_currency_truth(any_demo: DemoManifest) -> None:
    truth, events, rows = _truth(any_demo), _event_map(any_demo), _file_rows(any_demo)
    groups = _groups_of(truth, "cross_currency")
    assert len(groups) >= 2
    eur_per_unit = {"SEK": Decimal(1) / Decimal("11.2"), "JPY": Decimal(1) / Decimal(160)}
    cross_rows = set()
    for members in groups:
        led, st = _split(members)
        assert len(led) == 1 and len(st) == 1
        assert {m["rule_id"] for m in members} == {"cross_currency"}
        assert {m["status"] for m in members} == {"matched"}
        event = events[led[0]["transaction_id"]]
        assert event["psp"] == "stripe" and event["kind"] == "deposit" and event["currency"] in eur_per_unit
        row = _row(rows, st[0])
        cross_rows.add((st[0]["source_file"], int(st[0]["source_row"])))
        assert row["reporting_category"] == "charge" and row["payment_intent_id"] == event["psp_reference"]
        assert row["currency"] == "eur"
        assert row["customer_facing_currency"] == event["currency"].lower()
        assert to_minor(row["customer_facing_amount"], event["currency"]) == event["amount_minor"]
        booked = Decimal(event["amount_minor"]).scaleb(-exponent(event["currency"]))
        ratio = Decimal(row["gross"]) / (booked * eur_per_unit[event["currency"]])
        assert Decimal("0.98") < ratio < Decimal("1.02")
    # every other Stripe row keeps customer_facing = gross in the row's own currency
    for key, row in rows.items():
        if key[0].startswith("stripe_") and key not in cross_rows and row["customer_facing_amount"]:
            assert row["customer_facing_amount"] == row["gross"]
            assert row["customer_facing_currency"] == row["currency"]


def test_cross_currency_net_truth(any_demo: DemoManifest) -> None:
    truth, events, rows = _truth(any_demo), _event_map(any_demo), _file_rows(any_demo)
    groups = _groups_of(truth, "cross_currency_net")
    assert len(groups) >= 2
    for members in groups:
        led, st = _split(members)
        assert len(led) == 1 and len(st) == 1
        assert {m["rule_id"] for m in members} == {"exact_ref"}
        event = events[led[0]["transaction_id"]]
        assert event["psp"] == "adyen" and event["kind"] == "deposit" and event["currency"] == "SEK"
        row = _row(rows, st[0])
        assert row["Type"] == "Settled" and row["Psp Reference"] == event["psp_reference"]
        assert (
            row["Gross Currency"] == "SEK"
            and to_minor(row["Gross Credit (GC)"], "SEK") == event["amount_minor"]
        )
        assert row["Net Currency"] == "EUR" and row["Merchant Account"] == "ExampleCasinoEUR"
        rate = Decimal(row["Exchange Rate"])
        assert Decimal("0.08") < rate < Decimal("0.1")
        fees = sum(
            _dec(row[c]) for c in ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")
        )
        gross_eur = (_dec(row["Gross Credit (GC)"]) * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert _dec(row["Net Credit (NC)"]) == gross_eur - fees


def test_refund_before_deposit_settles_truth(any_demo: DemoManifest) -> None:
    truth, events, rows = _truth(any_demo), _event_map(any_demo), _file_rows(any_demo)
    by_tx = {r["transaction_id"]: r for r in truth if r["record"] == "ledger"}
    settlement_of = {
        r["match_id"]: r
        for r in truth
        if r["record"] == "settlement" and r["match_id"] and r["psp"] != "bank"
    }
    refunds = [
        r
        for r in truth
        if r["record"] == "ledger"
        and r["scenario"] == "refund_before_deposit_settles"
        and events[r["transaction_id"]]["kind"] == "refund"
    ]
    assert len(refunds) >= 2
    for refund in refunds:
        event = events[refund["transaction_id"]]
        deposit = by_tx[event["original_transaction_id"]]
        assert deposit["scenario"] == "refund_before_deposit_settles"
        for r in (refund, deposit):
            assert r["status"] == "matched" and r["rule_id"] == "exact_ref"
        assert refund["match_id"] != deposit["match_id"]
        r_row, d_row = settlement_of[refund["match_id"]], settlement_of[deposit["match_id"]]
        assert r_row["rule_id"] == d_row["rule_id"] == "exact_ref"
        assert deposit["business_date"] <= refund["business_date"]
        assert r_row["business_date"] < d_row["business_date"]
        deposit_event = events[deposit["transaction_id"]]
        occurred = [
            dt.datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) for e in (deposit_event, event)
        ]
        assert occurred[0] < occurred[1]
        assert _row(rows, r_row)  # both rows exist in the files
        assert _row(rows, d_row)


def test_chargeback_after_window_truth(any_demo: DemoManifest) -> None:
    config = _config_of(any_demo)
    truth, events = _truth(any_demo), _event_map(any_demo)
    by_tx = {r["transaction_id"]: r for r in truth if r["record"] == "ledger"}
    late = [r for r in truth if r["record"] == "ledger" and r["scenario"] == "chargeback_after_window"]
    assert len(late) >= 2
    kinds = Counter(events[r["transaction_id"]]["kind"] for r in late)
    assert kinds["chargeback"] >= 2 and kinds["chargeback_reversal"] >= 1
    for r in late:
        event = events[r["transaction_id"]]
        deposit = by_tx[event["original_transaction_id"]]
        age = dt.date.fromisoformat(r["business_date"]) - dt.date.fromisoformat(deposit["business_date"])
        assert age.days > config.settlement_lag_days
        assert r["status"] == "matched" and r["rule_id"] == "exact_ref"
        group = [m for m in truth if m["match_id"] == r["match_id"]]
        assert sorted(m["record"] for m in group) == ["ledger", "settlement"]


def test_every_file_parses_and_rows_match_truth(any_demo: DemoManifest) -> None:
    truth = _truth(any_demo)
    events = _event_map(any_demo)
    per_file = Counter((r["psp"], r["source_file"]) for r in truth if r["record"] == "settlement")
    scenario_of = {(r["source_file"], int(r["source_row"])): r for r in truth if r["record"] == "settlement"}
    ledger_of = {r["match_id"]: r for r in truth if r["record"] == "ledger" and r["match_id"]}
    parsed_rows = 0
    for psp, paths in any_demo.settlement_files.items():
        for path in paths:
            frame = parse_as(psp, path.read_bytes(), path.name)
            assert frame.height == per_file[(psp, path.name)], path.name
            assert frame["source_row"].to_list() == list(range(1, frame.height + 1))
            parsed_rows += frame.height
            for line in frame.iter_rows(named=True):
                t = scenario_of[(path.name, line["source_row"])]
                if t["scenario"] not in ("cross_currency", "cross_currency_net"):
                    continue
                event = events[ledger_of[t["match_id"]]["transaction_id"]]
                if t["scenario"] == "cross_currency":
                    assert (line["currency"], line["net_currency"]) == ("EUR", "EUR")
                    assert line["presentment_amount_minor"] == event["amount_minor"]
                    assert line["presentment_currency"] == event["currency"]
                else:
                    assert line["amount_minor"] == event["amount_minor"]
                    assert (line["currency"], line["net_currency"]) == ("SEK", "EUR")
    assert parsed_rows == sum(per_file.values())


# ------------------------------------------------------------------------------------------------ scale


def test_scale_smoke(tmp_path: Path) -> None:
    manifest = generate(tmp_path, DemoConfig(seed=5, days=2, transactions_per_day=20_000, invalid_events=3))
    assert manifest.counts["ledger_records"] > 35_000
    truth = pl.read_csv(manifest.ground_truth_file, infer_schema_length=0)
    assert truth.filter(pl.col("record") == "ledger").height == manifest.counts["ledger_records"]
    assert sum(1 for _ in manifest.events_file.open()) == manifest.counts["event_lines"]
