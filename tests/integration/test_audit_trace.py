"""``recon audit trace`` on a small demo: every step of one transaction, from its Kafka offset to the
partner API's dispute, reconstructed from the platform's own data.

The demo generator's events go through librdkafka's mock cluster and the real lander; settlement files
through ingestion; four business dates through the pipeline's publish step (the functions the Dagster
assets call), which also anchors the chain's head after each run.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from reconciliation_pipeline import pipeline
from reconciliation_pipeline.demo.generator import DemoConfig, generate
from reconciliation_pipeline.ingest import ingest_file
from reconciliation_pipeline.kafka_lander import land_from_kafka
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.store import ExceptionItem, Outcome, SettlementLine, Transaction, db
from reconciliation_pipeline.store.anchors import anchors_path, read_anchors

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_helpers as kh

pytestmark = pytest.mark.kafka
RECON = str(Path(sys.executable).with_name("recon"))


def recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECON, *args], env=env, capture_output=True, text=True, check=False, timeout=300)


def test_trace_reconstructs_a_demo_transaction_end_to_end(tmp_path: Path) -> None:
    cfg = DemoConfig(seed=5, days=4, transactions_per_day=40)
    manifest = generate(tmp_path / "demo-input", cfg)
    data = tmp_path / "data"
    lake = Lake(data)
    lake.ensure()
    cluster = kh.MockCluster()
    try:
        topic = cluster.new_topic("trace")
        lines = manifest.events_file.read_text(encoding="utf-8").splitlines()
        kh.produce(cluster.bootstrap, topic, [line.encode() for line in lines if line.strip()])
        stats = land_from_kafka(
            bootstrap_servers=cluster.bootstrap,
            topic=topic,
            group_id="trace",
            lake=lake,
            tz=cfg.business_tz,
            until_idle=1.5,
            consumer_config=cluster.consumer_config,
        )
        assert stats.landed > 0
    finally:
        cluster.close()
    settings = Settings(data_dir=data, database_url=None)
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    for psp, files in manifest.settlement_files.items():
        for path in files:
            ingest_file(path, psp=psp, lake=lake, engine=engine, actor="test ingest")
    runs = []
    for n in range(cfg.days + cfg.settlement_lag_days):
        day = cfg.start + dt.timedelta(days=n)
        pipeline.build_ledger(lake, day, cfg.business_tz)
        pipeline.build_settlement_lines(lake, day)
        pipeline.run_reconciliation(lake, day, settings)
        chain = {
            "run_id": f"run-{day}",
            "asset": "outcomes",
            "partition": day.isoformat(),
            "code_version": "t",
        }
        pipeline.publish_outcomes(lake, engine, day, chain=chain, actor="dagster")
        runs.append(f"run-{day}")

    # every run anchored the head outside the database
    anchors = read_anchors(anchors_path(data))
    assert [a.run_id for a in anchors] == runs
    env = {**os.environ, "RECON_DATA_DIR": str(data), "COLUMNS": "300", "RECON_OPERATOR": "bob@operator"}
    env.pop("RECON_DATABASE_URL", None)
    verified = recon(env, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"{len(runs)} anchors" in verified.stdout

    # a transaction that settled for another amount: exception, resolved by an operator, disputed
    with db.session_scope(engine) as s:
        out = s.scalars(
            select(Outcome)
            .where(Outcome.record == "ledger", Outcome.exception_category == "amount_mismatch")
            .order_by(Outcome.transaction_id)
        ).first()
        assert out is not None and out.match_id is not None and out.transaction_id is not None
        tx_id = out.transaction_id
        txn = s.get(Transaction, tx_id)
        assert txn is not None and txn.kafka_topic == topic and txn.kafka_offset is not None
        line_outcome = s.scalars(
            select(Outcome).where(Outcome.match_id == out.match_id, Outcome.record == "settlement")
        ).first()
        assert line_outcome is not None
        line = s.get(SettlementLine, line_outcome.record_key)
        assert line is not None
        exc = s.scalars(select(ExceptionItem).where(ExceptionItem.record_key == f"ledger:{tx_id}")).one()
        kafka = (txn.kafka_topic, txn.kafka_partition, txn.kafka_offset, txn.landed_file)
        settled = (line.source_file, line.source_row, line.file_sha256)
        rule_id, exc_id = out.rule_id, exc.id

    done = recon(
        env, "exceptions", "resolve", str(exc_id), "--code", "psp_corrected", "--note", "fee withheld"
    )
    assert done.returncode == 0, done.stderr

    from partner_api import service as partner_service

    with db.session_scope(engine) as s:
        partner, _ = partner_service.create_partner(s, name="PSP ops", psp=txn.psp, brand=None, actor="test")
        txn_row = s.get(Transaction, tx_id)
        assert txn_row is not None
        dispute = partner_service.raise_dispute(
            s,
            partner_id=partner.partner_id,
            actor=f"partner:{partner.partner_id}",
            transaction=txn_row,
            reason="amount_mismatch",
            amount_minor=txn_row.amount_minor,
            note="we paid the full amount",
            trace_id="ab" * 16,
        )
        dispute_id = dispute.dispute_id

    traced = recon(env, "audit", "trace", tx_id)
    assert traced.returncode == 0, traced.stderr
    text = traced.stdout
    topic_, partition, offset, landed = kafka
    # 1. booked: the Kafka offset and the landed file, the ledger batch that stored it
    assert f"topic {topic_} partition {partition} offset {offset}" in text
    assert f"landed file: {landed}" in text
    assert "stored by ledger batch event seq" in text
    # 2. settled: the PSP file and row, and how the file arrived
    assert f"file {settled[0]} row {settled[1]}" in text
    assert settled[2] in text and "file.accepted by test ingest" in text
    # 3. the rule
    assert f"rule {rule_id}" in text and "amount_mismatch" in text
    # 4. every outcome it had
    assert "outcome.written" in text and "exception.opened" in text
    # 5. exceptions and their resolutions
    assert f"#{exc_id} amount_mismatch" in text and "psp_corrected by bob@operator" in text
    assert "exception.resolved" in text
    # 6. API calls about it
    assert "dispute.raised" in text and dispute_id in text and f"partner:{partner.partner_id}" in text

    unknown = recon(env, "audit", "trace", "tx-does-not-exist")
    assert unknown.returncode == 1 and "not known" in unknown.stderr
    # and the whole trail still verifies, anchors included
    assert recon(env, "audit", "verify").returncode == 0
