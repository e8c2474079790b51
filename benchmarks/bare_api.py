"""The baseline of ``bench_api.py``: a bare FastAPI endpoint reading one transaction row by its key.

No auth, no rate limit, no tracing, no metrics, no logs: one SQLAlchemy Core ``SELECT`` on the same
PostgreSQL store through the same engine settings, served by the same uvicorn the same way.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import select

from reconciliation_pipeline.store import db
from reconciliation_pipeline.store.models import Transaction

engine = db.make_engine(os.environ["RECON_DATABASE_URL"], pool_size=20, max_overflow=20)
_T = Transaction.__table__
app = FastAPI()


@app.get("/bare/{transaction_id}")
def bare(transaction_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(_T).where(_T.c.transaction_id == transaction_id)).mappings().first()
    if row is None:
        raise HTTPException(404)
    return dict(row)
