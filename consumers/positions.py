"""Green's record of where each partition stands, and the lock that serializes appliers.

``sync.apply_position`` holds, per (topic, partition), the next Kafka offset green has
applied and the partition's truncate floor, written in the same transaction as the
rows. It is the only position that counts: Kafka's committed offsets are a copy (for
lag dashboards and tools) that may run ahead of green after a green crash
(asynchronous commit loses the last transactions) or behind it after a failed
offset commit.

Serialization and fencing, the mechanism behind guarantees 4 and 7: every apply
transaction first locks the position rows of its partitions (``FOR UPDATE``, in
partition order, so two appliers cannot deadlock on them) and checks that each still
holds the offset the batch starts from.

* Producers key every operation by its green aggregate (a SKU move is two
  operations, one per SKU), so two transactions that touch one green key are two
  transactions of the same partition, and this lock makes the second wait for the
  first. Under READ COMMITTED each later statement takes its snapshot after the lock
  was granted, so it sees everything the first committed: no data-modifying CTE
  works from a snapshot that misses a concurrent commit on its keys.
* A position that is not where the batch expects it means someone else applied the
  partition meanwhile (a zombie consumer, the partition's new owner) or green lost
  transactions in a crash. Nothing of the batch is applied (``PositionMoved``) and the
  consumer rewinds the partitions to green's positions.

The table is the engine's, whatever the domain: ``create_table`` makes it (the domain
creates its own tables, ``Domain.create_green``). The reverse applier keeps the same
record in blue (``REVERSE``: ``bluegreen_sync.reverse_position``, issue 14); every
function takes the table, green's ``APPLY`` by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from schemas.envelope import Version

# A claimed partition green has applied nothing of starts at offset 0: the beginning of
# the partition (or, if retention removed its first segments, the earliest offset kept,
# by the consumer's auto.offset.reset=earliest).
NOTHING_APPLIED = 0


@dataclass(frozen=True)
class PositionTable:
    """Where a side keeps its positions: (schema, table), and which side that is."""

    schema: str
    table: str
    side: str

    @property
    def name(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


APPLY = PositionTable("sync", "apply_position", "green")  # green: the forward applier's
REVERSE = PositionTable("bluegreen_sync", "reverse_position", "blue")  # blue: the reverse applier's


@dataclass(frozen=True)
class Position:
    next_offset: int
    floor: Version  # changes at or below it (a TRUNCATE of blue) are ignored


class PositionMovedError(Exception):
    """The stored position of a partition is not where the batch starts: nothing applied."""

    def __init__(self, moved: Mapping[int, int | None], side: str = "green") -> None:
        self.moved = dict(moved)
        described = ", ".join(
            f"partition {p} at {'nothing' if o is None else o}" for p, o in sorted(moved.items())
        )
        super().__init__(f"{side}'s positions moved: {described}")


# Services start together (two consumers, say): one creates the table, the others wait.
_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'))"
_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.{table} (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    src_lsn bigint DEFAULT 0 NOT NULL,
    src_ts_ms bigint DEFAULT 0 NOT NULL,
    fence_id text,
    fence_lsn bigint,
    -- After a TRUNCATE at version (floor_lsn, floor_seq), older changes on this
    -- partition are ignored: a late snapshot row cannot bring back a truncated row.
    floor_lsn bigint DEFAULT 0 NOT NULL,
    floor_seq integer DEFAULT 0 NOT NULL,
    updated_at timestamptz DEFAULT now() NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


def ddl(table: PositionTable = APPLY) -> str:
    """The CREATE statements of a position table (its names are the engine's constants)."""
    return _DDL.format(schema=table.schema, table=table.table)


DDL = ddl(APPLY)


def create_table(dsn: SecretStr, table: PositionTable = APPLY) -> None:
    """Create a position table (idempotent; concurrent callers wait for one)."""
    with db.connect(dsn) as conn:
        conn.execute(_DDL_LOCK)
        conn.execute(ddl(table).encode())
        conn.commit()


_CLAIM = sql.SQL("""
INSERT INTO {table} (topic, partition, next_offset)
SELECT %(topic)s, p, %(nothing)s FROM unnest(%(partitions)s::int[]) AS p
ON CONFLICT (topic, partition) DO NOTHING
""")
_READ = sql.SQL("""
SELECT partition, next_offset, floor_lsn, floor_seq FROM {table}
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
""")
_LOCK = sql.SQL("""
SELECT partition, next_offset FROM {table}
WHERE topic = %(topic)s AND partition = ANY(%(partitions)s)
ORDER BY partition
FOR UPDATE
""")

# A batch's progress on one partition, written in the apply transaction itself (after
# lock()): next Kafka offset, newest source LSN and commit time, last fence.
_RECORD = sql.SQL("""
INSERT INTO {table} AS a (topic, partition, next_offset, src_lsn, src_ts_ms,
                          fence_id, fence_lsn, updated_at)
VALUES (%(topic)s, %(partition)s, %(next_offset)s, %(src_lsn)s, %(src_ts_ms)s,
        %(fence_id)s, %(fence_lsn)s, now())
ON CONFLICT (topic, partition) DO UPDATE SET
    next_offset = EXCLUDED.next_offset,
    src_lsn = greatest(a.src_lsn, EXCLUDED.src_lsn),
    src_ts_ms = greatest(a.src_ts_ms, EXCLUDED.src_ts_ms),
    fence_id = coalesce(EXCLUDED.fence_id, a.fence_id),
    fence_lsn = coalesce(EXCLUDED.fence_lsn, a.fence_lsn),
    updated_at = now()
""")


def record_statement(table: PositionTable = APPLY) -> sql.Composed:
    """The upsert of one partition's position (parameters: topic, partition, next_offset,
    src_lsn, src_ts_ms, fence_id, fence_lsn)."""
    return _RECORD.format(table=table.name)


def claim(
    conn: psycopg.Connection,
    topic: str,
    partitions: Iterable[int],
    table: PositionTable = APPLY,
) -> dict[int, Position]:
    """The side's positions of these partitions, creating a row for those it has none
    of (so the apply lock always finds a row to take); one committed transaction."""
    params = {"topic": topic, "partitions": sorted(set(partitions)), "nothing": NOTHING_APPLIED}
    with conn.transaction():
        conn.execute(_CLAIM.format(table=table.name), params)
        rows = conn.execute(_READ.format(table=table.name), params).fetchall()
    return {p: Position(offset, Version(lsn, seq)) for p, offset, lsn, seq in rows}


def lock(
    conn: psycopg.Connection,
    topic: str,
    expected: Mapping[int, int],
    table: PositionTable = APPLY,
) -> None:
    """Inside the apply transaction: lock the batch's partitions, check where they stand.

    Raises PositionMovedError (the caller rolls back) when any partition is elsewhere.
    """
    if not expected:
        return
    query = _LOCK.format(table=table.name)
    rows = conn.execute(query, {"topic": topic, "partitions": sorted(expected)}).fetchall()
    stored: dict[int, int | None] = {p: None for p in expected}
    stored.update({int(p): int(offset) for p, offset in rows})
    moved = {p: stored[p] for p, offset in expected.items() if stored[p] != offset}
    if moved:
        raise PositionMovedError(moved, table.side)


class PositionReader:
    """The consumer thread's own green connection: reads positions at assignment and
    rewind, never touching the apply thread's connection."""

    def __init__(self, dsn: SecretStr, topic: str, table: PositionTable = APPLY) -> None:
        self._dsn = dsn
        self.topic = topic
        self.table = table
        self._conn: psycopg.Connection | None = None

    def claim(self, partitions: Iterable[int]) -> dict[int, Position]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = db.connect(self._dsn, connect_timeout=5)
        try:
            return claim(self._conn, self.topic, partitions, self.table)
        except psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
