"""What blue needs for log-based capture: a publication, full replica identity, a slot.

REPLICA IDENTITY FULL makes updates and deletes carry the whole old row, so an
update that leaves a TOASTed column unchanged can take its value from the old
tuple, and a delete names its row's natural key. The slot is created before any
snapshot is taken, so the CDC stream covers every commit after every snapshot.
Connection attempts give up after `CONNECT_TIMEOUT_S`, so a caller that retries
(`bluegreen cdc`) is not held by an unreachable host for the kernel's TCP timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.config import CdcSettings
from bluegreen.core.errors import BluegreenError
from schemas.lsn import parse_lsn
from schemas.source import SourceSpec

CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class SlotHealth:
    slot: str
    active: bool
    confirmed_lsn: int
    restart_lsn: int
    current_lsn: int
    wal_status: str | None
    safe_wal_size: int | None

    @property
    def lag_bytes(self) -> int:
        """WAL written on blue that the slot has not yet confirmed."""
        return max(0, self.current_lsn - self.confirmed_lsn)

    @property
    def retained_bytes(self) -> int:
        """WAL blue keeps for this slot."""
        return max(0, self.current_lsn - self.restart_lsn)


def prepare_blue(dsn: SecretStr, source: SourceSpec, cdc: CdcSettings) -> int:
    """Create (or check) the publication, replica identity and slot; return the slot's LSN."""
    with db.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        _ensure_publication(conn, source, cdc.publication)
        identity = conn.execute(
            "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (source.qualified,)
        ).fetchone()
        if identity is None:
            raise BluegreenError(f"blue has no table {source.qualified}")
        if identity[0] != "f":
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(
                    sql.Identifier(source.schema), sql.Identifier(source.table)
                )
            )
        return _ensure_slot(conn, cdc.slot)


def _ensure_publication(conn: psycopg.Connection, source: SourceSpec, publication: str) -> None:
    table = sql.SQL("{}.{}").format(sql.Identifier(source.schema), sql.Identifier(source.table))
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    if exists.fetchone() is None:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication), table)
        )
        return
    member = conn.execute(
        "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
        "AND tablename = %s",
        (publication, source.schema, source.table),
    ).fetchone()
    if member is None:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(publication), table)
        )


def _ensure_slot(conn: psycopg.Connection, slot: str) -> int:
    row = conn.execute(
        "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        created = conn.execute(
            "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
        ).fetchone()
        assert created is not None
        return parse_lsn(created[0])
    plugin, database, confirmed = row
    if plugin != "pgoutput" or database != conn.info.dbname:
        raise BluegreenError(
            f"replication slot {slot} exists with plugin {plugin} on database {database}; "
            f"bluegreen needs pgoutput on {conn.info.dbname}: choose another BLUEGREEN_CDC__SLOT"
        )
    return parse_lsn(confirmed)


def slot_exists(dsn: SecretStr, slot: str) -> bool:
    with db.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        return row.fetchone() is not None


def slot_health(conn: psycopg.Connection, slot: str) -> SlotHealth | None:
    row = conn.execute(
        "SELECT active, confirmed_flush_lsn::text, restart_lsn::text, "
        "pg_current_wal_lsn()::text, wal_status, safe_wal_size "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    active, confirmed, restart, current, wal_status, safe = row
    return SlotHealth(
        slot=slot,
        active=bool(active),
        confirmed_lsn=parse_lsn(confirmed) if confirmed else 0,
        restart_lsn=parse_lsn(restart) if restart else 0,
        current_lsn=parse_lsn(current),
        wal_status=wal_status,
        safe_wal_size=safe,
    )


def drop_capture(dsn: SecretStr, cdc: CdcSettings) -> list[str]:
    """Drop the slot and the publication (after the migration completed)."""
    dropped = []
    with db.connect(dsn, autocommit=True) as conn:
        if conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (cdc.slot,),
        ).fetchall():
            dropped.append(f"slot {cdc.slot}")
        if conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (cdc.publication,)
        ).fetchone():
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(cdc.publication)))
            dropped.append(f"publication {cdc.publication}")
    return dropped
