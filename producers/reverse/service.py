"""`bluegreen reverse-cdc`: green's committed changes into the reverse topic.

The forward capture's loop (``producers.cdc.loop``) on green's slot
``bluegreen_reverse``, with the same guarantees: the slot is confirmed only up to
transactions whose every message the broker acknowledged, in commit order, so a
kill -9 loses nothing (the slot replays, duplicates are harmless to a state-based
applier); a lost green or broker is ridden through with capped backoff
(``Reconnector``: one line per attempt, a one-line ``DependencyError`` after
``cdc.reconnect_timeout_s``); heartbeats (``pg_logical_emit_message`` on green) every
``cdc.heartbeat_interval_s`` keep the reverse applier's positions moving while green
is idle.

The slot exists only while writes are on green. Without it the service waits: one
log line, then a quiet poll every second. When the slot is dropped under it
(``rollback --writes``), it confirms what the broker acknowledged, drops the rest and
waits again instead of failing. Transactions the forward applier wrote into green
(origin ``schemas.control.FORWARD_ORIGIN``) are not captured.
"""

from __future__ import annotations

import contextlib

import psycopg
from confluent_kafka import Producer

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector
from producers.blue_setup import CONNECT_TIMEOUT_S, slot_health
from producers.cdc.changes import TxnBegin, TxnEnd
from producers.cdc.errors import SlotGoneError
from producers.cdc.kafka_link import KafkaLink
from producers.cdc.loop import SOURCE_DOWN, CaptureLoop
from producers.cdc.pgoutput import Message
from producers.cdc.publisher import UnitPublisher
from producers.cdc.source_link import SourceLink
from producers.cdc.stream import ReplicationError
from producers.reverse.changes import Alone, Everywhere, GreenChangeBuilder, Keyed
from producers.reverse.setup import REVERSE_PUBLICATION, REVERSE_SLOT
from schemas import reverse
from schemas.control import FORWARD_ORIGIN
from schemas.domain import ReverseSpec
from schemas.lsn import format_lsn

_DRAIN_TIMEOUT_S = 30.0
_SETTLE_ON_DROP_S = 5.0


class ReverseCdcService(CaptureLoop):
    def __init__(
        self,
        settings: Settings,
        spec: ReverseSpec,
        metrics: Metrics,
        *,
        producer: Producer | None = None,
        # The write switch flips writes to green tens of milliseconds after it creates the
        # slot, and green's first writes wait for this poll to notice it: keep it short
        # (one catalog lookup on green per poll).
        poll_s: float = 0.1,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self._poll_s = poll_s
        self.waiting = False  # True while the slot does not exist
        log = get_logger(service="reverse-cdc", slot=REVERSE_SLOT)
        timeout_s = settings.cdc.reconnect_timeout_s
        gauge = metrics.dependency_up
        green = Reconnector(
            "reverse-cdc", "green", db.describe(settings.green_dsn), timeout_s, gauge=gauge
        )
        kafka = Reconnector(
            "reverse-cdc", "kafka", settings.kafka.bootstrap_servers, timeout_s, gauge=gauge
        )
        capture = metrics.reverse_capture()
        link = SourceLink(
            "green",
            settings.green_dsn,
            REVERSE_SLOT,
            REVERSE_PUBLICATION,
            metrics=capture,
            log=log,
            retained_wal_warning_bytes=settings.cdc.retained_wal_warning_bytes,
            application_name="bluegreen-reverse-cdc",
        )
        topic = settings.kafka.reverse_topic
        kafka_link = KafkaLink(settings.kafka, metrics, kafka, log, topic=topic, name="reverse-cdc")
        publisher = UnitPublisher(capture, kafka_link.acknowledged, command="bluegreen reverse-cdc")
        super().__init__(
            cdc=settings.cdc,
            metrics=metrics,
            log=log,
            source=green,
            kafka=kafka,
            link=link,
            kafka_link=kafka_link,
            publisher=publisher,
            producer=producer,
        )
        self._builder = self._make_builder()

    def _make_builder(self) -> GreenChangeBuilder:
        return GreenChangeBuilder(self.spec, skip_origin=FORWARD_ORIGIN)

    # -- lifecycle: wait for the slot, stream it, wait again when it is dropped ------------

    def run(self) -> None:
        if not self._attach_kafka():
            return
        failed = True
        try:
            while not self._stop.is_set():
                if self._link.stream is None:
                    self._start_streaming()
                else:
                    self._run_guarded()
            failed = False
        finally:
            self._shutdown(drain_s=0.0 if failed else _DRAIN_TIMEOUT_S)

    def _start_streaming(self) -> None:
        if not self._await_slot():
            return
        try:
            self._connect_source()
        except (SlotGoneError, ReplicationError) as exc:
            self._stream_ended(exc)
        if self._link.stream is not None:
            self.metrics.reverse_cdc_slot_present.set(1)
            self.waiting = False

    def _await_slot(self) -> bool:
        """Poll until the slot exists (True) or the service stops (False); one log line."""
        logged = False
        while not self._stop.is_set():
            exists = self._retry(self._source, self._link.slot_exists)
            if exists:
                return True
            if exists is None:
                return False
            if not logged:
                self.log.info("waiting for green's reverse slot (created by cutover --writes)")
                self.metrics.reverse_cdc_slot_present.set(0)
                self.waiting = logged = True
            self._stop.wait(self._poll_s)
        return False

    def _run_guarded(self) -> None:
        try:
            super()._run_guarded()
        except (SlotGoneError, ReplicationError) as exc:
            self._stream_ended(exc)

    def _source_lost(self, exc: BaseException) -> None:
        """A lost stream is a dropped slot (rollback terminates its walsender), or green away."""
        if self._slot_gone():
            self._stream_ended(exc)
        else:
            super()._source_lost(exc)

    def _stream_ended(self, exc: BaseException) -> None:
        """The slot is gone: keep what Kafka acknowledged, drop the rest, wait again."""
        if not isinstance(exc, SlotGoneError) and not self._slot_gone():
            raise exc  # the slot is there: this is not a rollback
        dropped = self._abandon_stream(settle_s=_SETTLE_ON_DROP_S)
        self._builder = self._make_builder()
        self.metrics.reverse_cdc_slot_present.set(0)
        self.log.info(
            "reverse slot dropped (writes rolled back?); waiting for it",
            confirmed_lsn=format_lsn(self.confirmed_lsn),
            dropped_transactions=dropped,
        )

    def _slot_gone(self) -> bool:
        """True only when green answers that the slot does not exist."""
        with (
            contextlib.suppress(*SOURCE_DOWN, psycopg.Error),
            db.connect(
                self.settings.green_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn,
        ):
            return slot_health(conn, REVERSE_SLOT) is None
        return False

    # -- the direction's pieces ---------------------------------------------------------------

    def _prepare(self) -> int | None:
        return 0  # run() waits for the slot instead

    def _new_builder(self) -> None:
        self._builder = self._make_builder()

    def _feed(self, message: Message) -> None:
        publisher = self._publisher
        for action in self._builder.feed(message):
            if isinstance(action, Keyed):
                change = action.change
                publisher.send(change.key.encode(), reverse.encode(change), change.op.value)
            elif isinstance(action, TxnBegin):
                publisher.begin(action.commit_lsn, action.commit_ts_ms)
            elif isinstance(action, TxnEnd):
                publisher.end(action.end_lsn, skipped=action.skipped)
            elif isinstance(action, Everywhere):
                change = action.change
                publisher.broadcast(reverse.encode(change), change.op.value)
            elif isinstance(action, Alone):
                change = action.change
                value = reverse.encode(change)
                publisher.standalone(action.lsn, change.ts_ms, value, change.op.value)
