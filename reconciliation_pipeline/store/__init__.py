"""The outcome store: ledger, settlement lines, files, outcomes, exceptions and the audit trail.

SQLite by default, PostgreSQL in production (``RECON_DATABASE_URL``); the schema is managed by the
Alembic migrations in ``migrations/`` (:func:`migrate`). Every state change writes a hash-chained
audit event in the same transaction (:mod:`.audit`).
"""

from reconciliation_pipeline.store.audit import (
    AuditEventIn,
    VerifyResult,
    append_event,
    append_events,
    canonical_json,
    verify_chain,
)
from reconciliation_pipeline.store.db import make_engine, migrate, session_scope
from reconciliation_pipeline.store.models import (
    AuditEvent,
    Base,
    ExceptionItem,
    IdempotencyKey,
    IngestedFile,
    MatchGroup,
    Outcome,
    SettlementLine,
    Transaction,
)
from reconciliation_pipeline.store.service import (
    ApplyResult,
    apply_outcomes,
    audit_head,
    export_outcomes,
    get_transaction,
    register_file,
    resolve_exception,
    upsert_settlement_lines,
    upsert_transactions,
)

__all__ = [
    "ApplyResult",
    "AuditEvent",
    "AuditEventIn",
    "Base",
    "ExceptionItem",
    "IdempotencyKey",
    "IngestedFile",
    "MatchGroup",
    "Outcome",
    "SettlementLine",
    "Transaction",
    "VerifyResult",
    "append_event",
    "append_events",
    "apply_outcomes",
    "audit_head",
    "canonical_json",
    "export_outcomes",
    "get_transaction",
    "make_engine",
    "migrate",
    "register_file",
    "resolve_exception",
    "session_scope",
    "upsert_settlement_lines",
    "upsert_transactions",
    "verify_chain",
]
