"""The FastAPI application (``recon api`` serves it with uvicorn)."""

from __future__ import annotations

from fastapi import FastAPI

from . import problems
from .routers import transactions

app = FastAPI(
    title="Reconciliation partner API",
    version="1.0.0",
    description="Transaction status and match evidence for PSPs and B2B brands.",
)
problems.install(app)
app.include_router(transactions.router)


@app.get("/health", tags=["ops"])
def health() -> dict[str, str]:
    return {"status": "ok"}
