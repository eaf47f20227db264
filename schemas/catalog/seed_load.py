"""Load the demo seed into blue with COPY."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Table, UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from bluegreen.core import db
from bluegreen.core.errors import BluegreenError
from bluegreen.core.progress import SILENT, Reporter
from schemas.catalog.blue import LegacyProduct
from schemas.catalog.ddl import create_blue
from schemas.catalog.seed import generate
from schemas.catalog.source import SOURCE

_BATCH = 5_000


@dataclass(frozen=True)
class SeedReport:
    rows: int
    table_bytes: int
    toast_bytes: int


def load_seed(
    dsn: SecretStr, count: int, seed: int, *, replace: bool, progress: Reporter = SILENT
) -> SeedReport:
    create_blue(dsn)
    table = SOURCE.table_sql
    qualified = f"{SOURCE.schema}.{SOURCE.table}"
    count_rows = sql.SQL("SELECT count(*) FROM {}").format(table)
    with db.connect(dsn) as conn:
        existing = conn.execute(count_rows).fetchone()
        if existing and existing[0] and not replace:
            raise BluegreenError(
                f"{qualified} already holds {existing[0]} rows; pass --replace to empty it first "
                "(a running CDC producer will see that as a TRUNCATE)"
            )
        if replace:
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
        # Like pg_restore: load into the bare table, then build the indexes once.
        deferred = _drop_secondary_indexes(conn)
        db.send_str_as_jsonb_text(conn)
        pending = 0
        copy_rows = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            table, sql.SQL(", ").join(map(sql.Identifier, SOURCE.names))
        )
        with conn.cursor().copy(copy_rows) as copy:
            copy.set_types(SOURCE.native_copy_types())
            for row in generate(count, seed):
                copy.write_row(row)
                pending += 1
                if pending == _BATCH:
                    progress.advance(pending)
                    pending = 0
        progress.advance(pending)
        for statement in deferred:
            conn.execute(statement)
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({name}, {key}), "
                "(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
            ).format(
                name=sql.Literal(qualified),
                key=sql.Literal(SOURCE.primary_key),
                column=sql.Identifier(SOURCE.primary_key),
                table=table,
            )
        )
        conn.commit()
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        sizes = conn.execute(
            "SELECT pg_table_size(c.oid), coalesce(pg_total_relation_size(c.reltoastrelid), 0) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            (qualified,),
        ).fetchone()
        rows = conn.execute(count_rows).fetchone()
    assert sizes is not None and rows is not None
    return SeedReport(rows=rows[0], table_bytes=sizes[0], toast_bytes=sizes[1])


def _drop_secondary_indexes(conn: psycopg.Connection[Any]) -> list[sql.SQL | sql.Composed]:
    """Drop blue's unique constraint and secondary indexes; return the DDL that rebuilds them."""
    table = LegacyProduct.__table__
    assert isinstance(table, Table)
    rebuild: list[sql.SQL | sql.Composed] = []
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
    target = SOURCE.table_sql
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            name = sql.Identifier(str(constraint.name))
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(target, name)
            )
            columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in constraint.columns)
            rebuild.append(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})").format(
                    target, name, columns
                )
            )
    for index in table.indexes:
        conn.execute(
            sql.SQL("DROP INDEX IF EXISTS {}").format(
                sql.Identifier(SOURCE.schema, str(index.name))
            )
        )
        # SQLAlchemy's own DDL for the index, as PostgreSQL text (not built from input).
        rebuild.append(sql.SQL(str(CreateIndex(index).compile(dialect=dialect))))
    return rebuild
