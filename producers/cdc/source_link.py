"""The capture's side of its source database: the replication stream and an auxiliary
connection. The same for blue's capture and green's reverse capture.

The stream is read, and told how far the slot may move (``send_status``); the
auxiliary connection writes heartbeats (``pg_logical_emit_message``) every few
seconds, so lag figures and every partition's freshness stay current while the
source is idle, and reads the slot's health (lag, retained WAL).

A broken auxiliary connection is a lost source (the caller reconnects); any other
error on it is logged and the capture goes on. A slot that is gone raises
``SlotGoneError``.
"""

from __future__ import annotations

import contextlib
import time

import psycopg
from pydantic import SecretStr
from structlog.stdlib import BoundLogger

from bluegreen.core import db
from bluegreen.core.metrics import CaptureMetrics
from bluegreen.core.retry import one_line
from producers.blue_setup import CONNECT_TIMEOUT_S, slot_health
from producers.cdc.errors import SlotGoneError
from producers.cdc.stream import ReplicationLostError, ReplicationStream
from schemas.control import HEARTBEAT_PREFIX
from schemas.envelope import now_ms
from schemas.lsn import format_lsn


class SourceLink:
    def __init__(
        self,
        source: str,
        dsn: SecretStr,
        slot: str,
        publication: str,
        *,
        metrics: CaptureMetrics,
        log: BoundLogger,
        retained_wal_warning_bytes: int = 0,
        application_name: str = "bluegreen-cdc",
    ) -> None:
        self.source = source  # "blue" or "green": named in errors and logs
        self._dsn = dsn
        self.slot = slot
        self._publication = publication
        self._metrics = metrics
        self._log = log
        self._retained_warning = retained_wal_warning_bytes
        self._application_name = application_name
        self.stream: ReplicationStream | None = None
        self._aux: psycopg.Connection | None = None
        self.database = ""
        self.server_wal_end = 0  # how far the server decoded, from its keepalives
        self.last_status = 0.0
        self.last_heartbeat = 0.0
        self.last_health = 0.0
        self._retention_warned = 0.0

    def connect(self) -> int:
        """Open both connections and the stream; the slot's confirmed position."""
        self.close()
        self._aux = db.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        self.database = str(self._aux.info.dbname)
        health = slot_health(self._aux, self.slot)
        if health is None:
            raise SlotGoneError(f"replication slot {self.slot} disappeared from {self.source}")
        self.stream = ReplicationStream(
            self._dsn,
            self.slot,
            self._publication,
            application_name=self._application_name,
            source=self.source,
        )
        return health.confirmed_lsn

    def slot_exists(self) -> bool:
        """Whether the slot exists (on the auxiliary connection, opened if need be)."""
        if self._aux is None or self._aux.closed or self._aux.broken:
            self.close()
            self._aux = db.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        return slot_health(self._aux, self.slot) is not None

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
        self._metrics.confirmed_lsn.set(position)
        if force:
            self._log.debug("status sent", confirmed=format_lsn(position))

    def _aux_connection(self) -> psycopg.Connection:
        if self._aux is None:
            raise ReplicationLostError(f"no connection to {self.source}")
        return self._aux

    def _aux_failed(self, what: str, exc: psycopg.Error) -> None:
        """A broken connection is a lost source (the loop reconnects); other errors are logged."""
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
            health = slot_health(self._aux_connection(), self.slot)
        except psycopg.Error as exc:
            self._aux_failed("cannot read slot health", exc)
            return
        if health is None:
            raise SlotGoneError(f"replication slot {self.slot} disappeared from {self.source}")
        self._metrics.source_lag_bytes.set(health.lag_bytes)
        self._metrics.slot_retained_wal_bytes.set(health.retained_bytes)
        if last_acked_commit_ms is not None:
            self._metrics.source_lag_seconds.set(max(0.0, now_ms() - last_acked_commit_ms) / 1000)
        threshold = self._retained_warning
        warn_again = time.monotonic() - self._retention_warned > 60
        if threshold and health.retained_bytes > threshold and warn_again:
            self._retention_warned = time.monotonic()
            self._log.warning(
                f"slot retains much WAL on {self.source}",
                retained_bytes=health.retained_bytes,
                threshold_bytes=threshold,
                wal_status=health.wal_status,
                safe_wal_size=health.safe_wal_size,
            )
