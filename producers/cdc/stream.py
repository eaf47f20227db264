"""The streaming replication protocol over psycopg 3.3+ (PostgreSQL docs,
"Streaming Replication Protocol").

``START_REPLICATION`` on a ``replication=database`` connection leaves it in
COPY_BOTH: the server sends XLogData (``w``) and keepalives (``k``); we send
standby status updates (``r``) saying up to which LSN we have made changes
durable, which is what lets the slot advance.
"""

from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.errors import BluegreenError
from producers.cdc.pgoutput import PG_EPOCH_US
from producers.lsn import format_lsn

_XLOG_HEADER = struct.Struct("!QQq")  # start LSN, end of WAL on the server, send time
_KEEPALIVE = struct.Struct("!QqB")  # end of WAL, send time, reply requested
_STATUS = struct.Struct("!cQQQqB")


class ReplicationError(BluegreenError):
    """The replication connection failed or ended."""


@dataclass(frozen=True, slots=True)
class XLogData:
    start_lsn: int
    wal_end: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


def _now_pg_us() -> int:
    return time.time_ns() // 1000 - PG_EPOCH_US


class ReplicationStream:
    def __init__(
        self,
        dsn: SecretStr,
        slot: str,
        publication: str,
        *,
        start_lsn: int = 0,
        application_name: str = "bluegreen-cdc",
    ) -> None:
        try:
            self._conn = psycopg.connect(
                dsn.get_secret_value(),
                replication="database",
                autocommit=True,
                application_name=application_name,
            )
        except psycopg.Error as exc:
            raise ReplicationError(f"cannot open a replication connection to blue: {exc}") from exc
        command = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} "
            "(proto_version '1', publication_names {}, messages 'true')"
        ).format(
            sql.Identifier(slot),
            sql.SQL(format_lsn(start_lsn)),
            sql.Literal(publication),
        )
        try:
            self._conn.execute(command)
        except psycopg.Error as exc:
            self._conn.close()
            raise ReplicationError(f"START_REPLICATION on slot {slot} failed: {exc}") from exc
        self._pg = self._conn.pgconn
        self._socket = self._pg.socket

    def read(self, timeout_s: float) -> XLogData | Keepalive | None:
        """The next message, or None when none arrived within the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            size, data = self._pg.get_copy_data(1)  # 1: do not block
            if size > 0:
                return self._parse(bytes(data))
            if size < 0:
                message = self._pg.get_error_message() or "the server ended the stream"
                raise ReplicationError(f"replication stream ended: {message.strip()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if readable:
                self._pg.consume_input()

    @staticmethod
    def _parse(data: bytes) -> XLogData | Keepalive:
        kind = data[:1]
        if kind == b"w":
            start, wal_end, _sent = _XLOG_HEADER.unpack_from(data, 1)
            return XLogData(start, wal_end, data[1 + _XLOG_HEADER.size :])
        if kind == b"k":
            wal_end, _sent, reply = _KEEPALIVE.unpack_from(data, 1)
            return Keepalive(wal_end, bool(reply))
        raise ReplicationError(f"unknown replication message type {kind!r}")

    def send_status(self, flushed_lsn: int, *, reply: bool = False) -> None:
        """Tell the server everything up to flushed_lsn is durable: the slot may advance."""
        message = _STATUS.pack(
            b"r", flushed_lsn, flushed_lsn, flushed_lsn, _now_pg_us(), 1 if reply else 0
        )
        if self._pg.put_copy_data(message) != 1 or self._pg.flush() != 0:
            raise ReplicationError(
                f"could not send a status update: {self._pg.get_error_message()}"
            )

    def close(self) -> None:
        if not self._conn.closed:
            self._conn.close()
