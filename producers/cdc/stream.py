"""The streaming replication protocol over psycopg 3.3+ (PostgreSQL docs,
"Streaming Replication Protocol").

``START_REPLICATION`` on a ``replication=database`` connection leaves it in
COPY_BOTH: the server sends XLogData (``w``) and keepalives (``k``); we send
standby status updates (``r``) saying up to which LSN we have made changes
durable, which is what lets the slot advance.

A failure that reconnecting may cure (the source restarting or unreachable, the stream
ended by the server, the slot still held by a walsender that is going away) is a
``ReplicationLostError``; one it cannot cure (no such slot, an invalidated slot) is
a plain ``ReplicationError``.
"""

from __future__ import annotations

import contextlib
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core.errors import BluegreenError
from producers.cdc.pgoutput import PG_EPOCH_US
from schemas.lsn import format_lsn

_XLOG_HEADER = struct.Struct("!QQq")  # start LSN, end of WAL on the server, send time
_KEEPALIVE = struct.Struct("!QqB")  # end of WAL, send time, reply requested
_STATUS = struct.Struct("!cQQQqB")


class ReplicationError(BluegreenError):
    """The replication stream cannot be (re)started: reconnecting will not help."""


class ReplicationLostError(ReplicationError):
    """The connection to the source failed or the server ended the stream: reconnect and resume."""


# SQLSTATEs of START_REPLICATION that a later attempt can get past: the slot is still
# held by the walsender of a connection that just died (55006), the server is
# starting, stopping or crashed (57P01-57P03), too many connections (53300).
_TRANSIENT_STATES = {"55006", "57P01", "57P02", "57P03", "53300"}
# libpq: give up on a connection attempt, and notice a silent peer, within seconds.
_LIVENESS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


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
        source: str = "blue",
    ) -> None:
        try:
            self._conn = psycopg.connect(
                dsn.get_secret_value(),
                replication="database",
                autocommit=True,
                application_name=application_name,
                **_LIVENESS,
            )
        except psycopg.Error as exc:
            cause = f"cannot open a replication connection to {source}: {exc}"
            raise ReplicationLostError(cause) from exc
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
            state = exc.sqlstate
            lost = self._conn.broken or state is None or state[:2] == "08"
            self._conn.close()
            transient = lost or state in _TRANSIENT_STATES
            error = ReplicationLostError if transient else ReplicationError
            raise error(f"START_REPLICATION on slot {slot} failed: {exc}") from exc
        self._pg = self._conn.pgconn
        self._socket = self._pg.socket

    def read(self, timeout_s: float) -> XLogData | Keepalive | None:
        """The next message, or None when none arrived within the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                size, data = self._pg.get_copy_data(1)  # 1: do not block
            except psycopg.OperationalError as exc:
                raise ReplicationLostError(f"replication stream failed: {exc}") from exc
            if size > 0:
                return self._parse(bytes(data))
            if size < 0:
                raise ReplicationLostError(f"replication stream ended: {self._end_reason()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if readable:
                try:
                    self._pg.consume_input()
                except psycopg.OperationalError as exc:
                    raise ReplicationLostError(f"replication connection lost: {exc}") from exc

    def _end_reason(self) -> str:
        """Why the COPY ended: the server's error, the connection's, or a clean end."""
        message = ""
        if not self._pg.is_busy():
            result = self._pg.get_result()
            if result is not None and result.error_message:
                message = result.get_error_message()
        if not message and self._pg.error_message:
            message = self._pg.get_error_message()
        message = message or "the server ended the stream (shutting down?)"
        return " ".join(message.split())

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
        try:
            sent = self._pg.put_copy_data(message) == 1 and self._pg.flush() == 0
        except psycopg.OperationalError as exc:
            raise ReplicationLostError(f"could not send a status update: {exc}") from exc
        if not sent:
            cause = self._pg.get_error_message()
            raise ReplicationLostError(f"could not send a status update: {cause}")

    def close(self) -> None:
        """Close the connection; never raises (it may already be broken)."""
        if not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
