"""The capture loop shared by blue's capture (`bluegreen cdc`) and green's reverse
capture (`bluegreen reverse-cdc`): read the slot's stream, hand each message to the
direction's builder and publisher, confirm in commit order after Kafka acknowledged,
heartbeats and slot health, and riding through a lost source or broker.

See ``producers.cdc.service`` for the guarantees; a subclass says how the stream
starts (``_prepare``) and what a decoded message becomes (``_feed``, ``_new_builder``).
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
from structlog.stdlib import BoundLogger

from bluegreen.core.config import CdcSettings
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from producers.cdc.errors import KafkaDeliveryError
from producers.cdc.kafka_link import KafkaLink, kafka_trouble, readable
from producers.cdc.pgoutput import Message, decode
from producers.cdc.publisher import UnitPublisher
from producers.cdc.source_link import SourceLink
from producers.cdc.stream import Keepalive, ReplicationLostError, XLogData
from schemas.lsn import format_lsn

T = TypeVar("T")

_READ_TIMEOUT_S = 0.05
_DRAIN_TIMEOUT_S = 30.0
_HEALTH_INTERVAL_S = 2.0
# Reading pauses while this many messages wait for the broker's acknowledgement.
_MAX_IN_FLIGHT = 20_000
# Source lost: how long to wait for the broker's reports on messages already sent.
_SETTLE_ON_LOSS_S = 5.0
# Source errors that reconnecting may cure: a broken connection, a server going away.
SOURCE_DOWN = (ReplicationLostError, psycopg.OperationalError)


class CaptureLoop:
    """One direction's capture; subclasses wire the source, builder and publisher."""

    def __init__(
        self,
        *,
        cdc: CdcSettings,
        metrics: Metrics,
        log: BoundLogger,
        source: Reconnector,
        kafka: Reconnector,
        link: SourceLink,
        kafka_link: KafkaLink,
        publisher: UnitPublisher,
        producer: Producer | None,
    ) -> None:
        self._cdc = cdc
        self.metrics = metrics
        self.log = log
        self._source = source
        self._kafka = kafka
        self._link = link
        self._kafka_link = kafka_link
        self._publisher = publisher
        self._producer = producer
        self._stop = threading.Event()
        self.stream_restarts = 0  # streams given up after a lost dependency

    # -- what a subclass says -------------------------------------------------------------------

    def _prepare(self) -> int | None:
        """Make the slot ready; its position (None: stopped while waiting)."""
        raise NotImplementedError

    def _new_builder(self) -> None:
        """A fresh decoder state for a new stream (the relation cache starts empty)."""
        raise NotImplementedError

    def _feed(self, message: Message) -> None:
        """Turn one decoded pgoutput message into the publisher's calls."""
        raise NotImplementedError

    # -- what callers see ---------------------------------------------------------------------

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

    def _attach_kafka(self) -> bool:
        """Create the topic if need be and open the producer (False: stopped first)."""
        partitions = self._retry(self._kafka, self._kafka_link.prepare_topic)
        if partitions is None:
            return False
        self._publisher.attach(self._kafka_link.open_writer(self._producer), partitions)
        return True

    def run(self) -> None:
        start = self._prepare()
        if start is None or not self._attach_kafka():
            return  # stopped while waiting for a dependency
        self._publisher.confirmed_lsn = start
        failed = True
        try:
            self._connect_source()
            while not self._stop.is_set():
                self._run_guarded()
            failed = False
        finally:
            self._shutdown(drain_s=0.0 if failed else _DRAIN_TIMEOUT_S)

    def _run_guarded(self) -> None:
        """One step; a lost dependency gives the stream up and restarts it from the slot."""
        try:
            self.run_once()
        except SOURCE_DOWN as exc:
            self._source_lost(exc)
        except KafkaDeliveryError as exc:
            self._restart(self._kafka, exc)
        except KafkaException as exc:  # raised by produce(): a fatal producer, ...
            trouble = kafka_trouble(exc)
            if not isinstance(trouble, KafkaDeliveryError):
                raise trouble from exc
            self._restart(self._kafka, trouble)

    def _source_lost(self, exc: BaseException) -> None:
        """The source's connection failed: restart the stream from the slot."""
        self._restart(self._source, exc)

    def _retry(self, dependency: Reconnector, attempt: Callable[[], T]) -> T | None:
        """attempt() until it succeeds (None if stopped); DependencyError when down too long."""
        while not self._stop.is_set():
            try:
                result = attempt()
            except (*SOURCE_DOWN, KafkaException) as exc:
                if self._stop.wait(dependency.failed(readable(exc))):
                    return None
                continue
            dependency.succeeded()
            return result
        return None

    def _connect_source(self) -> None:
        """Open the source's connections and start streaming at the slot's confirmed position."""
        restart_lsn = self._retry(self._source, self._link.connect)
        if restart_lsn is None:
            return
        self._new_builder()
        self._link.server_wal_end = 0  # the new stream's keepalives say how far it got
        # Settled before a loss but not yet told to the source: confirmed with the next status.
        self._publisher.confirmed_lsn = max(self._publisher.confirmed_lsn, restart_lsn)
        self.log.info(
            "capturing", from_lsn=format_lsn(restart_lsn), partitions=self._publisher.partitions
        )

    def _restart(self, dependency: Reconnector, exc: BaseException) -> None:
        """Give the stream up after `exc`; resume from the slot once the source and Kafka answer."""
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
        self._connect_source()

    def _abandon_stream(self, *, settle_s: float) -> int:
        """Confirm what the broker acknowledged (waiting up to settle_s), drop the rest."""
        if settle_s > 0 and self._publisher.pending:
            self._publisher.writer.flush(settle_s)
        self._publisher.settle()
        if self._link.stream is not None:
            # If the source is gone, the new stream starts where the slot stands.
            with contextlib.suppress(*SOURCE_DOWN):
                self._send_status(force=True)
        self._link.close()
        return self._publisher.drop()

    def run_once(self) -> None:
        stream = self._link.stream
        if stream is None:
            raise ReplicationLostError("no replication stream")
        publisher = self._publisher
        if publisher.writer.in_flight < _MAX_IN_FLIGHT:
            message = stream.read(_READ_TIMEOUT_S)
            if isinstance(message, XLogData):
                self._feed(decode(message.payload))
            elif isinstance(message, Keepalive):
                link = self._link
                link.server_wal_end = max(link.server_wal_end, message.wal_end)
                if message.reply_requested:
                    self._send_status(force=True)
            publisher.writer.poll(0)
        else:
            publisher.writer.poll(_READ_TIMEOUT_S)  # backpressure: wait for the broker
        self._kafka_link.check_errors()
        refused = publisher.settle()
        if refused is not None:
            raise publisher.refusal(refused)
        now = time.monotonic()
        if now - self._link.last_status >= self._cdc.status_interval_s:
            self._send_status()
        if now - self._link.last_heartbeat >= self._cdc.heartbeat_interval_s:
            self._link.heartbeat()
        if now - self._link.last_health >= _HEALTH_INTERVAL_S:
            self._link.health(publisher.last_acked_commit_ms)

    def _shutdown(self, drain_s: float) -> None:
        deadline = time.monotonic() + drain_s
        publisher = self._publisher
        try:
            while publisher.pending and time.monotonic() < deadline:
                publisher.writer.poll(0.1)
                if publisher.settle() is not None:
                    break
            publisher.settle()
            if self._link.stream is not None:
                self._send_status(force=True)
        except SOURCE_DOWN as exc:
            self.log.warning(
                f"could not confirm the last position to {self._link.source}", error=one_line(exc)
            )
        finally:
            self._link.close()
            publisher.writer.flush(5)
        self.log.info("stopped", confirmed_lsn=format_lsn(self.confirmed_lsn))

    def _send_status(self, *, force: bool = False) -> None:
        position = self._publisher.confirmed_lsn
        if self._publisher.idle():
            # Nothing in flight: everything the server decoded up to its keepalive position
            # is in Kafka, including transactions pgoutput skipped as not ours.
            position = max(position, self._link.server_wal_end)
        if self._link.stream is None:
            raise ReplicationLostError("no replication stream")
        self._publisher.confirmed_lsn = position
        self._link.send_status(position, force=force)
