"""Create blue's and green's tables from the SQLAlchemy models."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from bluegreen.core.db import sqlalchemy_url
from schemas.catalog.blue import BlueBase
from schemas.catalog.green import SCHEMAS, GreenBase

# Services start together (two consumers, say): one creates the tables, the others wait.
_DDL_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'))")


def create_blue(dsn: SecretStr) -> None:
    engine = create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(_DDL_LOCK)
            BlueBase.metadata.create_all(conn)
    except DBAPIError as exc:
        raise _driver_error(exc) from exc
    finally:
        engine.dispose()


def create_green(dsn: SecretStr) -> None:
    engine = create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(_DDL_LOCK)
            for schema in SCHEMAS:
                conn.execute(CreateSchema(schema, if_not_exists=True))
            GreenBase.metadata.create_all(conn)
    except DBAPIError as exc:
        raise _driver_error(exc) from exc
    finally:
        engine.dispose()


def _driver_error(exc: DBAPIError) -> BaseException:
    """psycopg's own error under SQLAlchemy's wrapper: callers retry or report psycopg errors."""
    return exc.orig if isinstance(exc.orig, BaseException) else exc


def ddl_script(color: str) -> str:
    """The CREATE statements for one side, as PostgreSQL text (for review or DBAs)."""
    metadata = BlueBase.metadata if color == "blue" else GreenBase.metadata
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
    parts = [
        str(CreateSchema(s, if_not_exists=True).compile(dialect=dialect)) + ";"
        for s in (SCHEMAS if color == "green" else ())
    ]
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
        parts.extend(
            str(CreateIndex(index).compile(dialect=dialect)).strip() + ";"
            for index in table.indexes
        )
    return "\n\n".join(parts) + "\n"
