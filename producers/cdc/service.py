"""`bluegreen cdc`: the long-lived capture service.

One loop: read the replication stream, turn changes into envelopes, produce
them, and confirm to the slot only the end LSN of transactions whose every
message the broker acknowledged, in commit order. kill -9 at any moment loses
nothing: the slot restarts from the last confirmed transaction and replays the
rest (duplicates are harmless downstream).

Idle blue: when nothing is in flight, the keepalive's WAL position is confirmed
so the slot never holds WAL back; heartbeats (`pg_logical_emit_message`) every
few seconds keep the lag figures and every partition's freshness current.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Producer

from bluegreen import db
from bluegreen.config import Settings
from bluegreen.errors import BluegreenError
from bluegreen.kafka import ensure_topic, make_admin, producer_for_topic
from bluegreen.logs import get_logger
from bluegreen.metrics import Metrics
from producers.blue_setup import prepare_blue, slot_health
from producers.cdc.changes import (
    HEARTBEAT_PREFIX,
    Broadcast,
    ChangeBuilder,
    KeyedChange,
    Standalone,
    TxnBegin,
    TxnEnd,
)
from producers.cdc.pgoutput import decode
from producers.cdc.stream import Keepalive, ReplicationStream, XLogData
from producers.lsn import format_lsn
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec, default_codec
from schemas.envelope import CONNECTOR_CDC, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

_READ_TIMEOUT_S = 0.05
_DRAIN_TIMEOUT_S = 30.0
_HEALTH_INTERVAL_S = 2.0
_LATENCY_SAMPLES = 200_000


class CdcError(BluegreenError):
    """The capture cannot go on without losing data; it stops before confirming more."""


@dataclass(eq=False)
class _Unit:
    """One transaction (or standalone message) and the source position it confirms."""

    token: Token
    end_lsn: int
    commit_ts_ms: int
    ops: dict[str, int]


class CdcService:
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        metrics: Metrics,
        *,
        producer: Producer | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.log = get_logger(service="cdc", slot=settings.cdc.slot)
        self._codec = codec or default_codec()
        self._encoder = EnvelopeEncoder(self._codec, source.columns)
        self._producer = producer
        self._stop = threading.Event()
        self._pending: deque[_Unit] = deque()
        self._open: _Unit | None = None
        self.confirmed_lsn = 0
        self._server_wal_end = 0
        self._last_status = 0.0
        self._last_heartbeat = 0.0
        self._last_health = 0.0
        self._last_acked_commit_ms: int | None = None
        self._retention_warned = 0.0
        self.latencies_ms: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.events_acked = 0

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        start = prepare_blue(settings.blue_dsn, self.source, settings.cdc)
        ensure_topic(settings.kafka, settings.kafka.topic, settings.kafka.partitions)
        self._partitions = self._partition_count()
        self._writer = KafkaWriter(
            self._producer
            or producer_for_topic(settings.kafka, settings.kafka.topic, **{"linger.ms": 5}),
            settings.kafka.topic,
            name="cdc",
            metrics=self.metrics,
        )
        self._aux = db.connect(settings.blue_dsn, autocommit=True)
        self._builder = ChangeBuilder(self.source, str(self._aux.info.dbname))
        self._stream = ReplicationStream(
            settings.blue_dsn, settings.cdc.slot, settings.cdc.publication
        )
        self.confirmed_lsn = start
        self.log.info("capturing", from_lsn=format_lsn(start), partitions=self._partitions)
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self._shutdown()

    def _partition_count(self) -> int:
        topic = self.settings.kafka.topic
        metadata = make_admin(self.settings.kafka).list_topics(topic=topic, timeout=10)
        return len(metadata.topics[topic].partitions)

    def run_once(self) -> None:
        message = self._stream.read(_READ_TIMEOUT_S)
        if isinstance(message, XLogData):
            for action in self._builder.feed(decode(message.payload)):
                self._act(action)
        elif isinstance(message, Keepalive):
            self._server_wal_end = max(self._server_wal_end, message.wal_end)
            if message.reply_requested:
                self._send_status(force=True)
        self._writer.poll(0)
        self._settle()
        now = time.monotonic()
        if now - self._last_status >= self.settings.cdc.status_interval_s:
            self._send_status()
        if now - self._last_heartbeat >= self.settings.cdc.heartbeat_interval_s:
            self._heartbeat()
        if now - self._last_health >= _HEALTH_INTERVAL_S:
            self._health()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        try:
            while self._pending and time.monotonic() < deadline:
                self._writer.poll(0.1)
                self._settle()
            self._send_status(force=True)
        finally:
            self._stream.close()
            self._aux.close()
            self._writer.flush(5)
        self.log.info("stopped", confirmed_lsn=format_lsn(self.confirmed_lsn))

    # -- capture ------------------------------------------------------------------------------

    def _act(self, action: Any) -> None:
        if isinstance(action, TxnBegin):
            self._open = _Unit(self._writer.token(action.commit_lsn), 0, action.commit_ts_ms, {})
        elif isinstance(action, KeyedChange):
            unit = self._require_open()
            value = self._encoder.encode_change(
                action.op,
                self._builder.table,
                before=action.before,
                after=action.after,
                connector=CONNECTOR_CDC,
                version=action.version,
                txid=action.txid,
                ts_ms=action.ts_ms,
                event_ts_ms=now_ms(),
            )
            self._writer.send(unit.token, action.key, value)
            self._count(unit, action.op.value)
        elif isinstance(action, Broadcast):
            self._broadcast(self._require_open(), action.event)
        elif isinstance(action, TxnEnd):
            unit = self._require_open()
            unit.end_lsn = action.end_lsn
            self._writer.seal(unit.token)
            self._pending.append(unit)
            self._open = None
        elif isinstance(action, Standalone):
            unit = _Unit(self._writer.token(action.lsn), action.lsn, action.event["ts_ms"], {})
            self._broadcast(unit, action.event)
            self._writer.seal(unit.token)
            self._pending.append(unit)

    def _require_open(self) -> _Unit:
        if self._open is None:
            raise CdcError("a change arrived outside a transaction")
        return self._open

    def _broadcast(self, unit: _Unit, event: dict[str, Any]) -> None:
        value = self._codec.encode(event)
        for partition in range(self._partitions):
            self._writer.send(unit.token, None, value, partition=partition)
        self._count(unit, event["op"])

    @staticmethod
    def _count(unit: _Unit, op: str) -> None:
        unit.ops[op] = unit.ops.get(op, 0) + 1

    def _settle(self) -> None:
        """Confirm, in commit order, every transaction whose messages were all acknowledged."""
        self._writer.finished()  # tokens are checked in order below; this only clears the list
        while self._pending and self._pending[0].token.settled:
            unit = self._pending.popleft()
            if not unit.token.ok:
                raise CdcError(
                    f"the broker refused messages of the transaction ending at "
                    f"{format_lsn(unit.end_lsn)}: {'; '.join(unit.token.errors)}. Nothing from "
                    "it on is confirmed; fix the cause and restart `bluegreen cdc`"
                )
            self.confirmed_lsn = max(self.confirmed_lsn, unit.end_lsn)
            for op, count in unit.ops.items():
                self.metrics.cdc_events.labels(op).inc(count)
                self.events_acked += count
            latency_s = max(0.0, now_ms() - unit.commit_ts_ms) / 1000
            self.metrics.cdc_commit_to_ack_seconds.observe(latency_s)
            self.latencies_ms.append(latency_s * 1000)
            self._last_acked_commit_ms = unit.commit_ts_ms

    def _idle(self) -> bool:
        return self._open is None and not self._pending and self._writer.in_flight == 0

    def _send_status(self, *, force: bool = False) -> None:
        position = self.confirmed_lsn
        if self._idle():
            # Nothing in flight: everything the server decoded up to its keepalive position
            # is in Kafka, including transactions pgoutput skipped as not ours.
            position = max(position, self._server_wal_end)
        self.confirmed_lsn = position
        self._stream.send_status(position)
        self._last_status = time.monotonic()
        self.metrics.cdc_confirmed_lsn.set(position)
        if force:
            self.log.debug("status sent", confirmed=format_lsn(position))

    def _heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        try:
            self._aux.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)", (HEARTBEAT_PREFIX, str(now_ms()))
            )
        except psycopg.Error as exc:
            self.log.warning("heartbeat failed", error=str(exc))

    def _health(self) -> None:
        self._last_health = time.monotonic()
        try:
            health = slot_health(self._aux, self.settings.cdc.slot)
        except psycopg.Error as exc:
            self.log.warning("cannot read slot health", error=str(exc))
            return
        if health is None:
            raise CdcError(f"replication slot {self.settings.cdc.slot} disappeared from blue")
        self.metrics.cdc_source_lag_bytes.set(health.lag_bytes)
        self.metrics.cdc_slot_retained_wal_bytes.set(health.retained_bytes)
        if self._last_acked_commit_ms is not None:
            self.metrics.cdc_source_lag_seconds.set(
                max(0.0, now_ms() - self._last_acked_commit_ms) / 1000
            )
        threshold = self.settings.cdc.retained_wal_warning_bytes
        warn_again = time.monotonic() - self._retention_warned > 60
        if threshold and health.retained_bytes > threshold and warn_again:
            self._retention_warned = time.monotonic()
            self.log.warning(
                "slot retains much WAL on blue",
                retained_bytes=health.retained_bytes,
                threshold_bytes=threshold,
                wal_status=health.wal_status,
                safe_wal_size=health.safe_wal_size,
            )
