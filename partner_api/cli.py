"""``recon partners``: create partners, issue and revoke their API keys, purge idempotency keys.

Partners and keys live in the live outcome store (``RECON_DATABASE_URL``), sandbox keys included.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import select

from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.store import db

app = typer.Typer(help="Partners of the partner API and their API keys.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _engine(url: str | None = None):  # type: ignore[no-untyped-def]
    engine = db.make_engine(url or Settings().db_url)
    db.migrate(engine)
    return engine


def _print_key(issued: object) -> None:
    from .service import IssuedKey

    assert isinstance(issued, IssuedKey)
    console.print(
        f"API key {issued.key_id} ({issued.environment}, scopes {issued.scopes}) for partner "
        f"{issued.partner_id}; shown once, store it now:"
    )
    typer.echo(issued.key)


@app.command("add")
def add(  # noqa: PLR0917 - a Typer command: one parameter per option
    name: Annotated[str, typer.Argument(help="The partner's name (unique)")],
    psp: Annotated[
        str | None, typer.Option("--psp", help="adyen, stripe or paypal: sees that PSP's data")
    ] = None,
    brand: Annotated[
        str | None, typer.Option("--brand", help="A B2B brand: sees that brand's transactions")
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Issue a sandbox key (sandbox data only)")
    ] = False,
    scopes: Annotated[str, typer.Option("--scopes", help="read, disputes, upload, operator")] = "read",
    rate: Annotated[float | None, typer.Option("--rate", help="Requests/s for this key")] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="Bucket size for this key")] = None,
) -> None:
    """Create a partner (or reuse one of that name) and print a new API key once (stored hashed)."""
    from .service import create_partner, issue_key

    try:
        with db.session_scope(_engine()) as session:
            partner, created = create_partner(session, name=name, psp=psp, brand=brand)
            issued = issue_key(
                session,
                partner=partner,
                environment="sandbox" if sandbox else "live",
                scopes=scopes,
                rate_per_s=rate,
                burst=burst,
            )
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if created:
        console.print(f"Created partner {name!r} ({partner.partner_id}; psp={psp}, brand={brand}).")
    _print_key(issued)


@app.command("list")
def list_() -> None:
    """Partners and their keys (never the keys themselves)."""
    from reconciliation_pipeline.store.models import ApiKey, Partner

    with db.session_scope(_engine()) as session:
        for partner in session.scalars(select(Partner).order_by(Partner.name)):
            console.print(f"{partner.partner_id}  {partner.name}  psp={partner.psp} brand={partner.brand}")
            for key in session.scalars(
                select(ApiKey).where(ApiKey.partner_id == partner.partner_id).order_by(ApiKey.created_at)
            ):
                state = "revoked" if key.revoked_at else "active"
                console.print(f"    {key.key_id}  {key.environment}  {key.scopes}  {state}")


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (the hex after rk_<env>_)")]) -> None:
    """Revoke an API key (refused within RECON_API_KEY_CACHE_S seconds by running API processes)."""
    from .service import revoke_key

    try:
        with db.session_scope(_engine()) as session:
            revoke_key(session, key_id=key_id)
    except LookupError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Revoked {key_id}.")


@app.command("purge-idempotency")
def purge_idempotency() -> None:
    """Delete idempotency keys past their expiry (kept RECON_IDEMPOTENCY_TTL_HOURS, at least 24 h)."""
    from .service import purge_idempotency_keys

    settings = Settings()
    for env, url in (("live", settings.db_url), ("sandbox", settings.sandbox_db_url)):
        with db.session_scope(_engine(url)) as session:
            console.print(f"{env}: purged {purge_idempotency_keys(session)} expired idempotency keys")
