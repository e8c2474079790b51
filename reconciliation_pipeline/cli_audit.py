"""``recon audit`` and ``recon exceptions``: compliance's and operators' commands.

``audit verify`` walks the whole chain and checks every anchor of ``<data_dir>/audit/anchors.jsonl``;
``audit export`` writes a regulator's extract with its manifest; ``audit verify-export`` checks an
extract from its files alone; ``audit trace`` reconstructs one transaction end to end. ``exceptions
list|show|resolve`` is the operator's queue. Exit codes: 0 fine, 1 a broken chain / failed check /
refused resolution, 2 bad usage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .settings import Settings

audit_app = typer.Typer(help="The audit trail: verify, export, trace.", no_args_is_help=True)
exceptions_app = typer.Typer(help="The operator's exception queue.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from .store import db

    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    return engine


def _anchors_file(settings: Settings, given: Path | None) -> Path:
    from .store.anchors import anchors_path

    return given if given is not None else anchors_path(settings.data_path)


class VerifyMethod(StrEnum):
    auto = "auto"
    server = "server"
    python = "python"


class AuditFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


AnchorsOption = Annotated[
    Path | None,
    typer.Option("--anchors", dir_okay=False, help="Anchors file (default <data_dir>/audit/anchors.jsonl)"),
]


@audit_app.command("verify")
def audit_verify(
    anchors: AnchorsOption = None,
    method: Annotated[
        VerifyMethod,
        typer.Option(help="server: PostgreSQL recomputes the hashes; python: recomputed here (independent)"),
    ] = VerifyMethod.auto,
) -> None:
    """Walk the whole hash chain and check the anchors; exit 1 naming the first bad event."""
    from .store import audit
    from .store.anchors import AnchorFileError, check_anchors, read_anchors

    settings = Settings()
    engine = _engine(settings)
    try:
        try:
            result = audit.verify_chain(engine, method=method.value)
        except ValueError as exc:  # --method server on SQLite
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        if not result.ok:
            err.print(f"[red]Audit chain broken at event seq {result.first_bad_seq}[/red]: {result.reason}")
            raise typer.Exit(1)
        console.print(f"[green]Audit chain intact[/green]: {result.count} events, head {result.head_hash}")
        path = _anchors_file(settings, anchors)
        try:
            found = read_anchors(path)
        except AnchorFileError as exc:
            err.print(f"[red]Anchors unreadable[/red]: {exc}")
            raise typer.Exit(1) from None
        check = check_anchors(engine, found)
        if not check.ok:
            bad = check.bad
            err.print(
                f"[red]Audit chain truncated or rewritten at event seq {bad.seq if bad else '?'}[/red]: "
                f"{check.reason}"
            )
            raise typer.Exit(1)
        if check.latest is None:
            console.print(f"[yellow]No anchors in {path}[/yellow]: a truncated tail could not be detected.")
        else:
            console.print(
                f"[green]Anchors hold[/green]: {check.checked} anchors in {path}, the latest at seq "
                f"{check.latest.seq} ({check.latest.at})"
            )
    finally:
        engine.dispose()


@audit_app.command("anchor")
def audit_anchor(anchors: AnchorsOption = None) -> None:
    """Anchor the chain's current head in the anchors file now (runs do it after every publish)."""
    from .store.anchors import anchor_head

    settings = Settings()
    engine = _engine(settings)
    try:
        anchor = anchor_head(engine, _anchors_file(settings, anchors), kind="manual")
    finally:
        engine.dispose()
    if anchor is None:
        console.print("The audit trail is empty: nothing to anchor.")
        return
    console.print(f"Anchored seq {anchor.seq} hash {anchor.hash} in {_anchors_file(settings, anchors)}")


@audit_app.command("export")
def audit_export(  # noqa: PLR0917 - typer options
    from_: Annotated[dt.datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (UTC)")],
    to: Annotated[dt.datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day (UTC), inclusive")],
    format_: Annotated[AuditFormat, typer.Option("--format")] = AuditFormat.jsonl,
    out: Annotated[Path | None, typer.Option("--out", dir_okay=False, help="Extract file")] = None,
    anchors: AnchorsOption = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who exports (default RECON_OPERATOR or login)")
    ] = None,
) -> None:
    """Write a regulator's extract of a period and its manifest (count, first/last hash, SHA-256, anchor)."""
    from .store.audit_export import export_audit
    from .store.exceptions import default_operator

    settings = Settings()
    if to < from_:
        err.print(f"[red]--to {to:%Y-%m-%d} is before --from {from_:%Y-%m-%d}[/red]")
        raise typer.Exit(2)
    target = out or settings.data_path / "exports" / (f"audit_{from_:%Y-%m-%d}_{to:%Y-%m-%d}.{format_.value}")
    engine = _engine(settings)
    try:
        done = export_audit(
            engine,
            target,
            fmt=format_.value,
            date_from=from_.date(),
            date_to=to.date(),
            anchors_file=_anchors_file(settings, anchors),
            exported_by=by or default_operator(),
        )
    finally:
        engine.dispose()
    m = done.manifest
    console.print(f"Wrote {m['count']} events to {done.path} (sha256 {m['sha256']})")
    if m["first"] is not None:
        console.print(f"  seq {m['first']['seq']} .. {m['last']['seq']}, last hash {m['last']['hash']}")
    console.print(f"Manifest: {done.manifest_path}")
    if not m["chain_verified_at_export"]["ok"]:
        err.print(f"[red]The chain did not verify at export[/red]: {m['chain_verified_at_export']['reason']}")
        raise typer.Exit(1)


@audit_app.command("verify-export")
def audit_verify_export(
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="<extract>.manifest.json")],
) -> None:
    """Check an extract against its manifest from the files alone (no database needed)."""
    from .store.audit_export import verify_extract

    check = verify_extract(manifest)
    if check.ok:
        console.print(f"[green]Extract intact[/green]: {check.count} events, every hash and link recomputed")
        return
    for problem in check.problems:
        err.print(f"[red]{problem}[/red]")
    raise typer.Exit(1)


def _events_table(title: str, events: list[Any]) -> Table:
    from .store.trace import describe

    table = Table(title=title, title_justify="left")
    for col in ("seq", "occurred_at (UTC)", "action", "about", "actor", "run", "outcome"):
        table.add_column(col, overflow="fold")
    for ev in events:
        run = (ev.chain or {}).get("run_id") or "-"
        table.add_row(
            str(ev.seq),
            f"{ev.occurred_at:%Y-%m-%d %H:%M:%S}",
            ev.action,
            ev.entity_id,
            ev.actor,
            str(run),
            describe(ev.outcome),
        )
    return table


@audit_app.command("trace")
def audit_trace(
    transaction_id: Annotated[str, typer.Argument(help="The ledger transaction id")],
) -> None:
    """Reconstruct one transaction end to end: booking, settlement, rule, outcomes, exceptions, API calls."""
    from .store import db
    from .store.trace import describe, trace_transaction

    settings = Settings()
    engine = _engine(settings)
    try:
        with db.session_scope(engine) as session:
            t = trace_transaction(session, transaction_id)
            if not t.found:
                err.print(f"[red]Transaction {transaction_id!r} is not known to the store[/red]")
                raise typer.Exit(1)
            console.rule(f"Transaction {transaction_id}")
            txn = t.transaction
            console.print("[bold]1. Booked[/bold]")
            if txn is None:
                console.print("  not in the ledger (known from settlement or API records only)")
            else:
                kafka = (
                    f"topic {txn.kafka_topic} partition {txn.kafka_partition} offset {txn.kafka_offset}"
                    if txn.kafka_topic is not None
                    else "none (landed from a file of events, not from Kafka)"
                )
                console.print(f"  Kafka: {kafka}")
                console.print(f"  landed file: {txn.landed_file}   event_id: {txn.event_id}")
                console.print(
                    f"  {txn.kind} {txn.amount_minor} {txn.currency} (minor units) at {txn.psp}, "
                    f"psp_reference {txn.psp_reference}, occurred {txn.occurred_at}, business date "
                    f"{txn.business_date}, trace_id {txn.trace_id}"
                )
                for ev in t.ledger_batches:
                    console.print(
                        f"  stored by ledger batch event seq {ev.seq} ({ev.occurred_at:%Y-%m-%d %H:%M:%S}, "
                        f"run {(ev.chain or {}).get('run_id')}): {describe(ev.outcome)}"
                    )
            console.print("[bold]2. Settled[/bold]")
            if not t.settlements:
                console.print("  no settlement record matched or names it")
            for s in t.settlements:
                line = s.line
                where = (
                    f"{line.psp} file {line.source_file} row {line.source_row}"
                    if line is not None
                    else f"{s.outcome.psp} file {s.outcome.source_file} row {s.outcome.source_row}"  # type: ignore[union-attr]
                )
                console.print(f"  settlement record ({s.how}): {where}")
                if line is not None:
                    console.print(
                        f"    {line.record_type} {line.amount_minor} {line.currency}, "
                        f"booked {line.booking_date}, batch {line.batch_id}, file sha256 {line.file_sha256}"
                    )
                if s.file is not None:
                    console.print(
                        f"    file {s.file.original_name}: {s.file.status} "
                        f"{s.file.registered_at:%Y-%m-%d %H:%M:%S} -> {s.file.stored_path}"
                    )
                for ev in s.file_events:
                    console.print(f"    audit seq {ev.seq}: {ev.action} by {ev.actor}")
                if s.outcome is not None:
                    console.print(f"    its outcome: {s.outcome.status} ({s.outcome.rule_id or '-'})")
            console.print("[bold]3. Rule[/bold]")
            out = t.outcome
            if out is None:
                console.print("  no outcome yet")
            else:
                console.print(
                    f"  status {out.status}, rule {out.rule_id or '-'}, match {out.match_id or '-'}, "
                    f"exception {out.exception_category or '-'}, as of {out.as_of_date}, run {out.run_id}"
                )
                if t.match_group is not None:
                    g = t.match_group
                    console.print(
                        f"  match group {g.match_id}: rule {g.rule_id}, as of {g.as_of_date}, run {g.run_id}"
                    )
            console.print("[bold]4. Outcomes[/bold]")
            console.print(_events_table("every outcome and exception event of its records", t.history))
            console.print("[bold]5. Exceptions[/bold]")
            if not t.exceptions:
                console.print("  none")
            for x in t.exceptions:
                line_ = f"  #{x.id} {x.category} on {x.record_key}, opened as of {x.opened_as_of}: {x.state}"
                if x.state == "resolved":
                    line_ += f" ({x.resolution_code} by {x.resolved_by} at {x.resolved_at:%Y-%m-%d %H:%M:%S}"
                    line_ += f": {x.resolution_note})" if x.resolution_note else ")"
                console.print(line_)
            console.print("[bold]6. API calls[/bold]")
            if t.api_calls:
                console.print(_events_table("partner API events about it", t.api_calls))
            else:
                console.print("  none")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- exceptions


class StateFilter(StrEnum):
    open = "open"
    resolved = "resolved"
    all = "all"


def _resolution_codes() -> type[StrEnum]:
    from .store.exceptions import ResolutionCode

    return ResolutionCode


def _item_json(item: Any) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(item), default=str))


@exceptions_app.command("list")
def exceptions_list(  # noqa: PLR0917 - typer options
    state: Annotated[StateFilter, typer.Option(help="open, resolved or all")] = StateFilter.open,
    psp: Annotated[str | None, typer.Option(help="Only this PSP")] = None,
    category: Annotated[str | None, typer.Option(help="Only this exception category")] = None,
    min_age: Annotated[int | None, typer.Option("--min-age", min=0, help="At least N days old")] = None,
    max_age: Annotated[int | None, typer.Option("--max-age", min=0, help="At most N days old")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """The exception queue, oldest first (age: days since the business date that opened it)."""
    from .store import db
    from .store.exceptions import list_exceptions

    settings = Settings()
    engine = _engine(settings)
    try:
        with db.session_scope(engine) as session:
            items = list_exceptions(
                session,
                state=state.value,
                psp=psp,
                category=category,
                min_age_days=min_age,
                max_age_days=max_age,
                limit=limit,
            )
    finally:
        engine.dispose()
    if as_json:
        for item in items:
            console.print_json(json.dumps(_item_json(item)))
        return
    table = Table(title=f"{len(items)} exception(s), state {state.value}")
    for col in ("id", "state", "category", "psp", "record", "opened", "age", "resolution"):
        table.add_column(col, overflow="fold")
    for i in items:
        record = (
            f"tx {i.transaction_id}"
            if i.record == "ledger"
            else f"{i.source_file} row {i.source_row}"
            if i.source_file
            else i.record_key
        )
        resolution = f"{i.resolution_code} by {i.resolved_by}" if i.state == "resolved" else ""
        table.add_row(
            str(i.id),
            i.state,
            i.category,
            i.psp or "-",
            record,
            str(i.opened_as_of),
            f"{i.age_days}d",
            resolution,
        )
    console.print(table)


@exceptions_app.command("show")
def exceptions_show(exception_id: Annotated[int, typer.Argument(help="Exception id")]) -> None:
    """One exception: its record, the matcher's evidence, its resolution and the record's audit history."""
    from .store import db
    from .store.exceptions import get_exception, history

    settings = Settings()
    engine = _engine(settings)
    try:
        with db.session_scope(engine) as session:
            try:
                item = get_exception(session, exception_id)
            except LookupError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
            events = history(session, item.record_key)
    finally:
        engine.dispose()
    console.rule(f"Exception #{item.id}: {item.category} ({item.state})")
    console.print(
        f"record: {item.record_key}  status now: {item.status}  business date: {item.business_date}"
    )
    console.print(f"opened as of {item.opened_as_of} ({item.age_days} days ago)")
    console.print("evidence (matcher):")
    console.print_json(json.dumps(item.evidence, default=str))
    if item.state == "resolved":
        console.print(
            f"resolved: {item.resolution_code} by {item.resolved_by} at {item.resolved_at}; note: "
            f"{item.resolution_note or '-'}"
        )
        if item.resolution_evidence:
            console.print("resolution evidence:")
            console.print_json(json.dumps(item.resolution_evidence, default=str))
    console.print(_events_table("audit history of the record", events))


def _keep_evidence(settings: Settings, path: Path) -> dict[str, Any]:
    """Copy an evidence document into ``<data_dir>/audit/evidence/`` under its SHA-256; describe it."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    folder = settings.data_path / "audit" / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}-{path.name}"
    if not target.exists():
        shutil.copyfile(path, target)
    return {
        "kind": "document",
        "name": path.name,
        "sha256": digest,
        "bytes": len(data),
        "stored": str(target),
    }


@exceptions_app.command("resolve")
def exceptions_resolve(  # noqa: PLR0917 - typer options
    exception_id: Annotated[int, typer.Argument(help="Exception id")],
    code: Annotated[str, typer.Option("--code", help="Reason code: see `recon exceptions codes`")],
    note: Annotated[str | None, typer.Option("--note", help="Why (required for code 'other')")] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who resolves (default RECON_OPERATOR or login)")
    ] = None,
    evidence: Annotated[
        list[Path] | None,
        typer.Option(
            "--evidence", exists=True, dir_okay=False, help="A document relied on (kept by SHA-256)"
        ),
    ] = None,
    ref: Annotated[
        list[str] | None, typer.Option("--ref", help="A reference relied on (ticket, email id)")
    ] = None,
) -> None:
    """Resolve an open exception with a reason code; who, why and the evidence go to the audit trail."""
    from .store import db
    from .store.exceptions import ResolutionCode, default_operator, resolve

    codes = [c.value for c in ResolutionCode]
    if code not in codes:
        err.print(f"[red]--code {code!r} is not a resolution code; use one of: {', '.join(codes)}[/red]")
        raise typer.Exit(2)
    settings = Settings()
    kept = [_keep_evidence(settings, p) for p in evidence or []] + [
        {"kind": "reference", "value": r} for r in ref or []
    ]
    engine = _engine(settings)
    try:
        with db.session_scope(engine) as session:
            item = resolve(
                session,
                exception_id=exception_id,
                code=code,
                note=note,
                by=by or default_operator(),
                evidence=kept,
                chain={"asset": "recon exceptions resolve", "code_version": settings.code_version},
            )
    except (LookupError, ValueError) as exc:
        err.print(f"[red]Not resolved[/red]: {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    console.print(
        f"[green]Resolved[/green] exception #{item.id} ({item.category}, {item.record_key}) as "
        f"{item.resolution_code} by {item.resolved_by}; {len(kept)} piece(s) of evidence kept; "
        "audit event written."
    )


@exceptions_app.command("codes")
def exceptions_codes() -> None:
    """The resolution reason codes."""
    from .store.exceptions import AUTO_CODES

    for c in _resolution_codes():
        console.print(c.value)
    console.print(f"[dim](set by the pipeline itself: {', '.join(AUTO_CODES)})[/dim]")
