"""Whole-file guarantees of ingestion: every bad file is refused whole, quarantined with a
machine-readable reason, and nothing of it reaches landing or the lake; tolerated variants are accepted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from reconciliation_pipeline.ingest import ingest_file
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.store import db
from tests.examples import ADYEN_EXAMPLE, CAMT_V08_EXAMPLE, PAYPAL_EXAMPLE, STRIPE_EXAMPLE

ADYEN_LINES = ADYEN_EXAMPLE.splitlines()


def adyen(transform: Callable[[list[str]], list[str]]) -> bytes:
    return ("\n".join(transform(ADYEN_LINES.copy())) + "\n").encode()


def drop_column(lines: list[str], name: str) -> list[str]:
    import csv
    import io

    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    index = rows[0].index(name)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([r[:index] + r[index + 1 :] for r in rows])
    return out.getvalue().splitlines()


XML_BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>&lol3;</BkToCstmrStmt></Document>'
)

# name | psp | content | expected field in the reason (None: file-level)
BAD: list[tuple[str, str, bytes, str | None]] = [
    ("empty", "adyen", b"", None),
    ("header_only", "adyen", (ADYEN_LINES[0] + "\n").encode(), None),
    ("truncated_last_line", "adyen", ("\n".join(ADYEN_LINES)[:-40]).encode(), "Modification Reference"),
    ("missing_column", "adyen", adyen(lambda ls: drop_column(ls, "Net Currency")), "Net Currency"),
    (
        "non_utf8",
        "adyen",
        adyen(lambda ls: [*ls[:2], ls[2].replace("mc", "m\xe7")]).replace(b"m\xc3\xa7", b"m\xe7"),
        None,
    ),
    (
        "unknown_currency",
        "adyen",
        adyen(lambda ls: [ls[0], ls[1].replace(",EUR,", ",EUX,")]),
        "Gross Currency",
    ),
    (
        "wrong_date_format",
        "adyen",
        adyen(lambda ls: [ls[0], ls[1].replace("2026-03-02 10:15:00", "02.03.2026 10:15")]),
        "Creation Date",
    ),
    (
        "too_many_decimals",
        "adyen",
        adyen(lambda ls: [ls[0], ls[1].replace("100.00", "100.001")]),
        "Gross Credit (GC)",
    ),
    (
        "control_total",
        "adyen",
        adyen(lambda ls: [*ls[:-1], ls[-1].replace("EUR,10.00", "EUR,10.01")]),
        "Net Debit (NC)",
    ),
    ("stripe_net_mismatch", "stripe", STRIPE_EXAMPLE.replace("98.35", "98.36").encode(), "net"),
    (
        "paypal_footer_total",
        "paypal",
        PAYPAL_EXAMPLE.replace('"SF","EUR",10000', '"SF","EUR",10001').encode(),
        None,
    ),
    (
        "xml_wrong_namespace",
        "bank",
        CAMT_V08_EXAMPLE.replace("camt.053.001.08", "camt.052.001.08").encode(),
        None,
    ),
    ("xml_bomb", "bank", XML_BOMB.encode(), None),
    ("xml_truncated", "bank", CAMT_V08_EXAMPLE[:-200].encode(), None),
    ("not_what_psp_says", "adyen", STRIPE_EXAMPLE.encode(), None),
]

GOOD: list[tuple[str, str, bytes]] = [
    ("utf8_bom", "adyen", b"\xef\xbb\xbf" + ADYEN_EXAMPLE.encode()),
    ("crlf", "adyen", ADYEN_EXAMPLE.replace("\n", "\r\n").encode()),
    (
        "reordered_and_added_columns",
        "adyen",
        adyen(
            lambda ls: [
                f"{line},Merchant Order Reference" if i == 0 else f"{line},ord-{i}"
                for i, line in enumerate(ls)
            ]
        ),
    ),
    ("paypal_bom", "paypal", b"\xef\xbb\xbf" + PAYPAL_EXAMPLE.encode()),
    ("stripe", "stripe", STRIPE_EXAMPLE.encode()),
    ("camt", "bank", CAMT_V08_EXAMPLE.encode()),
]


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    return lake


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    db.migrate(engine)
    return engine


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("name", "psp", "content", "field"), BAD, ids=[case[0] for case in BAD])
def test_bad_file_is_quarantined_whole_with_a_reason(
    lake: Lake, engine: Engine, tmp_path: Path, name: str, psp: str, content: bytes, field: str | None
) -> None:
    src = tmp_path / f"{name}.{'xml' if psp == 'bank' else 'csv'}"
    src.write_bytes(content)
    outcome = ingest_file(src, psp=psp, lake=lake, engine=engine)
    assert outcome.status == "quarantined", outcome.message
    assert outcome.problem is not None and outcome.problem.file == src.name
    assert outcome.problem.hint
    if field is not None:
        assert outcome.problem.field == field, outcome.message
    assert outcome.path is not None and outcome.path.read_bytes() == content
    reason = json.loads(outcome.path.with_name(outcome.path.name + ".reason.json").read_text())
    assert {"file", "row", "field", "value", "message", "hint", "sha256", "psp"} <= set(reason)
    assert files_under(lake.landing) == [] and files_under(lake.lake) == []


@pytest.mark.parametrize(("name", "psp", "content"), GOOD, ids=[case[0] for case in GOOD])
def test_tolerated_variants_are_accepted(
    lake: Lake, engine: Engine, tmp_path: Path, name: str, psp: str, content: bytes
) -> None:
    src = tmp_path / f"{name}.{'xml' if psp == 'bank' else 'csv'}"
    src.write_bytes(content)
    outcome = ingest_file(src, psp=psp, lake=lake, engine=engine)
    assert outcome.status == "accepted", outcome.message
    assert outcome.rows > 0 and outcome.path is not None and outcome.path.read_bytes() == content
    assert files_under(lake.quarantine) == []


def test_bom_and_crlf_parse_to_the_same_lines_as_the_plain_file(
    lake: Lake, engine: Engine, tmp_path: Path
) -> None:
    from reconciliation_pipeline.formats import registry

    plain = registry.parse_as("adyen", ADYEN_EXAMPLE.encode(), "x.csv")
    for variant in (b"\xef\xbb\xbf" + ADYEN_EXAMPLE.encode(), ADYEN_EXAMPLE.replace("\n", "\r\n").encode()):
        parsed = registry.parse_as("adyen", variant, "x.csv")
        assert parsed.drop("file_sha256").equals(plain.drop("file_sha256"))
