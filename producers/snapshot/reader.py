"""Reads blue at a snapshot that lines up exactly with the CDC stream.

Each worker opens a replication connection and, inside a REPEATABLE READ
transaction, creates a *temporary* logical slot with ``SNAPSHOT 'use'``: the
transaction then sees exactly the transactions that committed before the
slot's consistent point C, and a transaction committing at or after C is one
the CDC slot (created earlier, so at or before C) streams. Rows read here carry
the version (C, 0): older than every change committed after C, newer than every
change before. This is what PostgreSQL's own logical replication does for its
table-sync workers, and it needs no exported snapshot kept alive across
processes: a worker that dies and restarts just takes a new one.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core.errors import BluegreenError
from schemas.envelope import Version
from schemas.lsn import parse_lsn
from schemas.source import SourceSpec

_SNAPSHOT_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c statement_timeout=0"


class BlueSnapshot:
    """A read-only view of blue at one consistent point, on its own replication connection."""

    def __init__(self, dsn: SecretStr, source: SourceSpec, *, create_timeout_s: float) -> None:
        self._source = source
        self.slot = f"bg_snap_{secrets.token_hex(6)}"
        self._conn = psycopg.connect(
            dsn.get_secret_value(),
            replication="database",
            autocommit=True,
            options=_SNAPSHOT_OPTIONS,
            application_name=f"bluegreen-snapshot-{self.slot}",
        )
        # A replication connection speaks only the simple query protocol: never prepare.
        self._conn.prepare_threshold = None
        self.opened_at = time.monotonic()
        self.version = self._open(create_timeout_s)
        self.database = str(self._conn.info.dbname)

    def _open(self, timeout_s: float) -> Version:
        conn = self._conn
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Slot creation waits for transactions running on blue to end; bound that wait.
        timer = threading.Timer(timeout_s, conn.cancel_safe)
        timer.start()
        try:
            row = conn.execute(
                sql.SQL(
                    "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'use')"
                ).format(sql.Identifier(self.slot))
            ).fetchone()
        except psycopg.errors.QueryCanceled as exc:
            self.close()
            raise BluegreenError(
                f"could not take a consistent snapshot of blue within {timeout_s:.0f}s: slot "
                "creation waits for every transaction running on blue to end; look for "
                "long-running or idle-in-transaction sessions in pg_stat_activity"
            ) from exc
        finally:
            timer.cancel()
        assert row is not None
        return Version(parse_lsn(row[1]), 0)

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at

    def read_range(self, lo: int, hi: int | None) -> Iterator[tuple[Any, ...]]:
        key = sql.Identifier(self._source.primary_key)
        where = sql.SQL("{} >= {}").format(key, sql.Literal(int(lo)))
        if hi is not None:
            where = sql.SQL("{} AND {} < {}").format(where, key, sql.Literal(int(hi)))
        yield from self._copy(where)

    def read_keys(self, keys: Sequence[Sequence[str]]) -> Iterator[tuple[Any, ...]]:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self._source.natural_key)
        tuples = sql.SQL(", ").join(
            sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(str(p)) for p in key))
            for key in keys
        )
        yield from self._copy(sql.SQL("({}) IN ({})").format(columns, tuples))

    def _copy(self, where: sql.Composable) -> Iterator[tuple[Any, ...]]:
        spec = self._source
        statement = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
            spec.select_list(), spec.table_sql, where
        )
        with self._conn.cursor().copy(statement) as copy:
            copy.set_types(spec.copy_types())
            yield from copy.rows()

    def stream(self, query: sql.Composable, fetch: int = 5_000) -> Iterator[tuple[Any, ...]]:
        """Rows of a query at this snapshot, through a cursor, `fetch` at a time."""
        cursor = sql.Identifier(f"bg_stream_{secrets.token_hex(4)}")
        self._conn.execute(sql.SQL("DECLARE {} NO SCROLL CURSOR FOR {}").format(cursor, query))
        try:
            while True:
                rows = self._conn.execute(
                    sql.SQL("FETCH {} FROM {}").format(sql.Literal(int(fetch)), cursor)
                ).fetchall()
                if not rows:
                    return
                yield from rows
        finally:
            if not self._conn.closed:
                self._conn.execute(sql.SQL("CLOSE {}").format(cursor))

    def close(self) -> None:
        """End the transaction and the connection; the temporary slot goes with them."""
        if not self._conn.closed:
            self._conn.close()
