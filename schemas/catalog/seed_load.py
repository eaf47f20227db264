"""Load the demo seed into blue with COPY."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from pydantic import SecretStr
from sqlalchemy import Table, UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from bluegreen.core import db
from bluegreen.core.errors import BluegreenError
from bluegreen.core.progress import SILENT, Reporter
from schemas.catalog.blue import COLUMNS, SCHEMA, TABLE, LegacyProduct
from schemas.catalog.ddl import create_blue
from schemas.catalog.seed import generate

_BATCH = 5_000
COPY_TYPES = [
    "int8",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "text",
    "jsonb",
    "numeric",
    "varchar",
    "int4",
    "bool",
    "timestamptz",
    "timestamptz",
]


@dataclass(frozen=True)
class SeedReport:
    rows: int
    table_bytes: int
    toast_bytes: int


def load_seed(
    dsn: SecretStr, count: int, seed: int, *, replace: bool, progress: Reporter = SILENT
) -> SeedReport:
    create_blue(dsn)
    qualified = f"{SCHEMA}.{TABLE}"
    with db.connect(dsn) as conn:
        existing = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()
        if existing and existing[0] and not replace:
            raise BluegreenError(
                f"{qualified} already holds {existing[0]} rows; pass --replace to empty it first "
                "(a running CDC producer will see that as a TRUNCATE)"
            )
        if replace:
            conn.execute(f"TRUNCATE {qualified}")
        # Like pg_restore: load into the bare table, then build the indexes once.
        deferred = _drop_secondary_indexes(conn)
        db.send_str_as_jsonb_text(conn)
        pending = 0
        with conn.cursor().copy(
            f"COPY {qualified} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(COPY_TYPES)
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
            f"SELECT setval(pg_get_serial_sequence('{qualified}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {qualified}), false)"
        )
        conn.commit()
        conn.execute(f"ANALYZE {qualified}")
        sizes = conn.execute(
            "SELECT pg_table_size(c.oid), coalesce(pg_total_relation_size(c.reltoastrelid), 0) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            (qualified,),
        ).fetchone()
        rows = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()
    assert sizes is not None and rows is not None
    return SeedReport(rows=rows[0], table_bytes=sizes[0], toast_bytes=sizes[1])


def _drop_secondary_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop blue's unique constraint and secondary indexes; return the DDL that rebuilds them."""
    table = LegacyProduct.__table__
    assert isinstance(table, Table)
    rebuild: list[str] = []
    dialect = postgresql.dialect()
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            conn.execute(
                f"ALTER TABLE {SCHEMA}.{TABLE} DROP CONSTRAINT IF EXISTS {constraint.name}"
            )
            columns = ", ".join(c.name for c in constraint.columns)
            rebuild.append(
                f"ALTER TABLE {SCHEMA}.{TABLE} ADD CONSTRAINT {constraint.name} UNIQUE ({columns})"
            )
    for index in table.indexes:
        conn.execute(f"DROP INDEX IF EXISTS {SCHEMA}.{index.name}")
        rebuild.append(str(CreateIndex(index).compile(dialect=dialect)))
    return rebuild
