"""The capture's side of blue: the replication stream and an auxiliary connection.

The stream is read, and told how far the slot may move (``send_status``); the
auxiliary connection writes heartbeats (``pg_logical_emit_message``) every few
seconds, so lag figures and every partition's freshness stay current while blue is
idle, and reads the slot's health (lag, retained WAL).

A broken auxiliary connection is a lost blue (the caller reconnects); any other
error on it is logged and the capture goes on.
"""

from __future__ import annotations

import contextlib
import time

import psycopg
from structlog.stdlib import BoundLogger

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import one_line
from producers.blue_setup import CONNECT_TIMEOUT_S, slot_health
from producers.cdc.changes import ChangeBuilder
from producers.cdc.errors import CdcError
from producers.cdc.stream import ReplicationLostError, ReplicationStream
from schemas.control import HEARTBEAT_PREFIX
from schemas.envelope import now_ms
from schemas.lsn import format_lsn
from schemas.source import SourceSpec


class BlueLink:
    def __init__(
        self, settings: Settings, source: SourceSpec, metrics: Metrics, log: BoundLogger
    ) -> None:
        self._settings = settings
        self._source = source
        self._metrics = metrics
        self._log = log
        self.stream: ReplicationStream | None = None
        self._aux: psycopg.Connection | None = None
        self.server_wal_end = 0  # how far the server decoded, from its keepalives
        self.last_status = 0.0
        self.last_heartbeat = 0.0
        self.last_health = 0.0
        self._retention_warned = 0.0

    def connect(self) -> tuple[int, ChangeBuilder]:
        """Open both connections and the stream; the slot's confirmed position and a
        change builder for this database."""
        settings = self._settings
        slot = settings.cdc.slot
        self.close()
        self._aux = db.connect(
            settings.blue_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        health = slot_health(self._aux, slot)
        if health is None:
            raise CdcError(f"replication slot {slot} disappeared from blue")
        self.stream = ReplicationStream(settings.blue_dsn, slot, settings.cdc.publication)
        builder = ChangeBuilder(self._source, str(self._aux.info.dbname))
        return health.confirmed_lsn, builder

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self._aux is not None:
            with contextlib.suppress(psycopg.Error):
                self._aux.close()
            self._aux = None

    def send_status(self, position: int, *, force: bool = False) -> None:
        """Tell the slot it may move to `position` (everything before it is in Kafka)."""
        if self.stream is None:
            raise ReplicationLostError("no replication stream")
        self.stream.send_status(position)
        self.last_status = time.monotonic()
        self._metrics.cdc_confirmed_lsn.set(position)
        if force:
            self._log.debug("status sent", confirmed=format_lsn(position))

    def _aux_connection(self) -> psycopg.Connection:
        if self._aux is None:
            raise ReplicationLostError("no connection to blue")
        return self._aux

    def _aux_failed(self, what: str, exc: psycopg.Error) -> None:
        """A broken connection is a lost blue (the loop reconnects); other errors are logged."""
        if self._aux is None or self._aux.broken or self._aux.closed:
            raise exc
        self._log.warning(what, error=one_line(exc))

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        aux = self._aux_connection()
        try:
            aux.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)", (HEARTBEAT_PREFIX, str(now_ms()))
            )
        except psycopg.Error as exc:
            self._aux_failed("heartbeat failed", exc)

    def health(self, last_acked_commit_ms: int | None) -> None:
        """Slot lag and retained WAL as metrics; a warning when it retains too much."""
        self.last_health = time.monotonic()
        try:
            health = slot_health(self._aux_connection(), self._settings.cdc.slot)
        except psycopg.Error as exc:
            self._aux_failed("cannot read slot health", exc)
            return
        if health is None:
            raise CdcError(f"replication slot {self._settings.cdc.slot} disappeared from blue")
        self._metrics.cdc_source_lag_bytes.set(health.lag_bytes)
        self._metrics.cdc_slot_retained_wal_bytes.set(health.retained_bytes)
        if last_acked_commit_ms is not None:
            self._metrics.cdc_source_lag_seconds.set(
                max(0.0, now_ms() - last_acked_commit_ms) / 1000
            )
        threshold = self._settings.cdc.retained_wal_warning_bytes
        warn_again = time.monotonic() - self._retention_warned > 60
        if threshold and health.retained_bytes > threshold and warn_again:
            self._retention_warned = time.monotonic()
            self._log.warning(
                "slot retains much WAL on blue",
                retained_bytes=health.retained_bytes,
                threshold_bytes=threshold,
                wal_status=health.wal_status,
                safe_wal_size=health.safe_wal_size,
            )
