"""``Idempotency-Key`` for every state-changing call (IETF httpapi idempotency-key draft, Stripe's practice).

* No key: ``400``. A key is 1 to 255 printable ASCII characters, scoped to the partner (two partners
  may use the same key) and to the environment's store; kept ``RECON_IDEMPOTENCY_TTL_HOURS`` (24 h).
* First use: the key is reserved ``in_flight`` (committed at once, so concurrent retries see it), the
  call runs, and its response is stored as ``completed`` **in the same database transaction as the
  call's state change** (and its audit event): both commit or neither does.
* Same key, same request (method, path and a fingerprint of the validated payload), completed: the
  stored response is replayed with ``Idempotent-Replayed: true``; the replay is an audit event.
* Same key, different request: ``422``. Same key while the first is still running: ``409`` with
  ``Retry-After``. A reservation older than ``RECON_IDEMPOTENCY_LOCK_S`` (a crashed process) may be
  taken over; completing checks the reservation's token, so only one of them can commit.
* A call that ends in a client error (``4xx``) stores that response too (nothing changed, retrying
  the same request gives the same answer); a server error releases the key so a retry runs again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from reconciliation_pipeline.store import db
from reconciliation_pipeline.store.audit import append_event, canonical_json
from reconciliation_pipeline.store.models import IdempotencyKey
from reconciliation_pipeline.telemetry import current_ids

from .auth import Principal
from .deps import Runtime
from .problems import PROBLEM_JSON, ProblemError, from_error

log = logging.getLogger("partner_api.idempotency")
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
#: Response headers stored with the response and replayed.
KEPT_HEADERS = ("content-type", "location")
UTC = dt.UTC


def fingerprint(method: str, path: str, payload: Any) -> str:
    """SHA-256 of the method, the path and the canonical JSON of the validated payload."""
    text = f"{method.upper()}\n{path}\n{canonical_json(payload)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_key(key: str | None) -> str:
    if key is None or key == "":
        raise ProblemError(
            400,
            f"this call changes state: send an {HEADER} header (a unique value per intended operation, "
            "e.g. a UUID) so that retries are safe",
            slug="idempotency-key-missing",
        )
    if len(key) > 255 or not all(32 < ord(c) < 127 for c in key):
        raise ProblemError(
            400,
            f"{HEADER} must be 1 to 255 printable ASCII characters without spaces",
            slug="idempotency-key-invalid",
        )
    return key


@dataclass(frozen=True)
class Reservation:
    partner_id: str
    key: str
    token: str


def _replay(row: IdempotencyKey) -> Response:
    headers = dict(row.response_headers or {})
    headers[REPLAYED] = "true"
    media = headers.pop("content-type", None)
    return Response(
        content=(row.response_body or "").encode("utf-8"),
        status_code=int(row.response_status or 200),
        headers=headers,
        media_type=media,
    )


def _reserve(
    runtime: Runtime, engine: Engine, principal: Principal, *, key: str, method: str, path: str, fp: str
) -> Reservation | Response:
    settings = runtime.settings
    now = dt.datetime.now(UTC)
    token = secrets.token_hex(16)
    trace_id, _ = current_ids()
    for _attempt in range(5):
        try:
            with db.session_scope(engine) as session:
                row = session.get(IdempotencyKey, (principal.partner_id, key), with_for_update=True)
                fresh = row is None or (row.expires_at is not None and row.expires_at <= now)
                if fresh:
                    if row is None:
                        row = IdempotencyKey(partner_id=principal.partner_id, idempotency_key=key)
                        session.add(row)
                    row.request_hash = fp
                    row.request_method = method
                    row.request_path = path
                    row.state = "in_flight"
                    row.response_status = row.response_headers = row.response_body = None
                    row.created_at = now
                    row.expires_at = now + dt.timedelta(hours=settings.idempotency_ttl_hours)
                    row.lock_token = token
                    row.locked_until = now + dt.timedelta(seconds=settings.idempotency_lock_s)
                    session.flush()
                    return Reservation(principal.partner_id, key, token)
                assert row is not None
                if row.request_hash != fp:
                    raise ProblemError(
                        422,
                        f"{HEADER} {key!r} was first used for a different request "
                        f"({row.request_method} {row.request_path}); use a new key for a new operation",
                        slug="idempotency-key-reused",
                    )
                if row.state == "completed":
                    append_event(
                        session,
                        actor=principal.actor,
                        action="idempotency.replayed",
                        entity_type="idempotency_key",
                        entity_id=f"{principal.partner_id}:{key}",
                        inputs={"method": method, "path": path, "request_hash": fp},
                        chain={"code_version": settings.code_version},
                        outcome={"status": row.response_status, "first_used_at": row.created_at},
                        trace_id=trace_id,
                    )
                    from .observability import IDEMPOTENT_REPLAYS

                    IDEMPOTENT_REPLAYS.labels(environment=principal.environment).inc()
                    return _replay(row)
                if row.locked_until is not None and row.locked_until > now:
                    raise ProblemError(
                        409,
                        f"a request with {HEADER} {key!r} is still being processed; retry shortly",
                        slug="idempotency-key-in-use",
                        headers={"Retry-After": "1"},
                    )
                # a reservation whose holder is gone (crashed past the lock time): take it over
                row.lock_token = token
                row.locked_until = now + dt.timedelta(seconds=settings.idempotency_lock_s)
                return Reservation(principal.partner_id, key, token)
        except (IntegrityError, OperationalError) as exc:  # a concurrent first use won the insert
            if isinstance(exc, OperationalError) and "lock" not in str(exc).lower():
                raise
            continue
    raise ProblemError(
        409,
        f"a request with {HEADER} {key!r} is still being processed; retry shortly",
        slug="idempotency-key-in-use",
        headers={"Retry-After": "1"},
    )


class LostReservationError(Exception):
    """Another request took the key over; this one must roll back."""


def complete(session: Session, reservation: Reservation, response: Response) -> None:
    """Store ``response`` for the key, in ``session``'s transaction (the one of the state change)."""
    headers = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    body = bytes(response.body).decode("utf-8")
    result = session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.partner_id == reservation.partner_id,
            IdempotencyKey.idempotency_key == reservation.key,
            IdempotencyKey.lock_token == reservation.token,
            IdempotencyKey.state == "in_flight",
        )
        .values(
            state="completed",
            response_status=response.status_code,
            response_headers=headers,
            response_body=body,
            locked_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LostReservationError(reservation.key)


def _release(engine: Engine, reservation: Reservation) -> None:
    try:
        with db.session_scope(engine) as session:
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.partner_id == reservation.partner_id,
                    IdempotencyKey.idempotency_key == reservation.key,
                    IdempotencyKey.lock_token == reservation.token,
                    IdempotencyKey.state == "in_flight",
                )
            )
    except Exception:  # pragma: no cover - the reservation then simply expires after the lock time
        log.exception("could not release idempotency key %s", reservation.key)


def run(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    *,
    key: str | None,
    payload: Any,
    handler: Callable[[Session], Response],
) -> Response:
    """Run ``handler(session)`` at most once per (partner, key); see the module docstring.

    ``handler`` makes its state change (and audit events) in ``session`` and returns the response;
    the response is stored in that same transaction. A :class:`ProblemError` it raises with a 4xx
    status is answered and stored (in a transaction of its own: the handler's work is rolled back).
    """
    key = check_key(key)
    engine = runtime.engine(principal.environment)
    method, path = request.method, request.url.path
    fp = fingerprint(method, path, payload)
    reserved = _reserve(runtime, engine, principal, key=key, method=method, path=path, fp=fp)
    if isinstance(reserved, Response):
        return reserved
    try:
        with db.session_scope(engine) as session:
            response = handler(session)
            complete(session, reserved, response)
        return response
    except LostReservationError:
        raise ProblemError(
            409,
            f"{HEADER} {key!r} was taken over by another request; retry to get its result",
            slug="idempotency-key-in-use",
            headers={"Retry-After": "1"},
        ) from None
    except ProblemError as exc:
        if exc.status >= 500:
            _release(engine, reserved)
            raise
        response = from_error(exc, path)
        try:
            with db.session_scope(engine) as session:
                complete(session, reserved, response)
        except LostReservationError:
            pass
        return response
    except BaseException:
        _release(engine, reserved)
        raise


def problem_media_type() -> str:
    return PROBLEM_JSON


def response_json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response whose body is stored byte for byte (so a replay is identical)."""
    return Response(
        content=json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
