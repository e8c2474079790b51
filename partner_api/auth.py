"""API keys: issued once, stored as SHA-256, checked in constant time; scopes; per-key rate limits.

A key reads ``rk_<environment>_<key id>_<secret>`` (``rk_live_3f9c0a1b2c3d4e5f_...``): the key id
finds the stored record, the SHA-256 of the whole key is compared with ``hmac.compare_digest``.
The secret is 256 random bits (``secrets.token_urlsafe(32)``), so a plain SHA-256 is enough (no
password hashing needed for a key nobody chose). Verified keys are cached in-process for
``RECON_API_KEY_CACHE_S`` seconds (default 5): a revoked key stops working within that time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.models import ApiKey, Partner

from .deps import Runtime, RuntimeDep, get_runtime
from .problems import ProblemError

SCOPES = ("read", "disputes", "upload", "operator")
KEY_RE = re.compile(r"^rk_(live|sandbox)_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer rk_<live|sandbox>_<key id>_<secret>` (from `recon partners add`)",
)


@dataclass(frozen=True)
class Principal:
    """The partner and key a request was authenticated as."""

    partner_id: str
    name: str
    psp: str | None
    brand: str | None
    key_id: str
    environment: str
    scopes: frozenset[str]
    rate_per_s: float | None
    burst: int | None

    @property
    def actor(self) -> str:
        return f"partner:{self.partner_id}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(environment: str) -> tuple[str, str]:
    """``(key_id, full key)`` for a fresh key of ``environment``."""
    if environment not in ("live", "sandbox"):
        raise ValueError(f"environment must be live or sandbox, not {environment!r}")
    key_id = secrets.token_hex(8)
    return key_id, f"rk_{environment}_{key_id}_{secrets.token_urlsafe(32)}"


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope of {', '.join(SCOPES)}")
    return scopes


def load_key(session: Session, key_id: str) -> tuple[str, Principal] | None:
    """``(stored sha256, principal)`` of an active key of an active partner, or ``None``."""
    row = session.execute(
        select(ApiKey, Partner)
        .join(Partner, Partner.partner_id == ApiKey.partner_id)
        .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None), Partner.active.is_(True))
    ).first()
    if row is None:
        return None
    key, partner = row
    return key.secret_sha256, Principal(
        partner_id=partner.partner_id,
        name=partner.name,
        psp=partner.psp,
        brand=partner.brand,
        key_id=key.key_id,
        environment=key.environment,
        scopes=frozenset(key.scopes.split(",")),
        rate_per_s=key.rate_per_s,
        burst=key.burst,
    )


def _lookup(runtime: Runtime, key_id: str) -> tuple[str, Principal] | None:
    with Session(runtime.control) as session:
        return load_key(session, key_id)


_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="recon"'}


def _parse(token: str) -> tuple[str, str]:
    """``(environment, key id)`` of a well-formed key; raises a 401 problem otherwise."""
    match = KEY_RE.match(token)
    if match is None:
        raise ProblemError(401, "the API key is malformed", slug="invalid-api-key", headers=_UNAUTHORIZED)
    return match.group(1), match.group(2)


def _cached(runtime: Runtime, key_id: str) -> tuple[bool, tuple[str, Principal] | None]:
    """``(hit, record)`` from the key cache (only found keys are cached)."""
    cached = runtime.key_cache.get(key_id)
    if cached is not None and cached[0] > time.monotonic():
        return True, cached[1]  # type: ignore[return-value]
    return False, None


def _remember(runtime: Runtime, key_id: str, found: tuple[str, Principal] | None) -> None:
    if found is not None and runtime.settings.api_key_cache_s > 0:
        runtime.key_cache[key_id] = (time.monotonic() + runtime.settings.api_key_cache_s, found)


def _verify(found: tuple[str, Principal] | None, token: str, environment: str) -> Principal:
    if found is None or not hmac.compare_digest(found[0], hash_key(token)):
        raise ProblemError(
            401, "the API key is unknown or revoked", slug="invalid-api-key", headers=_UNAUTHORIZED
        )
    principal = found[1]
    if principal.environment != environment:
        raise ProblemError(
            401, "the API key is unknown or revoked", slug="invalid-api-key", headers=_UNAUTHORIZED
        )
    return principal


def authenticate(runtime: Runtime, token: str) -> Principal:
    """The principal of ``token``; raises a 401 problem for anything else (blocks on a cache miss)."""
    environment, key_id = _parse(token)
    hit, found = _cached(runtime, key_id)
    if not hit:
        found = _lookup(runtime, key_id)
        _remember(runtime, key_id, found)
    return _verify(found, token, environment)


async def authenticate_async(runtime: Runtime, token: str) -> Principal:
    """:func:`authenticate` for the event loop: a cached key is checked in place, a miss is looked up
    in a worker thread."""
    environment, key_id = _parse(token)
    hit, found = _cached(runtime, key_id)
    if not hit:
        found = await run_in_threadpool(_lookup, runtime, key_id)
        _remember(runtime, key_id, found)
    return _verify(found, token, environment)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _missing_key() -> ProblemError:
    return ProblemError(
        401,
        "send the API key as `Authorization: Bearer <key>`",
        slug="missing-api-key",
        headers=_UNAUTHORIZED,
    )


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _missing_key()
    return credentials.credentials


def _authenticated(request: Request, principal: Principal) -> Principal:
    request.state.principal = principal
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {
                "recon.partner_id": principal.partner_id,
                "recon.api_key_id": principal.key_id,
                "recon.environment": principal.environment,
            }
        )
    return principal


def take_token(runtime: Runtime, principal: Principal) -> None:
    """Take a token from the key's bucket; raises a 429 problem (``Retry-After``) when it is empty.

    Blocking (one Redis ``EVALSHA``): call it from a worker thread.
    """
    settings = runtime.settings
    decision = runtime.limiter.hit(
        principal.key_id,
        rate=principal.rate_per_s or settings.api_rate_per_s,
        burst=principal.burst or settings.api_burst,
    )
    if not decision.allowed:
        from .observability import RATE_LIMITED

        RATE_LIMITED.labels(environment=principal.environment).inc()
        raise ProblemError(
            429,
            f"rate limit of key {principal.key_id} exceeded; retry after {decision.retry_after_header} s",
            slug="rate-limited",
            headers={"Retry-After": decision.retry_after_header},
        )


def check_scope(principal: Principal, scope: str) -> Principal:
    if scope not in principal.scopes:
        raise ProblemError(
            403,
            f"this API key lacks the {scope!r} scope (it has {', '.join(sorted(principal.scopes))})",
            slug="missing-scope",
        )
    return principal


def get_principal(request: Request, runtime: RuntimeDep, credentials: BearerDep) -> Principal:
    """Authenticate the request, then take a token from the key's bucket (429 when empty).

    A plain function: FastAPI runs it in a worker thread, where the key lookup (on a cache miss) and
    the limiter's Redis call block that thread only.
    """
    principal = _authenticated(request, authenticate(runtime, _token(credentials)))
    take_token(runtime, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: str):  # type: ignore[no-untyped-def]
    """A dependency: the principal, if its key has ``scope`` (else 403).

    One plain function (one worker-thread call): authentication, the rate limit, then the scope.
    """
    if scope not in SCOPES:
        raise ValueError(scope)

    def _check(request: Request, runtime: RuntimeDep, credentials: BearerDep) -> Principal:
        return check_scope(get_principal(request, runtime, credentials), scope)

    return Depends(_check)


@dataclass
class Access:
    """An authenticated request whose rate limit and scope are checked where the store is reached.

    For endpoints that read the store in one worker-thread call: :meth:`engine` takes the request's
    token from the key's bucket (429), checks the scope (403) and only then hands out the key's store,
    in the same order as :func:`require` and in the same thread call as the read (one thread hop a
    request instead of two). Authentication (401) has happened before the endpoint runs.
    """

    runtime: Runtime
    principal: Principal
    scope: str
    _checked: bool = False

    def engine(self) -> Engine:
        if not self._checked:
            take_token(self.runtime, self.principal)
            check_scope(self.principal, self.scope)
            self._checked = True
        return self.runtime.engine(self.principal.environment)


def access(scope: str):  # type: ignore[no-untyped-def]
    """A dependency: an :class:`Access` of the authenticated key (a coroutine: no thread hop when the
    key is cached); its rate limit and ``scope`` are checked by :meth:`Access.engine`.

    The runtime and the bearer credentials are read in place rather than as sub-dependencies (each
    dependency level costs FastAPI a resolution pass), so the route declares the API-key security
    requirement of its OpenAPI operation itself: ``openapi_extra=SECURED``.
    """
    if scope not in SCOPES:
        raise ValueError(scope)

    async def _access(request: Request) -> Access:
        runtime = await get_runtime(request)
        # what ``bearer`` (HTTPBearer, auto_error off) reads, without building its credentials model
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if not (scheme and token) or scheme.lower() != "bearer":
            raise _missing_key()
        principal = await authenticate_async(runtime, token)
        return Access(runtime, _authenticated(request, principal), scope)

    return Depends(_access)


#: ``openapi_extra`` of a route using :func:`access`: the security requirement that a ``bearer``
#: dependency would have added to its operation.
SECURED: dict[str, Any] = {"security": [{bearer.scheme_name: []}]}


ReadPrincipal = Annotated[Principal, require("read")]
DisputesPrincipal = Annotated[Principal, require("disputes")]
UploadPrincipal = Annotated[Principal, require("upload")]
OperatorPrincipal = Annotated[Principal, require("operator")]
ReadAccess = Annotated[Access, access("read")]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
