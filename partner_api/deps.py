"""Dependencies shared by the routers: settings and a database session."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.store import db


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    engine = db.make_engine(url)
    db.migrate(engine)
    return engine


def get_engine(settings: Annotated[Settings, Depends(get_settings)]) -> Engine:
    return _engine(settings.db_url)


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with db.session_scope(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
