"""One aggregate's read on either color, as the domain declares it: what the router's
keyed read (``TrafficRouter.read``) runs, and what a shadowed read runs on the other
color.

Blue: the source table's rows of the aggregate key (the catalog's SKU), as a decoded
change envelope carries them (``SourceSpec.plain_select``), so the transform takes them
as they are. Green: the rows of each table verification compares
(``Domain.verify.tables``), restricted to the key, in one snapshot. No second
declaration: the domain's verify spec already says how one aggregate is read.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from schemas.domain import Domain
from schemas.source import SourceSpec

# One aggregate's answer: rows by table name (blue: the source table's name; green: each
# verified table's `GreenTable.name`), each row a tuple of the declared fields.
Answer = dict[str, list[tuple[Any, ...]]]


def blue_query(source: SourceSpec) -> sql.Composed:
    """One aggregate's blue rows, in natural-key order; parameter %(key)s."""
    order = [k for k in source.natural_key if k != source.aggregate_key] or [source.primary_key]
    return sql.SQL("SELECT {} FROM {} WHERE {} = %(key)s ORDER BY {}").format(
        source.plain_select(),
        source.table_sql,
        sql.Identifier(source.aggregate_key),
        sql.SQL(", ").join(map(sql.Identifier, order)),
    )


def read_aggregate(conn: psycopg.Connection, domain: Domain, color: str, key: str) -> Answer:
    """The aggregate `key` as `color` holds it. `conn` is an autocommit connection to
    that color; green's tables are read in one REPEATABLE READ transaction, so a product
    and its listings come from the same moment."""
    if color == "blue":
        rows = conn.execute(blue_query(domain.source), {"key": key}).fetchall()
        return {domain.source.table: rows}
    answer: Answer = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in domain.verify.tables:
            cursor = conn.execute(table.query(True), {"only": [key]})
            answer[table.name] = [row[:-1] for row in cursor]  # the version column last
    return answer
