"""Writes of the partner API: partners and keys (the CLI), disputes (the API).

Keyword-only functions that take the caller's session first and work inside its transaction; every
state change the API makes appends its audit event in that same transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.audit import append_event
from reconciliation_pipeline.store.models import ApiKey, Dispute, IdempotencyKey, Partner, Transaction

from .auth import hash_key, new_key, parse_scopes

UTC = dt.UTC
PSPS = ("adyen", "stripe", "paypal")
DISPUTE_REASONS = ("not_settled", "amount_mismatch", "duplicate", "not_recognised", "other")


@dataclass(frozen=True)
class IssuedKey:
    partner_id: str
    key_id: str
    environment: str
    scopes: str
    key: str  # shown once, never stored


def create_partner(
    session: Session, *, name: str, psp: str | None, brand: str | None, actor: str = "cli"
) -> tuple[Partner, bool]:
    """The partner named ``name``, created when new: ``(partner, created)``.

    An existing partner with the same name must have the same psp and brand (else ``ValueError``).
    """
    if psp is None and brand is None:
        raise ValueError("a partner needs --psp, --brand or both: they decide which transactions it sees")
    if psp is not None and psp not in PSPS:
        raise ValueError(f"--psp {psp!r} is not one of {', '.join(PSPS)}")
    existing = session.scalars(select(Partner).where(Partner.name == name)).first()
    if existing is not None:
        if (existing.psp, existing.brand) != (psp, brand):
            raise ValueError(
                f"partner {name!r} exists with psp={existing.psp!r}, brand={existing.brand!r}; "
                "a partner's ownership is fixed"
            )
        return existing, False
    partner = Partner(
        partner_id="ptn_" + secrets.token_hex(8),
        name=name,
        psp=psp,
        brand=brand,
        active=True,
        created_at=dt.datetime.now(UTC),
    )
    session.add(partner)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="partner.created",
        entity_type="partner",
        entity_id=partner.partner_id,
        inputs={"name": name, "psp": psp, "brand": brand},
        outcome={"partner_id": partner.partner_id},
    )
    return partner, True


def issue_key(
    session: Session,
    *,
    partner: Partner,
    environment: str,
    scopes: str,
    rate_per_s: float | None = None,
    burst: int | None = None,
    actor: str = "cli",
) -> IssuedKey:
    """A new API key for ``partner``; only its SHA-256 is stored, the key is returned once."""
    scope_set = parse_scopes(scopes)
    key_id, key = new_key(environment)
    scope_text = ",".join(sorted(scope_set))
    session.add(
        ApiKey(
            key_id=key_id,
            partner_id=partner.partner_id,
            environment=environment,
            secret_sha256=hash_key(key),
            scopes=scope_text,
            rate_per_s=rate_per_s,
            burst=burst,
            created_at=dt.datetime.now(UTC),
        )
    )
    session.flush()
    append_event(
        session,
        actor=actor,
        action="api_key.issued",
        entity_type="api_key",
        entity_id=key_id,
        inputs={"partner_id": partner.partner_id, "environment": environment, "scopes": scope_text},
        outcome={"key_id": key_id},
    )
    return IssuedKey(partner.partner_id, key_id, environment, scope_text, key)


def revoke_key(session: Session, *, key_id: str, actor: str = "cli") -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise LookupError(f"no API key {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = dt.datetime.now(UTC)
        session.flush()
        append_event(
            session,
            actor=actor,
            action="api_key.revoked",
            entity_type="api_key",
            entity_id=key_id,
            inputs={"partner_id": key.partner_id},
            outcome={"revoked_at": key.revoked_at},
        )
    return key


def purge_idempotency_keys(session: Session, *, now: dt.datetime | None = None) -> int:
    """Delete the idempotency keys past their expiry; returns how many."""
    now = now or dt.datetime.now(UTC)
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def raise_dispute(
    session: Session,
    *,
    partner_id: str,
    actor: str,
    transaction: Transaction,
    reason: str,
    amount_minor: int,
    note: str | None,
    trace_id: str | None,
    code_version: str | None = None,
) -> Dispute:
    """Open a dispute on ``transaction`` and write ``dispute.raised`` in the same transaction."""
    dispute = Dispute(
        dispute_id="dsp_" + secrets.token_hex(10),
        partner_id=partner_id,
        transaction_id=transaction.transaction_id,
        reason=reason,
        amount_minor=amount_minor,
        currency=transaction.currency,
        note=note,
        state="open",
        created_at=dt.datetime.now(UTC),
        trace_id=trace_id,
    )
    session.add(dispute)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="dispute.raised",
        entity_type="dispute",
        entity_id=dispute.dispute_id,
        inputs={
            "transaction_id": transaction.transaction_id,
            "reason": reason,
            "amount_minor": amount_minor,
            "currency": transaction.currency,
            "note": note,
        },
        chain={"code_version": code_version},
        outcome={"dispute_id": dispute.dispute_id, "state": "open"},
        trace_id=trace_id,
    )
    return dispute


def open_dispute_for(session: Session, *, partner_id: str, transaction_id: str) -> Dispute | None:
    return session.scalars(
        select(Dispute).where(
            Dispute.partner_id == partner_id,
            Dispute.transaction_id == transaction_id,
            Dispute.state == "open",
        )
    ).first()


def dispute_json(d: Dispute) -> dict[str, Any]:
    return {
        "dispute_id": d.dispute_id,
        "transaction_id": d.transaction_id,
        "reason": d.reason,
        "amount_minor": d.amount_minor,
        "currency": d.currency,
        "note": d.note,
        "state": d.state,
        "created_at": d.created_at.isoformat().replace("+00:00", "Z"),
    }
