"""One trace per payment, pipeline spans, JSON logs and the pipeline's Prometheus metrics, end to end.

A transaction event lands with its trace id, a PSP file settles it, Dagster reconciles and publishes the
business date on a real store (SQLite and PostgreSQL): the payment's trace id must then be on its
outcome (and on the settlement record it matched), on its audit events, and in the partner API's
answer for the transaction.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from reconciliation_pipeline import metrics, pipeline, telemetry
from reconciliation_pipeline.defs.assets import ASSETS
from reconciliation_pipeline.defs.resources import ReconResource
from reconciliation_pipeline.ingest import ingest_file
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.landing import land_jsonl
from reconciliation_pipeline.store import db, service
from reconciliation_pipeline.store.models import AuditEvent, Outcome
from tests.integration.api_fixtures import Api, build_api, make_settings, store_urls  # noqa: F401 - fixture
from tests.integration.test_cli import ADYEN_HEADER

DAY = dt.date(2026, 3, 2)
MATCHED_TRACE = "a1" * 16
MISMATCH_TRACE = "c3" * 16
ADYEN_ROWS = [
    # settles dep-000101 exactly
    "ExampleCo,ExampleCasinoEUR,Q1W2E3R4T5Y6U7I8,dep-000101,visa,2026-03-02 10:15:00,CET,Settled,"
    "A1S2D3F4G5H6J7K8,EUR,,100.00,1,EUR,,98.10,,0.60,0.30,1.00,visaclassic,,812,,,,,,,",
    # settles dep-000103 for 60.00 where 50.00 was booked: amount_mismatch on both records
    "ExampleCo,ExampleCasinoEUR,R1W2E3R4T5Y6U7I9,dep-000103,visa,2026-03-02 10:20:00,CET,Settled,"
    "B1S2D3F4G5H6J7K8,EUR,,60.00,1,EUR,,58.10,,0.60,0.30,1.00,visaclassic,,812,,,,,,,",
]
SETTLEMENT_FILE = "settlement_detail_report_batch_812.csv"


def _event(n: int, reference: str, amount_minor: int, trace_id: str | None) -> dict[str, object]:
    return {
        "event_id": f"ev-{n}",
        "transaction_id": f"dep-{n:06d}",
        "psp": "adyen",
        "psp_reference": reference,
        "kind": "deposit",
        "amount_minor": amount_minor,
        "currency": "EUR",
        "occurred_at": "2026-03-02T09:15:00Z",
        "player_id": "player-1",
        "brand": "casino-a",
        "jurisdiction": "MT",
        "trace_id": trace_id,
    }


@pytest.fixture
def memory_spans() -> Iterator[telemetry.MemorySpanExporter]:
    installed = telemetry.setup_telemetry("recon-test", exporter="memory")
    assert installed.memory is not None
    installed.memory.clear()
    metrics.reset()
    yield installed.memory
    installed.memory.clear()


@pytest.fixture
def api(store_urls: tuple[str, str], tmp_path: Path) -> Iterator[Api]:  # noqa: F811 - the fixture above
    yield from build_api(make_settings(tmp_path, *store_urls))


def _reconcile_one_day(api: Api, tmp_path: Path) -> Lake:
    """Land two events, ingest one Adyen file, materialise every asset of the day on the live store."""
    data = Path(api.settings.data_dir)
    lake = Lake(data.resolve())
    lake.ensure()
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in [
                _event(101, "Q1W2E3R4T5Y6U7I8", 10_000, MATCHED_TRACE),
                _event(103, "R1W2E3R4T5Y6U7I9", 5_000, MISMATCH_TRACE),
                _event(104, "NOSETTLEMENT0001", 7_000, None),
            ]
        )
    )
    landed = land_jsonl(events, lake=lake, tz="Europe/Malta")
    assert landed.landed == 3
    settlement = tmp_path / SETTLEMENT_FILE
    settlement.write_text("\n".join([ADYEN_HEADER, *ADYEN_ROWS]) + "\n")
    ingested = ingest_file(settlement, psp="adyen", lake=lake, engine=api.engines["live"])
    assert ingested.status == "accepted", ingested.message
    resource = ReconResource(data_dir=str(data), database_url=api.settings.db_url)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, partition_key=DAY.isoformat(), instance=instance, resources={"recon": resource}
        )
        assert result.success
    return lake


def test_a_payments_trace_id_is_on_its_outcome_audit_events_and_api_answer(
    api: Api, tmp_path: Path, memory_spans: telemetry.MemorySpanExporter
) -> None:
    lake = _reconcile_one_day(api, tmp_path)
    settled = f"settlement:adyen:{SETTLEMENT_FILE}:1"
    mismatched = f"settlement:adyen:{SETTLEMENT_FILE}:2"

    with db.session_scope(api.engines["live"]) as session:
        traces = dict(session.execute(select(Outcome.record_key, Outcome.trace_id)).tuples().all())
        events = session.execute(
            select(AuditEvent.action, AuditEvent.entity_id, AuditEvent.trace_id).order_by(AuditEvent.seq)
        ).all()

    # the outcome of each payment, and the settlement record it matched, carry the payment's trace id
    assert traces["ledger:dep-000101"] == MATCHED_TRACE
    assert traces[settled] == MATCHED_TRACE
    assert traces["ledger:dep-000103"] == MISMATCH_TRACE
    assert traces[mismatched] == MISMATCH_TRACE
    assert traces["ledger:dep-000104"] is None  # booked without a trace id: none is invented

    # every audit event about those records carries it too: outcome written, exception opened
    def trace_of(action: str, entity: str) -> list[str | None]:
        return [t for a, e, t in events if a == action and e == entity]

    assert trace_of("outcome.written", "ledger:dep-000101") == [MATCHED_TRACE]
    assert trace_of("outcome.written", settled) == [MATCHED_TRACE]
    assert trace_of("outcome.written", "ledger:dep-000103") == [MISMATCH_TRACE]
    assert trace_of("exception.opened", "ledger:dep-000103") == [MISMATCH_TRACE]
    assert trace_of("exception.opened", mismatched) == [MISMATCH_TRACE]

    # batch events carry the trace of the publish span that wrote them, which the exporter received
    publish = [s for s in memory_spans.get_finished_spans() if s.name == "recon.publish"]
    assert len(publish) == 1 and publish[0].context is not None
    publish_trace = format(publish[0].context.trace_id, "032x")
    assert [t for a, _, t in events if a == "ledger.upserted"] == [publish_trace]
    # and a record of no known payment falls back to it in the audit trail, not on the outcome
    assert trace_of("outcome.written", "ledger:dep-000104") == [publish_trace]

    # the partner API answers with the payment's trace id
    key = api.partner(psp="adyen")
    answer = api.get("/v1/transactions/dep-000101", key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["trace_id"] == MATCHED_TRACE
    assert answer.json()["status"] == "matched"

    # the API's /metrics serves the store's state beside its own request metrics
    scraped = {
        (f.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(api.client.get("/metrics").text)
        for s in f.samples
    }
    assert scraped[("recon_records", (("record", "ledger"), ("status", "matched")))] == 1
    assert scraped[("recon_open_exceptions_oldest_age_days", ())] >= 0

    # spans of every step, each with its business date or source
    names = [s.name for s in memory_spans.get_finished_spans()]
    for step in ("recon.land_file", "recon.ingest", "recon.reconcile", "recon.publish"):
        assert names.count(step) == 1, names
    reconcile = next(s for s in memory_spans.get_finished_spans() if s.name == "recon.reconcile")
    assert reconcile.attributes is not None and reconcile.attributes["business_date"] == DAY.isoformat()
    assert (
        publish[0].attributes is not None and publish[0].attributes["dagster.run_id"]
    )  # the run it belongs to

    # the run metrics are in the lake as text exposition files, one per step, with what the run did
    exposed = _read_textfiles(lake.root / "metrics")
    assert set(exposed) == {"land_file", "ingest", "reconcile", "publish"}
    reconciled = {
        (s.labels["record"], s.labels["status"]): s.value
        for s in exposed["reconcile"]["recon_pipeline_records_reconciled"]
    }
    assert reconciled == {
        ("ledger", "matched"): 1,
        ("ledger", "exception"): 1,
        ("ledger", "pending"): 1,
        ("settlement", "matched"): 1,
        ("settlement", "exception"): 1,
    }
    published = {s.labels["action"]: s.value for s in exposed["publish"]["recon_pipeline_records_published"]}
    assert published["inserted"] == 5 and published["exceptions_opened"] == 2
    landing = {s.labels["result"]: s.value for s in exposed["land_file"]["recon_landing_events"]}
    assert landing == {"landed": 3, "dead_lettered": 0}
    success = exposed["publish"]["recon_pipeline_step_last_success_timestamp_seconds"]
    assert [s.labels for s in success] == [{"step": "publish"}]


def test_accuracy_measured_against_a_ground_truth_is_exported(
    api: Api, tmp_path: Path, memory_spans: telemetry.MemorySpanExporter
) -> None:
    lake = _reconcile_one_day(api, tmp_path)
    with db.session_scope(api.engines["live"]) as session:
        export = service.export_outcomes(session)
    # the truth says dep-000104 (pending here) was settled: 4 of 5 records right
    truth = export.with_columns(
        status=pl.when(pl.col("transaction_id") == "dep-000104").then(pl.lit("matched")).otherwise("status")
    )
    truth_file = tmp_path / "truth.csv"
    truth.write_csv(truth_file)
    settings = api.settings.model_copy(update={"ground_truth": truth_file})
    accuracy = pipeline.record_accuracy(lake, DAY, settings)
    assert accuracy is not None and accuracy.overall == pytest.approx(0.8)
    exposed = _read_textfiles(lake.root / "metrics")["accuracy"]
    assert [s.value for s in exposed["recon_pipeline_accuracy_ratio"]] == [pytest.approx(0.8)]


def _read_textfiles(folder: Path) -> dict[str, dict[str, list]]:  # type: ignore[type-arg]
    out: dict[str, dict[str, list]] = {}  # type: ignore[type-arg]
    for path in sorted(folder.glob("*.prom")):
        families = {f.name: f.samples for f in text_string_to_metric_families(path.read_text())}
        assert set(families) <= metrics.metric_names(), f"{path.name} exports undefined metrics"
        out[path.stem] = families
    return out


def test_a_step_that_fails_records_the_failure_and_the_span_error(
    tmp_path: Path, memory_spans: telemetry.MemorySpanExporter
) -> None:
    lake = Lake((tmp_path / "lake").resolve())
    with pytest.raises(RuntimeError), telemetry.step_span("publish", metrics_dir=lake.root / "metrics"):
        raise RuntimeError("store down")
    span = next(s for s in memory_spans.get_finished_spans() if s.name == "recon.publish")
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]
    exposed = _read_textfiles(lake.root / "metrics")["publish"]
    assert "recon_pipeline_step_last_failure_timestamp_seconds" in exposed
    assert "recon_pipeline_step_last_success_timestamp_seconds" not in exposed


def test_json_logs_carry_the_trace_and_span_of_the_current_span(
    memory_spans: telemetry.MemorySpanExporter,
) -> None:
    stream = io.StringIO()
    handler = telemetry.configure_logging("INFO", json_format=True, stream=stream)
    try:
        log = logging.getLogger("reconciliation_pipeline.test")
        log.info("outside any span")
        with telemetry.tracer().start_as_current_span("work") as span:
            log.warning("inside %s", "the span", extra={"business_date": "2026-03-02"})
        try:
            raise ValueError("bad row")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [x["message"] for x in lines] == ["outside any span", "inside the span", "failed"]
    assert "trace_id" not in lines[0]
    ctx = span.get_span_context()
    assert lines[1]["trace_id"] == format(ctx.trace_id, "032x")
    assert lines[1]["span_id"] == format(ctx.span_id, "016x")
    assert lines[1]["level"] == "WARNING" and lines[1]["business_date"] == "2026-03-02"
    assert "ValueError: bad row" in lines[2]["exception"]


def test_an_unknown_exporter_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="memory, console, otlp, none"):
        telemetry.exporter_name("jaeger")


def test_the_store_collector_reports_records_and_open_exceptions_by_age(
    api: Api, tmp_path: Path, memory_spans: telemetry.MemorySpanExporter
) -> None:
    _reconcile_one_day(api, tmp_path)
    registry = CollectorRegistry()
    registry.register(metrics.StoreCollector(api.engines["live"], business_tz="Europe/Malta", ttl_seconds=0))
    records = {
        (labels["record"], labels["status"]): value
        for name, labels, value in _samples(registry)
        if name == "recon_records"
    }
    assert records == {
        ("ledger", "matched"): 1,
        ("ledger", "exception"): 1,
        ("ledger", "pending"): 1,
        ("settlement", "matched"): 1,
        ("settlement", "exception"): 1,
    }
    today = dt.datetime.now(ZoneInfo("Europe/Malta")).date()
    age = metrics.age_bucket((today - DAY).days)
    open_exc = {
        (labels["category"], labels["age"]): value
        for name, labels, value in _samples(registry)
        if name == "recon_open_exceptions"
    }
    assert open_exc == {("amount_mismatch", age): 2}
    oldest = [v for n, _, v in _samples(registry) if n == "recon_open_exceptions_oldest_age_days"]
    assert oldest == [(today - DAY).days]
    updated = [v for n, _, v in _samples(registry) if n == "recon_outcomes_last_update_timestamp_seconds"]
    assert updated and updated[0] > 0


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]


@pytest.mark.parametrize(
    ("days", "bucket"), [(0, "0-1d"), (1, "0-1d"), (2, "2-3d"), (7, "4-7d"), (8, "8-30d"), (31, "31d+")]
)
def test_age_buckets_cover_every_age(days: int, bucket: str) -> None:
    assert metrics.age_bucket(days) == bucket


def test_the_otlp_exporter_sends_spans_to_the_collector_named_by_the_standard_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real OTLP/HTTP exchange with a local HTTP server standing in for the collector."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        exporter, memory = telemetry.make_exporter(telemetry.exporter_name("otlp"))
        assert exporter is not None and memory is None
        provider = TracerProvider()  # a private provider: the process's global one stays as it is
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("test").start_as_current_span(
            "recon.publish", attributes={"recon.step": "publish"}
        ):
            pass
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in received] == ["/v1/traces"]
    request = ExportTraceServiceRequest()
    request.ParseFromString(received[0][1])
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["recon.publish"]


def test_run_metrics_describe_the_last_run_only(tmp_path: Path) -> None:
    metrics.reset()
    first = pl.DataFrame({"record": ["ledger", "ledger"], "status": ["exception", "matched"]})
    metrics.record_reconciled(first)
    metrics.record_reconciled(pl.DataFrame({"record": ["ledger"], "status": ["matched"]}))
    metrics.export_step("reconcile", tmp_path)
    samples = _read_textfiles(tmp_path)["reconcile"]["recon_pipeline_records_reconciled"]
    assert [(s.labels, s.value) for s in samples] == [({"record": "ledger", "status": "matched"}, 1.0)]
    with pytest.raises(KeyError, match="not a pipeline metric"):
        metrics.set_value("reconcile", "recon_unknown", 1)
    with pytest.raises(ValueError, match="takes labels"):
        metrics.set_value("reconcile", "recon_pipeline_records_reconciled", 1, {"record": "ledger"})
