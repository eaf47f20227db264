"""The keys the applier touched, for the continuous verifier (``cutover.follow``).

Every apply transaction appends one row to green's ``sync.verify_queue``: the distinct
aggregate keys of the rows it staged (one ``INSERT ... SELECT array_agg(DISTINCT ...)``
over the staging table, a fraction of a millisecond). It is written in the batch's own
transaction, so a row exists exactly when its batch committed: a key green changed is
never missing from the queue. A TRUNCATE of blue touches every key of a partition; it
appends a row without keys (NULL), which asks the verifier for a full pass.

The verifier reads the rows, re-verifies their keys, and deletes exactly the rows it
read (by id: rows committed meanwhile stay for its next cycle, whatever their ids).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from schemas.stage import StageTable

QUEUE = sql.Identifier("sync", "verify_queue")
_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'))"  # positions.py's too
_DDL = sql.SQL("""
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS {queue} (
    id          bigserial PRIMARY KEY,
    keys        text[],  -- NULL: every key (a TRUNCATE)
    recorded_at timestamptz NOT NULL DEFAULT now()
);
""").format(queue=QUEUE)


def create_table(dsn: SecretStr) -> None:
    """Create the queue (idempotent; concurrent callers wait for one)."""
    with db.connect(dsn) as conn:
        conn.execute(_DDL_LOCK)
        conn.execute(_DDL.as_string(conn).encode())
        conn.commit()


def record_statement(stage: StageTable) -> sql.Composed:
    """The statement an apply transaction runs after its rows are applied: the distinct
    aggregate keys (the staging table's first key column) of what it staged."""
    return sql.SQL(
        "INSERT INTO {queue} (keys) SELECT array_agg(DISTINCT {key}::text) FROM {stage} "
        "HAVING count(*) > 0"
    ).format(queue=QUEUE, key=sql.Identifier(stage.key[0]), stage=sql.Identifier(stage.name))


RECORD_ALL = sql.SQL("INSERT INTO {queue} (keys) VALUES (NULL)").format(queue=QUEUE)


def read(conn: psycopg.Connection[Any], limit: int) -> tuple[list[int], set[str] | None, int]:
    """(ids read, keys they name — None when one asks for every key, rows left unread).
    Reads at most `limit` rows, oldest first."""
    rows = conn.execute(
        sql.SQL("SELECT id, keys FROM {} ORDER BY id LIMIT %s").format(QUEUE), (limit,)
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    keys: set[str] | None = set()
    for _id, named in rows:
        if named is None:
            keys = None
        elif keys is not None:
            keys.update(named)
    left = 0
    if len(rows) == limit:
        found = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE id > %s").format(QUEUE), (ids[-1],)
        ).fetchone()
        left = int(found[0]) if found else 0
    return ids, keys, left


def backlog(conn: psycopg.Connection[Any]) -> int:
    """Rows waiting (each one batch's keys)."""
    found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(QUEUE)).fetchone()
    return int(found[0]) if found else 0


def delete(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    if ids:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(QUEUE), (ids,))


def clear_through(conn: psycopg.Connection[Any]) -> None:
    """Delete every row committed so far: a full pass begins after this, so it covers them."""
    conn.execute(sql.SQL("DELETE FROM {}").format(QUEUE))
