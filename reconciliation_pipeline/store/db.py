"""Engines, migrations and sessions of the outcome store.

SQLite (the embedded default) is configured for a store several processes write to: WAL journal,
foreign keys on, a busy timeout, and every transaction opened with ``BEGIN IMMEDIATE`` (the
documented pysqlite recipe) so a writer holds the database lock from its first statement — that is
what serialises appends to the audit chain on SQLite. PostgreSQL uses psycopg2's batched
``executemany`` for bulk updates.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Engine, Table, TableClause, bindparam, create_engine, event, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 60.0


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for the outcome store at ``url`` (SQLite file or PostgreSQL)."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        path = _sqlite_file(sa_url)
        if path is not None:
            path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = create_engine(sa_url, connect_args=connect_args, **kwargs)
        is_file = path is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy (pysqlite's own BEGIN is deferred and late).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
                if is_file:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: random-key indexes of the audit trail
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    if sa_url.get_backend_name() == "postgresql" and sa_url.get_driver_name() == "psycopg2":
        kwargs.setdefault("executemany_mode", "values_plus_batch")
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(sa_url, **kwargs)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config pointing at the package's migrations (works from an installed package)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def migrate(url_or_engine: str | URL | Engine) -> None:
    """Upgrade the store to the newest schema (``alembic upgrade head``); a no-op when current."""
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = make_engine(url_or_engine), True
    try:
        cfg = alembic_config(engine.url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        if owned:
            engine.dispose()


BULK_CHUNK = 5_000


def _sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy's SQLite types store it (dates ISO text, datetimes naive UTC text)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def bulk_insert(
    session: Session, table: TableClause, rows: Sequence[dict[str, Any]], *, ignore_conflicts: bool = False
) -> None:
    """Insert ``rows`` (dicts with the same keys) in the session's transaction, in chunks.

    SQLite: straight to the driver's ``executemany`` (SQLAlchemy's per-row parameter processing is
    most of the cost at 100k rows); JSON columns of ``table`` are serialised as SQLAlchemy's JSON
    type would. Elsewhere: SQLAlchemy's batched ``insertmanyvalues``.
    """
    if not rows:
        return
    conn = session.connection()
    columns = list(rows[0])
    if conn.dialect.name == "sqlite":
        json_cols = {c for c in columns if isinstance(table.c[c].type, JSON)}
        if json_cols:
            rows = [
                {c: (json.dumps(v) if c in json_cols and v is not None else v) for c, v in r.items()}
                for r in rows
            ]
        verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
        sql = (
            f'{verb} INTO "{table.name}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}) '
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        for start in range(0, len(rows), BULK_CHUNK):
            chunk = rows[start : start + BULK_CHUNK]
            conn.exec_driver_sql(sql, [tuple(_sqlite_value(r[c]) for c in columns) for r in chunk])
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        if not ignore_conflicts:
            _copy_rows(conn, table, columns, rows)
            return
        # COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING (not a statement per
        # thousand rows): rows that conflict with stored ones, or with each other, are skipped
        tmp = f"_bulk_insert_{table.name}"
        cols = ", ".join(f'"{c}"' for c in columns)
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS pg_temp."{tmp}"')
        conn.exec_driver_sql(
            f'CREATE TEMPORARY TABLE "{tmp}" ON COMMIT DROP AS SELECT {cols} FROM "{table.name}" WITH NO DATA'
        )
        _copy_rows(conn, table, columns, rows, target=tmp)
        conn.exec_driver_sql(
            f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "{tmp}" ON CONFLICT DO NOTHING'
        )
        conn.exec_driver_sql(f'DROP TABLE pg_temp."{tmp}"')
        return
    stmt: Any = insert(table)
    if ignore_conflicts and conn.dialect.name == "postgresql":
        stmt = pg_insert(table).on_conflict_do_nothing()
    for start in range(0, len(rows), BULK_CHUNK):
        conn.execute(stmt, list(rows[start : start + BULK_CHUNK]))


def bulk_update(
    session: Session,
    table: Table,
    key: str,
    rows: Sequence[dict[str, Any]],
    *,
    constants: dict[str, Any] | None = None,
) -> None:
    """``UPDATE table SET <row's columns>, <constants> WHERE key = row[key]`` for every row, in bulk.

    PostgreSQL (psycopg2): the rows are COPYed into a temporary table and applied with one
    ``UPDATE ... FROM``. SQLite: the driver's ``executemany``. Otherwise: SQLAlchemy ``executemany``.
    """
    if not rows:
        return
    constants = dict(constants or {})
    conn = session.connection()
    columns = [c for c in rows[0] if c != key]
    dialect = conn.dialect.name
    if dialect == "postgresql" and conn.dialect.driver == "psycopg2":
        tmp = f"_bulk_update_{table.name}"
        cols = ", ".join(f'"{c}"' for c in [key, *columns])
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS pg_temp."{tmp}"')
        conn.exec_driver_sql(
            f'CREATE TEMPORARY TABLE "{tmp}" ON COMMIT DROP AS SELECT {cols} FROM "{table.name}" WITH NO DATA'
        )
        _copy_rows(conn, table, [key, *columns], rows, target=tmp)
        sets = [f'"{c}" = u."{c}"' for c in columns] + [f'"{c}" = %({c})s' for c in constants]
        conn.exec_driver_sql(
            f'UPDATE "{table.name}" AS t SET {", ".join(sets)} FROM "{tmp}" AS u WHERE t."{key}" = u."{key}"',
            {c: _pg_param(v) for c, v in constants.items()},
        )
        conn.exec_driver_sql(f'DROP TABLE pg_temp."{tmp}"')
        return
    if dialect == "sqlite":
        json_cols = {c for c in columns if isinstance(table.c[c].type, JSON)}
        sets = [f'"{c}" = ?' for c in [*columns, *constants]]
        sql = f'UPDATE "{table.name}" SET {", ".join(sets)} WHERE "{key}" = ?'
        tail = [_sqlite_value(v) for v in constants.values()]
        params = [
            (
                *(
                    _sqlite_value(json.dumps(r[c]) if c in json_cols and r[c] is not None else r[c])
                    for c in columns
                ),
                *tail,
                r[key],
            )
            for r in rows
        ]
        for start in range(0, len(params), BULK_CHUNK):
            conn.exec_driver_sql(sql, params[start : start + BULK_CHUNK])
        return
    stmt = (
        update(table)
        .where(table.c[key] == bindparam("_k"))
        .values({c: bindparam(f"_v_{c}") for c in columns}, **constants)
    )
    params_sa = [{"_k": r[key], **{f"_v_{c}": r[c] for c in columns}} for r in rows]
    for start in range(0, len(params_sa), BULK_CHUNK):
        conn.execute(stmt, params_sa[start : start + BULK_CHUNK])


def _pg_param(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _copy_value(value: Any) -> str:
    """One field of PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, (dt.date, int)):
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    text_ = str(value)
    if "\\" in text_ or "\t" in text_ or "\n" in text_ or "\r" in text_:
        text_ = text_.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text_


def _copy_rows(
    conn: Connection,
    table: TableClause,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    *,
    target: str | None = None,
) -> None:
    """``COPY table (columns) FROM STDIN`` on the connection's own transaction (psycopg2)."""
    json_cols = {c for c in columns if isinstance(table.c[c].type, JSON)}

    def lines() -> Iterator[str]:
        for r in rows:
            yield (
                "\t".join(
                    _copy_value(json.dumps(r[c]) if c in json_cols and r[c] is not None else r[c])
                    for c in columns
                )
                + "\n"
            )

    # streamed: rows are formatted here while the server stores the chunks sent before
    _copy_from(conn, target or table.name, columns, "", LineReader(lines()))


def _copy_from(conn: Connection, target: str, columns: Sequence[str], options: str, reader: Any) -> None:
    """``COPY target (columns) FROM STDIN <options>`` reading ``reader`` (psycopg2), on the connection's
    own transaction."""
    cols = ", ".join(f'"{c}"' for c in columns)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.copy_expert(f'COPY "{target}" ({cols}) FROM STDIN{options}', reader, size=COPY_CHUNK)
    finally:
        cursor.close()


COPY_CHUNK = 1 << 19
#: Rows of a frame formatted (``write_csv``) and sent per piece by :func:`copy_frame`.
FRAME_CHUNK = 50_000


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Datetimes as ISO 8601 text with their offset (UTC for naive values), everything else as is."""
    fixes = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            if dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            fixes.append(col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"))
    return frame.with_columns(fixes) if fixes else frame


def csv_bytes(frame: pl.DataFrame) -> bytes:
    """``frame`` in CSV as ``COPY ... (FORMAT csv)`` reads it: no header, NULL unquoted and empty, an
    empty string quoted (``""``), so NULL and ``''`` stay apart; datetimes ISO 8601 in UTC."""
    buf = io.BytesIO()
    _csv_ready(frame).write_csv(buf, include_header=False)
    return buf.getvalue()


def frame_csv_chunks(frame: pl.DataFrame, chunk: int = FRAME_CHUNK) -> Iterator[bytes]:
    """:func:`csv_text` of ``frame``, ``chunk`` rows at a time."""
    for start in range(0, frame.height, chunk):
        yield csv_bytes(frame.slice(start, chunk))


class ChunkReader:
    """A file-like ``read(size)`` handing out ready-made chunks one by one (``copy_expert`` pulls)."""

    def __init__(self, chunks: Iterable[str | bytes]) -> None:
        self._chunks = iter(chunks)

    def read(self, size: int = -1) -> str | bytes:
        for chunk in self._chunks:
            if chunk:
                return chunk
        return b""


def copy_csv(conn: Connection, target: str, columns: Sequence[str], chunks: Iterable[str | bytes]) -> None:
    """``COPY target (columns) FROM STDIN (FORMAT csv)`` of CSV text made piece by piece (psycopg2),
    on the connection's own transaction; the server stores a piece while the next one is made."""
    _copy_from(conn, target, columns, " WITH (FORMAT csv)", ChunkReader(chunks))


def copy_frame(session: Session, table: TableClause, frame: pl.DataFrame) -> None:
    """Insert every row of ``frame`` (its columns named as ``table``'s) in the session's transaction.

    PostgreSQL with psycopg2: the frame goes to ``COPY ... (FORMAT csv)`` through Polars' CSV writer
    (no Python object per field). Elsewhere: :func:`bulk_insert` of its rows.
    """
    if frame.height == 0:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        copy_csv(conn, table.name, frame.columns, frame_csv_chunks(frame))
        return
    bulk_insert(session, table, frame.to_dicts())


class LineReader:
    """A file-like ``read(size)`` over lines made on demand (what ``copy_expert`` pulls from)."""

    def __init__(self, lines: Iterator[str], chunk: int = COPY_CHUNK) -> None:
        self._lines = lines
        self._chunk = chunk

    def read(self, size: int = -1) -> str:
        parts: list[str] = []
        total = 0
        target = self._chunk if size is None or size < 0 else max(size, self._chunk)
        for line in self._lines:
            parts.append(line)
            total += len(line)
            if total >= target:
                break
        return "".join(parts)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back when it raises."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "bulk_insert",
    "bulk_update",
    "copy_frame",
    "make_engine",
    "migrate",
    "session_scope",
]
