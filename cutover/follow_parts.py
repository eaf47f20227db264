"""Two parts of the continuous verifier (``cutover.follow``): the lock that keeps it
alone on a green, and the sweep through the key space."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from producers.snapshot.reader import BlueSnapshot
from schemas.domain import Domain

_LOCK = "bluegreen verify --follow"


class VerifierLock:
    """A session-level advisory lock on green, held by one verifier at a time."""

    def __init__(self, dsn: SecretStr, stop: threading.Event) -> None:
        self._dsn, self.stop = dsn, stop
        self.log = get_logger(service="verify-follow")
        self._lock: psycopg.Connection[Any] | None = None

    def hold(self) -> psycopg.Connection[Any]:
        """The session holding the verifier's advisory lock on green (waiting for it).

        One verifier at a time, the mechanism behind the watermark: two would each
        delete queue rows the other verified, and one could overwrite the other's list
        of differing SKUs with its own. The state and the queue are only ever written
        in a transaction of this very session, so if the session (and the lock) is
        lost mid-cycle, the write fails instead of racing a new holder."""
        conn = self._lock
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._lock = None
        conn = db.connect(self._dsn, autocommit=True)
        waiting = False
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK,)).fetchone()
            if row is not None and row[0]:
                break
            if not waiting:
                self.log.info("another verifier runs on this green; waiting for its lock")
                waiting = True
            if self.stop.wait(1.0):
                conn.close()
                raise BluegreenError("stopped while waiting for the verifier's lock")
        self._lock = conn
        return conn

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class Sweep:
    """Re-verifies the key space slice by slice, whatever the change stream says: what
    changed in green outside the pipeline is found within one round of the catalog."""

    def __init__(self, domain: Domain, keys: int) -> None:
        self.domain, self.keys = domain, keys
        self._after: str | None = None  # the position in key order

    def next_slice(self, green: Any, snapshot: BlueSnapshot) -> list[str]:
        """The aggregates of the next slice of the key space, wrapping at the end: the
        next `sweep_keys` keys of green's first table, and blue's keys in the same range
        (so an aggregate green lost is swept too). Keys compare in the C collation."""
        if self.keys <= 0:
            return []
        table = self.domain.verify.tables[0]
        lo = self._after or ""
        query = sql.SQL(
            'SELECT {key}::text COLLATE "C" AS k FROM {table} WHERE {key}::text COLLATE "C" > %s '
            "ORDER BY 1 LIMIT %s"
        ).format(
            key=sql.Identifier(table.fields[0]), table=sql.Identifier(table.schema, table.table)
        )
        found = [str(r[0]) for r in green.execute(query, (lo, self.keys)).fetchall()]
        hi = found[-1] if len(found) == self.keys else None
        blue_key = sql.Identifier(self.domain.source.aggregate_key)
        where = sql.SQL('{k}::text COLLATE "C" > {lo}').format(k=blue_key, lo=sql.Literal(lo))
        if hi is not None:
            where = sql.SQL('{w} AND {k}::text COLLATE "C" <= {hi}').format(
                w=where, k=blue_key, hi=sql.Literal(hi)
            )
        blue = snapshot.stream(
            sql.SQL("SELECT DISTINCT {k}::text FROM {t} WHERE {w}").format(
                k=blue_key, t=self.domain.source.table_sql, w=where
            )
        )
        self._after = hi
        return sorted(set(found) | {str(r[0]) for r in blue})
