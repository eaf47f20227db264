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
from typing import TypeVar

import psycopg
from confluent_kafka import KafkaException, Producer

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from producers.blue_setup import prepare_blue
from producers.cdc.blue_link import BlueLink
from producers.cdc.errors import CdcError, KafkaDeliveryError
from producers.cdc.kafka_link import KafkaLink, kafka_trouble, readable
from producers.cdc.pgoutput import decode
from producers.cdc.publisher import Publisher
from producers.cdc.stream import Keepalive, ReplicationLostError, XLogData
from schemas.codec import Codec, codec_for
from schemas.fastpath import EnvelopeEncoder
from schemas.lsn import format_lsn
from schemas.source import SourceSpec

__all__ = ["CdcError", "CdcService", "KafkaDeliveryError"]

T = TypeVar("T")

_READ_TIMEOUT_S = 0.05
_DRAIN_TIMEOUT_S = 30.0
_HEALTH_INTERVAL_S = 2.0
# Reading pauses while this many messages wait for the broker's acknowledgement.
_MAX_IN_FLIGHT = 20_000
# Blue lost: how long to wait for the broker's reports on messages already sent.
_SETTLE_ON_LOSS_S = 5.0
# Blue errors that reconnecting may cure: a broken connection, a server going away.
_BLUE_DOWN = (ReplicationLostError, psycopg.OperationalError)


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
        codec = codec or codec_for(source.avro)
        self._producer = producer
        self._stop = threading.Event()
        timeout_s = settings.cdc.reconnect_timeout_s
        gauge = metrics.dependency_up
        self._blue = Reconnector(
            "cdc", "blue", db.describe(settings.blue_dsn), timeout_s, gauge=gauge
        )
        self._kafka = Reconnector(
            "cdc", "kafka", settings.kafka.bootstrap_servers, timeout_s, gauge=gauge
        )
        self._blue_link = BlueLink(settings, source, metrics, self.log)
        self._kafka_link = KafkaLink(settings.kafka, metrics, self._kafka, self.log)
        self._publisher = Publisher(
            codec,
            EnvelopeEncoder(codec, source.columns),
            metrics,
            self._kafka_link.acknowledged,
        )
        self.stream_restarts = 0  # streams given up after a lost dependency

    @property
    def confirmed_lsn(self) -> int:
        """How far the slot may move: every transaction before it is in Kafka."""
        return self._publisher.confirmed_lsn

    @property
    def latencies_ms(self) -> deque[float]:
        """Commit-to-acknowledgement latencies, newest last (bounded)."""
        return self._publisher.latencies_ms

    @property
    def events_acked(self) -> int:
        return self._publisher.events_acked

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        start = self._retry(
            self._blue, lambda: prepare_blue(settings.blue_dsn, self.source, settings.cdc)
        )
        partitions = self._retry(self._kafka, self._kafka_link.prepare_topic)
        if start is None or partitions is None:
            return  # stopped while waiting for a dependency
        self._publisher.attach(self._kafka_link.open_writer(self._producer), partitions)
        self._publisher.confirmed_lsn = start
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
            trouble = kafka_trouble(exc)
            if not isinstance(trouble, KafkaDeliveryError):
                raise trouble from exc
            self._restart(self._kafka, trouble)

    def _retry(self, dependency: Reconnector, attempt: Callable[[], T]) -> T | None:
        """attempt() until it succeeds (None if stopped); DependencyError when down too long."""
        while not self._stop.is_set():
            try:
                result = attempt()
            except (*_BLUE_DOWN, KafkaException) as exc:
                if self._stop.wait(dependency.failed(readable(exc))):
                    return None
                continue
            dependency.succeeded()
            return result
        return None

    def _connect_blue(self) -> None:
        """Open blue's connections and start streaming at the slot's confirmed position."""
        connected = self._retry(self._blue, self._blue_link.connect)
        if connected is None:
            return
        restart_lsn, self._builder = connected
        self._blue_link.server_wal_end = 0  # the new stream's keepalives say how far it got
        # Settled before a loss but not yet told to blue: confirmed with the next status.
        self._publisher.confirmed_lsn = max(self._publisher.confirmed_lsn, restart_lsn)
        self.log.info(
            "capturing", from_lsn=format_lsn(restart_lsn), partitions=self._publisher.partitions
        )

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
            if not self._kafka_link.await_up(self._stop):
                return
            if isinstance(exc, KafkaDeliveryError) and exc.fatal:
                self._publisher.writer = self._kafka_link.replace_producer()
        self._connect_blue()

    def _abandon_stream(self, *, settle_s: float) -> int:
        """Confirm what the broker acknowledged (waiting up to settle_s), drop the rest."""
        if settle_s > 0 and self._publisher.pending:
            self._publisher.writer.flush(settle_s)
        self._publisher.settle()
        if self._blue_link.stream is not None:
            # If blue is gone, the new stream starts where the slot stands.
            with contextlib.suppress(*_BLUE_DOWN):
                self._send_status(force=True)
        self._blue_link.close()
        return self._publisher.drop()

    def run_once(self) -> None:
        stream = self._blue_link.stream
        if stream is None:
            raise ReplicationLostError("no replication stream")
        publisher = self._publisher
        if publisher.writer.in_flight < _MAX_IN_FLIGHT:
            message = stream.read(_READ_TIMEOUT_S)
            if isinstance(message, XLogData):
                for action in self._builder.feed(decode(message.payload)):
                    publisher.act(action, self._builder.table)
            elif isinstance(message, Keepalive):
                link = self._blue_link
                link.server_wal_end = max(link.server_wal_end, message.wal_end)
                if message.reply_requested:
                    self._send_status(force=True)
            publisher.writer.poll(0)
        else:
            publisher.writer.poll(_READ_TIMEOUT_S)  # backpressure: wait for the broker, not blue
        self._kafka_link.check_errors()
        refused = publisher.settle()
        if refused is not None:
            raise publisher.refusal(refused)
        now = time.monotonic()
        if now - self._blue_link.last_status >= self.settings.cdc.status_interval_s:
            self._send_status()
        if now - self._blue_link.last_heartbeat >= self.settings.cdc.heartbeat_interval_s:
            self._blue_link.heartbeat()
        if now - self._blue_link.last_health >= _HEALTH_INTERVAL_S:
            self._blue_link.health(publisher.last_acked_commit_ms)

    def _shutdown(self, drain_s: float) -> None:
        deadline = time.monotonic() + drain_s
        publisher = self._publisher
        try:
            while publisher.pending and time.monotonic() < deadline:
                publisher.writer.poll(0.1)
                if publisher.settle() is not None:
                    break
            publisher.settle()
            if self._blue_link.stream is not None:
                self._send_status(force=True)
        except _BLUE_DOWN as exc:
            self.log.warning("could not confirm the last position to blue", error=one_line(exc))
        finally:
            self._blue_link.close()
            publisher.writer.flush(5)
        self.log.info("stopped", confirmed_lsn=format_lsn(self.confirmed_lsn))

    def _send_status(self, *, force: bool = False) -> None:
        position = self._publisher.confirmed_lsn
        if self._publisher.idle():
            # Nothing in flight: everything the server decoded up to its keepalive position
            # is in Kafka, including transactions pgoutput skipped as not ours.
            position = max(position, self._blue_link.server_wal_end)
        if self._blue_link.stream is None:
            raise ReplicationLostError("no replication stream")
        self._publisher.confirmed_lsn = position
        self._blue_link.send_status(position, force=force)
