"""The apply step: one green transaction per batch, on the apply thread's own connection.

The transaction first locks its partitions' positions and checks they are where the
batch starts (consumers/positions.py: the serialization and fencing of appliers);
rows are then staged with one binary COPY and applied with set-based statements
(the domain's version-guarded upsert and derivation, ``Domain.apply``); the partitions' positions —
next Kafka offset, newest source LSN and commit time, last fence — are written in
the same transaction, so green always knows exactly what it holds.

Every transaction of a GreenWriter carries a replication origin named
``schemas.control.FORWARD_ORIGIN``_<n> (``bluegreen.core.origins``): green's reverse
capture leaves them out, so blue's changes applied here never travel back to blue.
The origin is taken once per connection (one commit record field per transaction
after that); a role that may not use origins applies unmarked, with one warning.

A GreenWriter is used by one thread only (the consumer's apply thread): psycopg
connections are not to be shared between a thread inside a transaction and another.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.logs import get_logger
from bluegreen.core.origins import take_origin
from consumers import positions, touched
from consumers.batch import Batch, PartitionProgress
from schemas.control import FORWARD_ORIGIN
from schemas.domain import Domain
from schemas.envelope import Version

TRANSIENT = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


_UPSERT_POSITION = positions.record_statement(positions.APPLY)


def create_green(dsn: SecretStr, domain: Domain) -> None:
    """Green's tables: the domain's, and the engine's positions (both idempotent)."""
    domain.create_green(dsn)
    positions.create_table(dsn)
    touched.create_table(dsn)


class GreenWriter:
    def __init__(self, dsn: SecretStr, topic: str, domain: Domain) -> None:
        self._dsn = dsn
        self.topic = topic
        self._stage = domain.stage
        self._sql = domain.apply
        self._copy_sql = domain.stage.copy()
        self._touched = touched.record_statement(domain.stage)
        self._conn: psycopg.Connection | None = None
        self.origin: str | None = None  # the replication origin marking our transactions
        self._origin_refused = False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # Asynchronous commit is safe here: green's position is written in the same
            # transaction; a batch lost in a green crash leaves green's position behind
            # the consumer's, which the next apply's position check (or the rewind after
            # the failed connection) finds, and the consumer reads it again from Kafka
            # (consumers/positions.py). No JIT: the temp
            # tables have no statistics, so their estimates can cross jit_above_cost and a
            # batch would pay tens of milliseconds compiling a plan it runs once.
            self._conn = db.connect(
                self._dsn, connect_timeout=5, options="-c synchronous_commit=off -c jit=off"
            )
            db.send_str_as_jsonb_text(self._conn)
            self._mark(self._conn)
            for statement in (self._stage.ddl(), *self._sql.setup):
                self._conn.execute(statement)
            self._conn.commit()
        return self._conn

    def _mark(self, conn: psycopg.Connection) -> None:
        """Take a forward origin for this connection's transactions (see the module doc)."""
        self.origin = None
        if self._origin_refused:
            return
        try:
            self.origin = take_origin(conn, FORWARD_ORIGIN)
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            self._origin_refused = True
            get_logger(service="consume").warning(
                "green refuses replication origins to this role: applied transactions are "
                "not marked (reverse capture relies on its slot's lifetime alone)",
                error=str(exc).split("\n", 1)[0],
            )

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def reset(self) -> None:
        """Drop the connection after a failure; the next call opens a new one."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def apply(self, batch: Batch) -> None:
        """Apply the batch and its positions in one transaction, and commit.

        Raises PositionMovedError, applying nothing, when a partition's position in
        green is not where the batch starts.
        """
        conn = self._connection()
        try:
            positions.lock(conn, self.topic, batch.expected)
            if batch.rows:
                self._copy(conn, batch.rows)
                self._derive(conn)
                conn.execute(self._touched)  # for the continuous verifier
            self._positions(conn, batch.progress.items())
            conn.commit()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            if isinstance(sys.exc_info()[1], TRANSIENT):
                self.reset()
            raise

    def apply_each(
        self, batch: Batch, before_commit: Callable[[list[tuple[int, psycopg.Error]]], None]
    ) -> list[tuple[int, psycopg.Error]]:
        """Apply message by message (savepoints): return the messages green refused.

        Only used after a whole batch failed on its data, to find the poison message.
        `before_commit` gets the refused messages before green commits past them (so
        they can be dead-lettered first: nothing is lost if we crash in between).
        """
        conn = self._connection()
        refused: list[tuple[int, psycopg.Error]] = []
        by_owner: dict[int, list[tuple[Any, ...]]] = {}
        for row, owner in zip(batch.rows, batch.row_owner, strict=True):
            by_owner.setdefault(owner, []).append(row)
        try:
            with conn.transaction():
                positions.lock(conn, self.topic, batch.expected)
                for owner, rows in by_owner.items():
                    try:
                        with conn.transaction():  # a savepoint
                            self._copy(conn, rows)
                            self._derive(conn)
                            conn.execute(self._touched)
                            conn.execute(self._sql.clear)
                    except psycopg.errors.DataError as exc:
                        refused.append((owner, exc))
                    except psycopg.errors.IntegrityError as exc:
                        refused.append((owner, exc))
                self._positions(conn, batch.progress.items())
                before_commit(refused)
        except TRANSIENT:
            self.reset()
            raise
        return refused

    def _copy(self, conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> None:
        with conn.cursor().copy(self._copy_sql) as copy:
            copy.set_types(self._stage.copy_types)
            for row in rows:
                copy.write_row(row)

    def _derive(self, conn: psycopg.Connection) -> None:
        for statement in self._sql.apply:
            conn.execute(statement)

    def _positions(
        self, conn: psycopg.Connection, progress: Iterable[tuple[int, PartitionProgress]]
    ) -> None:
        params = [
            {
                "topic": self.topic,
                "partition": partition,
                "next_offset": p.next_offset,
                "src_lsn": p.src_lsn,
                "src_ts_ms": p.src_ts_ms,
                "fence_id": p.fence.fence_id if p.fence else None,
                "fence_lsn": p.fence.lsn if p.fence else None,
            }
            for partition, p in progress
        ]
        if params:
            with conn.cursor() as cur:
                cur.executemany(_UPSERT_POSITION, params)

    def truncate(
        self, partition: int, version: Version, progress: PartitionProgress, expected: int
    ) -> None:
        """Apply blue's TRUNCATE on one partition: tombstone its older records, set its floor."""
        conn = self._connection()
        try:
            with conn.transaction():
                positions.lock(conn, self.topic, {partition: expected})
                conn.execute(
                    self._sql.truncate,
                    {"partition": partition, "lsn": version.lsn, "seq": version.seq},
                )
                for statement in self._sql.after_truncate:
                    conn.execute(statement)
                conn.execute(touched.RECORD_ALL)  # every key of the partition: a full pass
                self._positions(conn, [(partition, progress)])
                conn.execute(
                    "UPDATE sync.apply_position SET floor_lsn = %s, floor_seq = %s "
                    "WHERE topic = %s AND partition = %s",
                    (version.lsn, version.seq, self.topic, partition),
                )
        except TRANSIENT:
            self.reset()
            raise
