"""Blue's side of the reverse applier: its tables, the batch transaction, and what the
switch reads (positions and fences, the keys written on green).

Positions live in ``bluegreen_sync.reverse_position`` with the columns of green's
``sync.apply_position`` (consumers/positions.py ``REVERSE``): the same FOR UPDATE lock
and expected-offset check fence zombies and rebalances. ``bluegreen_sync.reverse_touched``
holds every aggregate key the applier wrote, with the newest green LSN it reflects:
``rollback --writes`` re-snapshots exactly those keys into green, then clears them.

One transaction per batch, state-based: lock the batch's partitions, read the touched
aggregates' current state from green (one query, in a snapshot that sees every green
transaction of the batch: see ``_VISIBLE``), read their blue rows (FOR UPDATE),
compute the domain's inverse, and write only the difference (upserts on the natural
key, then deletes: each one executemany, pipelined); then the touched keys and the
positions. The newest read always wins: a replay writes nothing new, and order within
a key does not matter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from bluegreen.core import db
from consumers import positions
from consumers.batch import PartitionProgress
from consumers.reverse.origin import take_origin
from schemas.domain import ReverseSpec
from schemas.lsn import format_lsn

SCHEMA = positions.REVERSE.schema
TOUCHED_DDL = """
CREATE TABLE IF NOT EXISTS bluegreen_sync.reverse_touched (
    key text PRIMARY KEY,
    lsn bigint NOT NULL
);
"""
_RECORD = positions.record_statement(positions.REVERSE)

# A green transaction is decoded (and can reach this applier) as soon as its commit
# record is flushed to WAL, a moment *before* other sessions see it: the backend
# leaves the proc array after the flush. A state read in that moment would miss the
# very change it was sent for, and the applier would move past it: the write lost in
# blue. So green's state is read in a REPEATABLE READ snapshot in which every
# transaction of the batch is visible (pg_visible_in_snapshot; the 32-bit xids
# pgoutput sends are widened to xid8 with the snapshot's epoch), taken again until
# it is. Counts the batch's transactions the snapshot does not see yet.
_VISIBLE = """
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot((
           (floor(m.xmax / 4294967296) - CASE WHEN x > mod(m.xmax, 4294967296) THEN 1 ELSE 0 END)
           * 4294967296 + x)::text::xid8, m.snap))
FROM (SELECT s AS snap, pg_snapshot_xmax(s)::text::numeric AS xmax
      FROM pg_current_snapshot() AS s) AS m,
     unnest(%(xids)s::bigint[]) AS x
"""
VISIBLE_WAIT_S = 5.0  # a decoded transaction not visible by then: a doubt, the batch is retried
_TOUCH = sql.SQL("""
INSERT INTO bluegreen_sync.reverse_touched AS t (key, lsn)
SELECT * FROM unnest(%(keys)s::text[], %(lsns)s::bigint[])
ON CONFLICT (key) DO UPDATE SET lsn = greatest(t.lsn, EXCLUDED.lsn)
""")


def create_tables(dsn: SecretStr) -> None:
    """Blue's reverse positions and touched keys (idempotent)."""
    positions.create_table(dsn, positions.REVERSE)
    with db.connect(dsn) as conn:
        conn.execute(TOUCHED_DDL)
        conn.commit()


class GreenUnavailableError(Exception):
    """Green could not be read (the batch is not applied; the service retries)."""


@dataclass
class ReverseBatch:
    """What one blue transaction applies: touched keys (newest green LSN each), per
    partition the offset blue must hold and where it stands after."""

    keys: dict[str, int] = field(default_factory=dict)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)
    expected: dict[int, int] = field(default_factory=dict)
    green_commit_ms: list[int] = field(default_factory=list)
    xids: set[int] = field(default_factory=set)  # green transactions of the touched keys
    size: int = 0


@dataclass(frozen=True)
class Applied:
    aggregates: int  # keys read
    upserted: int  # blue rows written
    deleted: int  # blue rows deleted


class ReverseStatements:
    """The engine's blue statements, composed from the domain's ReverseSpec."""

    def __init__(self, spec: ReverseSpec) -> None:
        table = sql.Identifier(*spec.blue_table)
        key = sql.Identifier(spec.blue_key)
        names = sql.SQL(", ").join
        self.select = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%(keys)s)").format(
            names(map(sql.Identifier, spec.read_columns)), table, key
        )
        self.read = self.select + sql.SQL(" FOR UPDATE")  # the applier's: rows it rewrites
        updated = [c for c in spec.write_columns if c not in spec.natural_key]
        self.upsert = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}"
        ).format(
            table,
            names(map(sql.Identifier, spec.write_columns)),
            names(sql.Placeholder() for _ in spec.write_columns),
            names(map(sql.Identifier, spec.natural_key)),
            names(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("excluded", c))
                for c in updated
            ),
        )
        self.delete = sql.SQL("DELETE FROM {} WHERE {}").format(
            table,
            sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder())
                for c in spec.natural_key
            ),
        )


def difference(
    spec: ReverseSpec, existing: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rows to upsert, natural keys to delete) turning `existing` into `wanted`."""
    have = {tuple(row[c] for c in spec.natural_key): row for row in existing}
    upserts = []
    keep = set()
    for row in wanted:
        natural = tuple(row[c] for c in spec.natural_key)
        keep.add(natural)
        old = have.get(natural)
        if old is None or any(old[c] != row[c] for c in spec.write_columns):
            upserts.append(tuple(_param(row[c]) for c in spec.write_columns))
    return upserts, [natural for natural in have if natural not in keep]


def _param(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


class BlueWriter:
    """The apply connection to blue (origin set once per session) and a green reader.

    Used by one thread only."""

    def __init__(
        self, blue_dsn: SecretStr, green_dsn: SecretStr, topic: str, spec: ReverseSpec, origins: int
    ) -> None:
        self._blue_dsn, self._green_dsn = blue_dsn, green_dsn
        self.topic = topic
        self._spec = spec
        self._origins = origins
        self._sql = ReverseStatements(spec)
        self._blue: psycopg.Connection | None = None
        self._green: psycopg.Connection | None = None
        self.origin: str | None = None

    def _connections(self) -> tuple[psycopg.Connection, psycopg.Connection]:
        if self._blue is None or self._blue.closed or self._blue.broken:
            self._blue = db.connect(self._blue_dsn, connect_timeout=5, autocommit=True)
            self.origin = take_origin(self._blue, self._origins)
            self._blue.autocommit = False
        if self._green is None or self._green.closed or self._green.broken:
            try:
                self._green = db.connect(self._green_dsn, connect_timeout=5, autocommit=True)
            except psycopg.OperationalError as exc:
                raise GreenUnavailableError(str(exc)) from exc
            self._green.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._green.read_only = True
        return self._blue, self._green

    def apply(self, batch: ReverseBatch) -> Applied:
        """One blue transaction; raises PositionMovedError (nothing applied) or the
        connection's error (the caller rewinds)."""
        try:
            blue, green = self._connections()
            with blue.transaction():
                return self._apply(blue, green, batch)
        except (psycopg.OperationalError, GreenUnavailableError):
            self.close()
            raise

    def _apply(
        self, blue: psycopg.Connection, green: psycopg.Connection, batch: ReverseBatch
    ) -> Applied:
        positions.lock(blue, self.topic, batch.expected, positions.REVERSE)
        lsns = [p.src_lsn for p in batch.progress.values() if p.src_lsn]
        if lsns:  # the origin's progress: what of green this blue transaction reflects
            ts = max(p.src_ts_ms for p in batch.progress.values())
            blue.execute(
                "SELECT pg_replication_origin_xact_setup(%s::pg_lsn, to_timestamp(%s / 1000.0))",
                (format_lsn(max(lsns)), ts),
            )
        upserted = deleted = 0
        if batch.keys:
            keys = sorted(batch.keys)
            upserted, deleted = self._write(blue, green, keys, batch.xids)
            blue.execute(_TOUCH, {"keys": keys, "lsns": [batch.keys[k] for k in keys]})
        for partition, progress in sorted(batch.progress.items()):
            fence = progress.fence
            blue.execute(
                _RECORD,
                {
                    "topic": self.topic,
                    "partition": partition,
                    "next_offset": progress.next_offset,
                    "src_lsn": progress.src_lsn,
                    "src_ts_ms": progress.src_ts_ms,
                    "fence_id": fence.fence_id if fence else None,
                    "fence_lsn": fence.lsn if fence else None,
                },
            )
        return Applied(len(batch.keys), upserted, deleted)

    def _green_state(
        self, green: psycopg.Connection, keys: list[str], xids: set[int]
    ) -> list[tuple[Any, ...]]:
        """The touched aggregates' rows in green, in a snapshot that sees `xids`."""
        spec = self._spec
        deadline = time.monotonic() + VISIBLE_WAIT_S
        try:
            while True:
                with green.transaction():  # REPEATABLE READ: one snapshot for both reads
                    row = green.execute(_VISIBLE, {"xids": sorted(xids)}).fetchone()
                    if row is None or not row[0]:
                        return green.execute(spec.green_query, {"keys": keys}).fetchall()
                if time.monotonic() > deadline:
                    raise GreenUnavailableError(
                        f"{row[0]} decoded green transaction(s) still not visible after "
                        f"{VISIBLE_WAIT_S:.0f}s"
                    )
                time.sleep(0.002)
        except psycopg.OperationalError as exc:
            raise GreenUnavailableError(str(exc)) from exc

    def _write(
        self, blue: psycopg.Connection, green: psycopg.Connection, keys: list[str], xids: set[int]
    ) -> tuple[int, int]:
        spec = self._spec
        assert spec.aggregates is not None and spec.inverse is not None  # checked at start
        found = self._green_state(green, keys, xids)
        states = spec.aggregates(keys, found)
        cursor = blue.cursor(row_factory=psycopg.rows.dict_row)
        rows = cursor.execute(self._sql.read, {"keys": keys}).fetchall()
        by_key: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
        for row in rows:
            by_key[str(row[spec.blue_key])].append(row)
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for key in keys:
            wanted = spec.inverse(states[key], by_key[key])
            more, gone = difference(spec, by_key[key], wanted)
            upserts += more
            deletes += gone
        writes = blue.cursor()
        if deletes:  # rare (a listing or product gone): one statement per row is fine
            writes.executemany(self._sql.delete, deletes)
        if upserts:
            writes.executemany(self._sql.upsert, upserts)
        return len(upserts), len(deletes)

    def close(self) -> None:
        for conn in (self._blue, self._green):
            if conn is not None and not conn.closed:
                conn.close()
        self._blue = self._green = None
        self.origin = None


# -- what the switch reads (cutover --writes / rollback --writes) ------------------------------


def read_positions(conn: psycopg.Connection, topic: str) -> dict[int, dict[str, Any]]:
    """Blue's reverse position per partition: next_offset, src_lsn, src_ts_ms, fence_id,
    fence_lsn (empty before the reverse applier ever ran)."""
    exists = conn.execute("SELECT to_regclass('bluegreen_sync.reverse_position')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
    rows = cursor.execute(
        "SELECT partition, next_offset, src_lsn, src_ts_ms, fence_id, fence_lsn "
        "FROM bluegreen_sync.reverse_position WHERE topic = %s",
        (topic,),
    ).fetchall()
    return {int(row.pop("partition")): row for row in rows}


def fence_applied(conn: psycopg.Connection, topic: str, fence_lsn: int) -> set[int]:
    """The partitions on which blue applied a fence at or after `fence_lsn` (green's LSN)."""
    return {
        p for p, row in read_positions(conn, topic).items() if (row["fence_lsn"] or 0) >= fence_lsn
    }


def touched_keys(conn: psycopg.Connection) -> dict[str, int]:
    """Every aggregate key the reverse applier wrote into blue, with the newest green LSN."""
    exists = conn.execute("SELECT to_regclass('bluegreen_sync.reverse_touched')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute("SELECT key, lsn FROM bluegreen_sync.reverse_touched").fetchall()
    return {str(key): int(lsn) for key, lsn in rows}


def clear_touched(conn: psycopg.Connection, keys: Iterable[str]) -> int:
    """Forget these keys (green was refreshed from blue for them); the caller commits.
    A key written again meanwhile at a newer LSN is forgotten too: pass only keys read
    after the writes stopped."""
    cursor = conn.execute(
        "DELETE FROM bluegreen_sync.reverse_touched WHERE key = ANY(%s)", (list(keys),)
    )
    return cursor.rowcount
