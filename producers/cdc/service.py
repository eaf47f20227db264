"""`bluegreen cdc`: the long-lived capture service.

One loop: read the replication stream, turn changes into envelopes, produce
them, and confirm to the slot only the end LSN of transactions whose every
message the broker acknowledged, in commit order. kill -9 at any moment loses
nothing: the slot restarts from the last confirmed transaction and replays the
rest (duplicates are harmless downstream).

Idle blue: when nothing is in flight, the keepalive's WAL position is confirmed
so the slot never holds WAL back; heartbeats (`pg_logical_emit_message`) every
few seconds keep the lag figures and every partition's freshness current.

Riding through restarts. When blue's connection is lost (restart, crash,
network) or the broker refuses or times out a message (librdkafka retries on its
own until `message.timeout.ms`), the service gives the stream up: it waits a
bounded time for the broker's reports on what it already sent (blue lost only),
confirms the acknowledged prefix, drops every other transaction, the open one
and the decoder's relation cache (and replaces a producer that hit a fatal
idempotence error; messages still queued in a live one are left to it). Then it
reconnects with capped exponential backoff (`bluegreen.core.retry.Reconnector`: one
log line per attempt, `bluegreen_dependency_up{dependency}`) and starts the
stream again at the slot's confirmed position, so everything dropped is
replayed. A dependency down for `cdc.reconnect_timeout_s` ends the service with
a one-line `DependencyError`. While the broker is away, reading pauses once
`_MAX_IN_FLIGHT` messages wait, so memory stays bounded and the loop still
answers blue and SIGTERM.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.kafka import ensure_topic, make_admin, producer_for_topic
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from producers.blue_setup import CONNECT_TIMEOUT_S, prepare_blue, slot_health
from producers.cdc.changes import (
    Broadcast,
    ChangeBuilder,
    KeyedChange,
    Standalone,
    TxnBegin,
    TxnEnd,
)
from producers.cdc.pgoutput import decode
from producers.cdc.stream import Keepalive, ReplicationLostError, ReplicationStream, XLogData
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec, codec_for
from schemas.control import HEARTBEAT_PREFIX
from schemas.envelope import CONNECTOR_CDC, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.lsn import format_lsn
from schemas.source import SourceSpec

T = TypeVar("T")

_READ_TIMEOUT_S = 0.05
_DRAIN_TIMEOUT_S = 30.0
_HEALTH_INTERVAL_S = 2.0
_LATENCY_SAMPLES = 200_000
# Reading pauses while this many messages wait for the broker's acknowledgement.
_MAX_IN_FLIGHT = 20_000
# Blue lost: how long to wait for the broker's reports on messages already sent.
_SETTLE_ON_LOSS_S = 5.0
_KAFKA_PROBE_TIMEOUT_S = 2.0
# Blue errors that reconnecting may cure: a broken connection, a server going away.
_BLUE_DOWN = (ReplicationLostError, psycopg.OperationalError)
# Delivery errors that no retry cures: the service stops instead of looping on them.
_PERMANENT_KAFKA_ERRORS = frozenset(
    {"MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD"}
)
_PRODUCER_OVERRIDES: dict[str, str | int] = {
    "linger.ms": 5,
    # A restarted broker is found within a second, not librdkafka's default 10 s.
    "reconnect.backoff.max.ms": 1000,
}


class CdcError(BluegreenError):
    """The capture cannot go on without losing data; it stops before confirming more."""


class KafkaDeliveryError(BluegreenError):
    """The broker did not take every message: the stream restarts from the slot.

    `fatal`: the idempotent producer cannot go on; a new one must be created.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


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
        self._codec = codec or codec_for(source.avro)
        self._encoder = EnvelopeEncoder(self._codec, source.columns)
        self._producer = producer
        self._stop = threading.Event()
        self._pending: deque[_Unit] = deque()
        self._open: _Unit | None = None
        self._stream: ReplicationStream | None = None
        self._aux: psycopg.Connection | None = None
        self._kafka_errors: list[KafkaError] = []
        self._next_down_report = 0.0
        timeout_s = settings.cdc.reconnect_timeout_s
        gauge = metrics.dependency_up
        self._blue = Reconnector(
            "cdc", "blue", db.describe(settings.blue_dsn), timeout_s, gauge=gauge
        )
        self._kafka = Reconnector(
            "cdc", "kafka", settings.kafka.bootstrap_servers, timeout_s, gauge=gauge
        )
        self.confirmed_lsn = 0
        self.stream_restarts = 0  # streams given up after a lost dependency
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
        start = self._retry(
            self._blue, lambda: prepare_blue(settings.blue_dsn, self.source, settings.cdc)
        )
        partitions = self._retry(self._kafka, self._prepare_topic)
        if start is None or partitions is None:
            return  # stopped while waiting for a dependency
        self._partitions = partitions
        self._writer = self._new_writer(self._producer)
        self.confirmed_lsn = start
        failed = True
        try:
            self._connect_blue()
            while not self._stop.is_set():
                self._run_guarded()
            failed = False
        finally:
            self._shutdown(drain_s=0.0 if failed else _DRAIN_TIMEOUT_S)

    def _run_guarded(self) -> None:
        """One step; a lost dependency gives the stream up and restarts it from the slot."""
        try:
            self.run_once()
        except _BLUE_DOWN as exc:
            self._restart(self._blue, exc)
        except KafkaDeliveryError as exc:
            self._restart(self._kafka, exc)
        except KafkaException as exc:  # raised by produce(): a fatal producer, ...
            trouble = _kafka_trouble(exc)
            if not isinstance(trouble, KafkaDeliveryError):
                raise trouble from exc
            self._restart(self._kafka, trouble)

    def _retry(self, dependency: Reconnector, attempt: Callable[[], T]) -> T | None:
        """attempt() until it succeeds (None if stopped); DependencyError when down too long."""
        while not self._stop.is_set():
            try:
                result = attempt()
            except (*_BLUE_DOWN, KafkaException) as exc:
                if self._stop.wait(dependency.failed(_readable(exc))):
                    return None
                continue
            dependency.succeeded()
            return result
        return None

    def _prepare_topic(self) -> int:
        kafka = self.settings.kafka
        admin = make_admin(kafka)
        admin.list_topics(timeout=_KAFKA_PROBE_TIMEOUT_S)  # an unreachable broker fails fast
        ensure_topic(kafka, kafka.topic, kafka.partitions)
        metadata = admin.list_topics(topic=kafka.topic, timeout=10)
        return len(metadata.topics[kafka.topic].partitions)

    def _new_writer(self, producer: Producer | None) -> KafkaWriter:
        kafka = self.settings.kafka
        if producer is None:
            # The operator's kafka.extra wins over these defaults.
            defaults = {k: v for k, v in _PRODUCER_OVERRIDES.items() if k not in kafka.extra}
            producer = producer_for_topic(
                kafka, kafka.topic, error_cb=self._on_kafka_error, **defaults
            )
        self._kafka_producer = producer
        self._kafka_errors.clear()
        return KafkaWriter(producer, kafka.topic, name="cdc", metrics=self.metrics)

    def _connect_blue(self) -> None:
        """Open blue's connections and start streaming at the slot's confirmed position."""
        settings = self.settings
        slot = settings.cdc.slot

        def connect() -> int:
            self._close_blue()
            self._aux = db.connect(
                settings.blue_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
            health = slot_health(self._aux, slot)
            if health is None:
                raise CdcError(f"replication slot {slot} disappeared from blue")
            self._stream = ReplicationStream(settings.blue_dsn, slot, settings.cdc.publication)
            self._builder = ChangeBuilder(self.source, str(self._aux.info.dbname))
            return health.confirmed_lsn

        restart_lsn = self._retry(self._blue, connect)
        if restart_lsn is None:
            return
        self._server_wal_end = 0  # the new stream's keepalives say how far it got
        # Settled before a loss but not yet told to blue: confirmed with the next status.
        self.confirmed_lsn = max(self.confirmed_lsn, restart_lsn)
        self.log.info("capturing", from_lsn=format_lsn(restart_lsn), partitions=self._partitions)

    def _restart(self, dependency: Reconnector, exc: BaseException) -> None:
        """Give the stream up after `exc`; resume from the slot once blue and Kafka answer."""
        delay = dependency.failed(exc)  # one line; DependencyError once down too long
        kafka_lost = dependency is self._kafka
        dropped = self._abandon_stream(settle_s=0.0 if kafka_lost else _SETTLE_ON_LOSS_S)
        self.stream_restarts += 1
        self.log.warning(
            "stream given up; it restarts from the slot",
            confirmed_lsn=format_lsn(self.confirmed_lsn),
            dropped_transactions=dropped,
        )
        if self._stop.wait(delay):
            return
        if kafka_lost:
            if not self._await_kafka():
                return
            if isinstance(exc, KafkaDeliveryError) and exc.fatal:
                self._replace_producer()
        self._connect_blue()

    def _abandon_stream(self, *, settle_s: float) -> int:
        """Confirm what the broker acknowledged (waiting up to settle_s), drop the rest."""
        if settle_s > 0 and self._pending:
            self._writer.flush(settle_s)
        self._settle()
        if self._stream is not None:
            # If blue is gone, the new stream starts where the slot stands.
            with contextlib.suppress(*_BLUE_DOWN):
                self._send_status(force=True)
        self._close_blue()
        dropped = len(self._pending) + (self._open is not None)
        self._pending.clear()
        self._open = None
        # Messages of dropped transactions still queued are left to librdkafka: delivered,
        # they are duplicates of the replay; timed out, nothing depends on them. (Purging
        # them would leave a gap in the idempotent producer's sequence numbers.)
        return dropped

    def _close_blue(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._aux is not None:
            with contextlib.suppress(psycopg.Error):
                self._aux.close()
            self._aux = None

    def _await_kafka(self) -> bool:
        """Back off until the broker answers for every partition of the topic."""
        admin = make_admin(self.settings.kafka)
        topic = self.settings.kafka.topic

        def probe() -> None:
            found = admin.list_topics(topic=topic, timeout=_KAFKA_PROBE_TIMEOUT_S).topics.get(topic)
            if found is None or found.error is not None:
                raise KafkaException(found.error if found else KafkaError._UNKNOWN_TOPIC)
            if not found.partitions or any(p.leader < 0 for p in found.partitions.values()):
                raise KafkaException(KafkaError.LEADER_NOT_AVAILABLE)

        while not self._stop.is_set():
            try:
                probe()
            except KafkaException as exc:
                # No `succeeded()` here: Kafka is back only once it acknowledges a message.
                if self._stop.wait(self._kafka.failed(_readable(exc))):
                    return False
                continue
            return True
        return False

    def _replace_producer(self) -> None:
        """A fatal idempotence error ends a producer's life: purge it and start a new one."""
        old = self._kafka_producer
        old.purge(in_queue=True, in_flight=True, blocking=True)
        old.flush(1)
        self.log.warning("producer replaced after a fatal error")
        self._writer = self._new_writer(None)

    def _on_kafka_error(self, error: KafkaError) -> None:
        """librdkafka's error callback, served inside poll(): noted, handled by the loop."""
        self._kafka_errors.append(error)

    def _check_kafka_errors(self) -> None:
        errors, self._kafka_errors = self._kafka_errors, []
        for error in errors:
            if error.fatal():
                cause = f"the producer hit a fatal error: {error.str()}"
                raise KafkaDeliveryError(cause, fatal=True)
            if error.code() == KafkaError._ALL_BROKERS_DOWN:
                self._brokers_down(error)

    def _brokers_down(self, error: KafkaError) -> None:
        """librdkafka retries on its own; reported (gauge 0, a line) at the backoff's pace.

        Each report checks the deadline: Kafka down for reconnect_timeout_s ends the
        service even while no message has timed out yet.
        """
        now = time.monotonic()
        if now >= self._next_down_report:
            delay = self._kafka.failed(BluegreenError(f"{error.name()}: {error.str()}"))
            self._next_down_report = now + delay

    def run_once(self) -> None:
        stream = self._stream
        if stream is None:
            raise ReplicationLostError("no replication stream")
        if self._writer.in_flight < _MAX_IN_FLIGHT:
            message = stream.read(_READ_TIMEOUT_S)
            if isinstance(message, XLogData):
                for action in self._builder.feed(decode(message.payload)):
                    self._act(action)
            elif isinstance(message, Keepalive):
                self._server_wal_end = max(self._server_wal_end, message.wal_end)
                if message.reply_requested:
                    self._send_status(force=True)
            self._writer.poll(0)
        else:
            self._writer.poll(_READ_TIMEOUT_S)  # backpressure: wait for the broker, not blue
        self._check_kafka_errors()
        refused = self._settle()
        if refused is not None:
            raise self._refusal(refused)
        now = time.monotonic()
        if now - self._last_status >= self.settings.cdc.status_interval_s:
            self._send_status()
        if now - self._last_heartbeat >= self.settings.cdc.heartbeat_interval_s:
            self._heartbeat()
        if now - self._last_health >= _HEALTH_INTERVAL_S:
            self._health()

    def _shutdown(self, drain_s: float) -> None:
        deadline = time.monotonic() + drain_s
        try:
            while self._pending and time.monotonic() < deadline:
                self._writer.poll(0.1)
                if self._settle() is not None:
                    break
            self._settle()
            if self._stream is not None:
                self._send_status(force=True)
        except _BLUE_DOWN as exc:
            self.log.warning("could not confirm the last position to blue", error=one_line(exc))
        finally:
            self._close_blue()
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

    def _settle(self) -> _Unit | None:
        """Confirm, in commit order, every transaction whose messages were all acknowledged.

        Returns the first settled transaction the broker refused (it stays pending):
        nothing from it on is confirmed.
        """
        self._writer.finished()  # tokens are checked in order below; this only clears the list
        while self._pending and self._pending[0].token.settled:
            unit = self._pending[0]
            if not unit.token.ok:
                return unit
            self._pending.popleft()
            if self._kafka.down:
                self._kafka.succeeded()  # the broker acknowledges again
                self._next_down_report = 0.0
            self.confirmed_lsn = max(self.confirmed_lsn, unit.end_lsn)
            for op, count in unit.ops.items():
                self.metrics.cdc_events.labels(op).inc(count)
                self.events_acked += count
            latency_s = max(0.0, now_ms() - unit.commit_ts_ms) / 1000
            self.metrics.cdc_commit_to_ack_seconds.observe(latency_s)
            self.latencies_ms.append(latency_s * 1000)
            self._last_acked_commit_ms = unit.commit_ts_ms
        return None

    def _refusal(self, unit: _Unit) -> BluegreenError:
        cause = (
            f"the broker did not acknowledge messages of the transaction ending at "
            f"{format_lsn(unit.end_lsn)}: {'; '.join(unit.token.errors)}"
        )
        names = {error.split(":", 1)[0] for error in unit.token.errors}
        if names & _PERMANENT_KAFKA_ERRORS:
            return CdcError(
                f"{cause}. Nothing from it on is confirmed; fix the cause and restart "
                "`bluegreen cdc`"
            )
        return KafkaDeliveryError(cause, fatal="_FATAL" in names)

    def _idle(self) -> bool:
        return self._open is None and not self._pending and self._writer.in_flight == 0

    def _send_status(self, *, force: bool = False) -> None:
        position = self.confirmed_lsn
        if self._idle():
            # Nothing in flight: everything the server decoded up to its keepalive position
            # is in Kafka, including transactions pgoutput skipped as not ours.
            position = max(position, self._server_wal_end)
        if self._stream is None:
            raise ReplicationLostError("no replication stream")
        self.confirmed_lsn = position
        self._stream.send_status(position)
        self._last_status = time.monotonic()
        self.metrics.cdc_confirmed_lsn.set(position)
        if force:
            self.log.debug("status sent", confirmed=format_lsn(position))

    def _aux_connection(self) -> psycopg.Connection:
        if self._aux is None:
            raise ReplicationLostError("no connection to blue")
        return self._aux

    def _aux_failed(self, what: str, exc: psycopg.Error) -> None:
        """A broken connection is a lost blue (the loop reconnects); other errors are logged."""
        if self._aux is None or self._aux.broken or self._aux.closed:
            raise exc
        self.log.warning(what, error=one_line(exc))

    def _heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        aux = self._aux_connection()
        try:
            aux.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)", (HEARTBEAT_PREFIX, str(now_ms()))
            )
        except psycopg.Error as exc:
            self._aux_failed("heartbeat failed", exc)

    def _health(self) -> None:
        self._last_health = time.monotonic()
        try:
            health = slot_health(self._aux_connection(), self.settings.cdc.slot)
        except psycopg.Error as exc:
            self._aux_failed("cannot read slot health", exc)
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


def _readable(exc: BaseException) -> BaseException:
    """A Kafka error as `NAME: text` rather than KafkaError{code=...,val=...,str=...}."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        readable = BluegreenError(f"{error.name()}: {error.str()}")
        readable.__cause__ = exc  # --debug still shows the original
        return readable
    return exc


def _kafka_trouble(exc: KafkaException) -> BluegreenError:
    """What produce() raised: a message too large stops the service, the rest is retried."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    cause = one_line(_readable(exc))
    if error is not None and error.name() in _PERMANENT_KAFKA_ERRORS:
        return CdcError(f"the producer refused a message: {cause}")
    return KafkaDeliveryError(cause, fatal=error is not None and error.fatal())
