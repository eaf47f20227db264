"""Green's side of the reverse capture: publication and slot ``bluegreen_reverse``.

The slot exists only while writes are on green: ``cutover --writes`` calls
``prepare_green`` after green applied the forward fence and before writes flip, so
the slot covers every green write; ``rollback --writes`` calls ``drop_reverse`` after
blue applied the reverse fence. Both are idempotent and safe when two callers race
(a concurrent create is taken as done). ``reverse_lag`` is what ``status`` shows.

Each published table needs a replica identity that carries the aggregate key, or a
delete would not say which aggregate it removed: FULL, or the primary key / replica
identity index including the key column. ``prepare_green`` checks and refuses with one
line; it never changes a table of green (that is the domain's DDL).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from producers.blue_setup import CONNECT_TIMEOUT_S, SlotHealth, slot_health
from schemas.control import REVERSE_ORIGIN
from schemas.domain import ReverseSpec
from schemas.lsn import parse_lsn

REVERSE_SLOT = REVERSE_ORIGIN  # "bluegreen_reverse"
REVERSE_PUBLICATION = REVERSE_ORIGIN
_DROP_ATTEMPTS = 50  # a walsender being terminated releases the slot within moments
_DROP_RETRY_S = 0.1
_CREATE_WAIT_S = 120.0  # a concurrent caller's slot becoming consistent
# What a caller that lost a creation race gets: the object exists (or its catalog row).
_RACED = (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation)

# The key column is in the identity: FULL, or an identity index (the primary key for
# DEFAULT, the chosen index for INDEX) that has it.
_IDENTITY = """
SELECT c.relreplident,
       EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
               WHERE i.indrelid = c.oid AND a.attname = %(key)s
                 AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                         WHEN 'i' THEN i.indisreplident ELSE false END),
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = %(key)s AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
"""


@dataclass(frozen=True)
class ReverseLag:
    """Green's reverse slot as status shows it (bytes of green WAL not yet in Kafka)."""

    exists: bool
    active: bool = False
    lag_bytes: int = 0
    retained_bytes: int = 0
    confirmed_lsn: int = 0


def prepare_green(settings: Settings, spec: ReverseSpec) -> int:
    """Publication and slot on green (created if missing, checked if present).

    Returns the slot's confirmed LSN: every green commit after it is captured.
    """
    with db.connect(settings.green_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        check_identity(conn, spec)
        _ensure_publication(conn, spec.tables)
        return _ensure_slot(conn)


def check_identity(conn: psycopg.Connection, spec: ReverseSpec) -> None:
    """Refuse (one line) a table whose deletes would not name the aggregate key."""
    for schema, table in spec.tables:
        params = {"schema": schema, "table": table, "key": spec.key_column}
        row = conn.execute(_IDENTITY, params).fetchone()
        name = f"{schema}.{table}"
        if row is None:
            raise BluegreenError(f"green has no table {name} (reverse capture)")
        identity, key_in_index, has_key = row
        if not has_key:
            raise BluegreenError(f"green table {name} has no column {spec.key_column}")
        if identity != "f" and not key_in_index:
            raise BluegreenError(
                f"green table {name} has REPLICA IDENTITY {_IDENTITY_NAMES[identity]} without "
                f"{spec.key_column}: its deletes would not name the aggregate; use REPLICA "
                f"IDENTITY FULL or a key/index that includes {spec.key_column}"
            )


_IDENTITY_NAMES = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


def _ensure_publication(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> None:
    names = sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t)) for s, t in tables
    )
    publication = sql.Identifier(REVERSE_PUBLICATION)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (REVERSE_PUBLICATION,))
    if exists.fetchone() is None:
        try:
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(publication, names))
            return
        except _RACED:
            pass  # created by a concurrent caller: checked below
    members = set(
        conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (REVERSE_PUBLICATION,),
        ).fetchall()
    )
    missing = [
        sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t))
        for s, t in tables
        if (s, t) not in members
    ]
    if missing:
        with contextlib.suppress(*_RACED):  # added by a concurrent caller
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    publication, sql.SQL(", ").join(missing)
                )
            )


def _ensure_slot(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (REVERSE_SLOT,),
    ).fetchone()
    if row is None:
        try:
            created = conn.execute(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                (REVERSE_SLOT,),
            ).fetchone()
        except _RACED:
            return _ensure_slot(conn)  # created by a concurrent caller
        assert created is not None
        return parse_lsn(created[0])
    plugin, database, confirmed = row
    if confirmed is None:  # another session is creating it (its plugin not even set yet)
        _await_consistent(conn)
        return _ensure_slot(conn)
    if plugin != "pgoutput" or database != conn.info.dbname:
        raise BluegreenError(
            f"replication slot {REVERSE_SLOT} exists on green with plugin {plugin} on database "
            f"{database}; the reverse capture needs pgoutput on {conn.info.dbname}"
        )
    return parse_lsn(confirmed)


def _await_consistent(conn: psycopg.Connection) -> None:
    """A slot another session is still creating has no position until it is consistent
    (its creation waits for green's running transactions): wait for it."""
    deadline = time.monotonic() + _CREATE_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(_DROP_RETRY_S)
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (REVERSE_SLOT,),
        ).fetchone()
        if row is None:
            raise BluegreenError(f"replication slot {REVERSE_SLOT} vanished while being created")
        if row[0] is not None:
            return
    raise BluegreenError(
        f"replication slot {REVERSE_SLOT} is still being created by another session after "
        f"{_CREATE_WAIT_S:.0f}s (a long transaction on green holds it back?)"
    )


def drop_reverse(settings: Settings) -> list[str]:
    """Drop green's reverse slot, then its publication; what was dropped (idempotent).

    A slot a running `reverse-cdc` streams is active: its walsender is terminated and
    the drop retried (the service goes back to waiting for the slot).
    """
    dropped = []
    with db.connect(settings.green_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        if _drop_slot(conn):
            dropped.append(f"slot {REVERSE_SLOT}")
        if conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (REVERSE_PUBLICATION,)
        ).fetchone():
            conn.execute(
                sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(REVERSE_PUBLICATION))
            )
            dropped.append(f"publication {REVERSE_PUBLICATION}")
    return dropped


def _drop_slot(conn: psycopg.Connection) -> bool:
    for _ in range(_DROP_ATTEMPTS):
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (REVERSE_SLOT,)
        ).fetchone()
        if row is None:
            return False
        if row[0] is not None:
            conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (REVERSE_SLOT,))
            return True
        except psycopg.errors.ObjectInUse:
            time.sleep(_DROP_RETRY_S)  # the walsender is still going, or was back first
        except psycopg.errors.UndefinedObject:
            return False  # dropped by a concurrent caller
    raise BluegreenError(
        f"could not drop replication slot {REVERSE_SLOT} on green: it stays in use "
        f"(is something other than bluegreen reverse-cdc streaming it?)"
    )


def reverse_lag(settings: Settings) -> ReverseLag:
    """The reverse slot's confirmed position against green's current WAL."""
    with db.connect(settings.green_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        health = slot_health(conn, REVERSE_SLOT)
    return lag_of(health)


def lag_of(health: SlotHealth | None) -> ReverseLag:
    if health is None:
        return ReverseLag(exists=False)
    return ReverseLag(
        exists=True,
        active=health.active,
        lag_bytes=health.lag_bytes,
        retained_bytes=health.retained_bytes,
        confirmed_lsn=health.confirmed_lsn,
    )
