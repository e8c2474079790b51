"""The command-line contract on bad and repeated input: clear errors, quarantine, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECON = str(Path(sys.executable).with_name("recon"))

ADYEN_HEADER = (
    "Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,"
    "Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,"
    "Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),"
    "Payment Method Variant,Modification Merchant Reference,Batch Number,Reserved4,Reserved5,Reserved6,"
    "Reserved7,Reserved8,Reserved9,Reserved10"
)
ADYEN_ROWS = [
    "ExampleCo,ExampleCasinoEUR,Q1W2E3R4T5Y6U7I8,dep-000101,visa,2026-03-02 10:15:00,CET,Settled,"
    "A1S2D3F4G5H6J7K8,EUR,,100.00,1,EUR,,98.10,,0.60,0.30,1.00,visaclassic,,812,,,,,,,",
    "ExampleCo,ExampleCasinoEUR,Z9X8C7V6B5N4M3L2,dep-000102,mc,2026-03-02 11:00:00,CET,Refunded,"
    "P0O9I8U7Y6T5R4E3,EUR,20.00,,1,EUR,20.00,,,,,,mcstandardcredit,wd-000077,812,,,,,,,",
    "ExampleCo,ExampleCasinoEUR,,,,2026-03-04 06:00:00,CET,MerchantPayout,"
    '"TX0000000001XT batch 812, ExampleCasinoEUR",EUR,,,,EUR,78.10,,,,,,,,812,,,,,,,',
]


def adyen_text(rows: list[str]) -> str:
    return "\n".join([ADYEN_HEADER, *rows]) + "\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "RECON_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "COLUMNS": "250",
    }
    environment.pop("RECON_DATABASE_URL", None)
    return environment


def recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECON, *args], env=env, capture_output=True, check=False, text=True, timeout=300)


def test_a_malformed_adyen_row_is_refused_naming_file_row_and_field(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = ADYEN_ROWS.copy()
    bad[1] = bad[1].replace("EUR,20.00,,1,EUR,20.00", "EUR,20.00,,1,EUR,20.0.0")
    src = tmp_path / "settlement_detail_report_batch_812.csv"
    src.write_text(adyen_text(bad))
    done = recon(env, "ingest", str(src), "--psp", "adyen")
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "settlement_detail_report_batch_812.csv" in message
    assert "row 2" in message and "Net Debit (NC)" in message and "20.0.0" in message
    data = Path(env["RECON_DATA_DIR"])
    quarantined = data / "quarantine" / "adyen" / src.name
    assert quarantined.read_bytes() == src.read_bytes()
    reason = json.loads((quarantined.parent / (src.name + ".reason.json")).read_text())
    assert reason["row"] == 2 and reason["field"] == "Net Debit (NC)" and reason["hint"]
    # Nothing reached landing or the lake.
    assert not any((data / "landing" / "settlements").rglob("*.csv"))
    assert not any((data / "lake").rglob("*.parquet"))


def test_a_file_that_is_not_what_psp_says_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "stripe.csv"
    src.write_text(
        "automatic_payout_id,automatic_payout_effective_at_utc,balance_transaction_id,created_utc,"
        "available_on_utc,currency,gross,fee,net,reporting_category,source_id,description\n"
        "po_1,2026-03-05 00:00:00,txn_1,2026-03-02 10:15:00,2026-03-04 00:00:00,eur,100.00,1.65,98.35,"
        "charge,ch_1,Deposit\n"
    )
    done = recon(env, "ingest", str(src), "--psp", "adyen")
    assert done.returncode == 1
    assert "Stripe" in done.stderr and "--psp stripe" in " ".join(done.stderr.split())


def test_accepted_once_then_recognised_by_checksum_and_by_batch(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "settlement_detail_report_batch_812.csv"
    src.write_text(adyen_text(ADYEN_ROWS))
    first = recon(env, "ingest", str(src), "--psp", "adyen")
    assert first.returncode == 0, first.stderr
    assert "accepted" in first.stdout
    again = recon(env, "ingest", str(src), "--psp", "adyen")
    assert again.returncode == 0 and "duplicate" in again.stdout
    renamed = tmp_path / "settlement_detail_report_batch_812_resent.csv"
    renamed.write_text(adyen_text(ADYEN_ROWS).replace("\n", "\r\n"))  # same batch, other bytes and name
    resent = recon(env, "ingest", str(renamed), "--psp", "adyen")
    assert resent.returncode == 0 and "already ingested" in " ".join(resent.stdout.split())
    landed = list((Path(env["RECON_DATA_DIR"]) / "landing" / "settlements" / "adyen").iterdir())
    assert [p.name for p in landed] == [src.name]


def test_land_names_the_bad_event_and_lands_the_rest(env: dict[str, str], tmp_path: Path) -> None:
    good = {
        "event_id": "e1",
        "transaction_id": "t1",
        "psp": "adyen",
        "kind": "deposit",
        "amount_minor": 100,
        "currency": "EUR",
        "occurred_at": "2026-03-02T10:00:00Z",
        "player_id": "p",
        "brand": "b",
        "jurisdiction": "MT",
    }
    bad = {**good, "event_id": "e2", "currency": "euro"}
    src = tmp_path / "events.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    done = recon(env, "land", "--from-jsonl", str(src))
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "events.jsonl, row 2, field 'currency'" in message
    assert "Landed 1 events" in done.stdout
    assert list((Path(env["RECON_DATA_DIR"]) / "quarantine" / "transactions").glob("*.rejects.jsonl"))
