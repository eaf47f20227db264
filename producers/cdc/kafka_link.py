"""The capture's side of Kafka: the topic, the producer, and what librdkafka reports.

librdkafka retries on its own; what it reports through its error callback (served
inside ``poll()``) is only noted there, and the capture loop acts on it
(``check_errors``): a fatal idempotence error restarts the stream with a new
producer; all brokers down is reported at the reconnect backoff's pace, each report
checking the reconnect deadline.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError, KafkaException, Producer
from structlog.stdlib import BoundLogger

from bluegreen.core.config import KafkaSettings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.kafka import ensure_topic, make_admin, producer_for_topic
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from producers.cdc.errors import CdcError, KafkaDeliveryError
from producers.writer import KafkaWriter

KAFKA_PROBE_TIMEOUT_S = 2.0
# Delivery errors that no retry cures: the service stops instead of looping on them.
PERMANENT_KAFKA_ERRORS = frozenset(
    {"MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD"}
)
_PRODUCER_OVERRIDES: dict[str, str | int] = {
    "linger.ms": 5,
    # A restarted broker is found within a second, not librdkafka's default 10 s.
    "reconnect.backoff.max.ms": 1000,
}


class KafkaLink:
    def __init__(
        self,
        kafka: KafkaSettings,
        metrics: Metrics,
        reconnector: Reconnector,
        log: BoundLogger,
        *,
        topic: str | None = None,
        name: str = "cdc",
    ) -> None:
        self._settings = kafka
        self.topic = kafka.topic if topic is None else topic
        self._name = name  # the producer's label in the Kafka metrics
        self._metrics = metrics
        self._reconnector = reconnector
        self._log = log
        self._errors: list[KafkaError] = []
        self._next_down_report = 0.0

    def prepare_topic(self) -> int:
        """Create the topic if need be; its partition count.

        A topic other than the change topic is created with as many partitions as the
        change topic has (kafka.partitions if it does not exist yet).
        """
        kafka = self._settings
        admin = make_admin(kafka)
        listed = admin.list_topics(
            timeout=KAFKA_PROBE_TIMEOUT_S
        )  # an unreachable broker fails fast
        partitions = kafka.partitions
        changes = listed.topics.get(kafka.topic)
        if self.topic != kafka.topic and changes is not None and changes.partitions:
            partitions = len(changes.partitions)
        ensure_topic(kafka, self.topic, partitions)
        metadata = admin.list_topics(topic=self.topic, timeout=10)
        return len(metadata.topics[self.topic].partitions)

    def open_writer(self, producer: Producer | None) -> KafkaWriter:
        """The writer over `producer`, or over a new one that reports its errors here."""
        kafka = self._settings
        if producer is None:
            # The operator's kafka.extra wins over these defaults.
            defaults = {k: v for k, v in _PRODUCER_OVERRIDES.items() if k not in kafka.extra}
            producer = producer_for_topic(kafka, self.topic, error_cb=self._on_error, **defaults)
        self._producer = producer
        self._errors.clear()
        return KafkaWriter(producer, self.topic, name=self._name, metrics=self._metrics)

    def replace_producer(self) -> KafkaWriter:
        """A fatal idempotence error ends a producer's life: purge it and start a new one."""
        old = self._producer
        old.purge(in_queue=True, in_flight=True, blocking=True)
        old.flush(1)
        self._log.warning("producer replaced after a fatal error")
        return self.open_writer(None)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback, served inside poll(): noted, handled by the loop."""
        self._errors.append(error)

    def check_errors(self) -> None:
        errors, self._errors = self._errors, []
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
            delay = self._reconnector.failed(BluegreenError(f"{error.name()}: {error.str()}"))
            self._next_down_report = now + delay

    def acknowledged(self) -> None:
        """The broker acknowledged a transaction: if it was down, it is back."""
        if self._reconnector.down:
            self._reconnector.succeeded()
            self._next_down_report = 0.0

    def await_up(self, stop: threading.Event) -> bool:
        """Back off until the broker answers for every partition of the topic."""
        admin = make_admin(self._settings)
        topic = self.topic

        def probe() -> None:
            found = admin.list_topics(topic=topic, timeout=KAFKA_PROBE_TIMEOUT_S).topics.get(topic)
            if found is None or found.error is not None:
                raise KafkaException(found.error if found else KafkaError._UNKNOWN_TOPIC)
            if not found.partitions or any(p.leader < 0 for p in found.partitions.values()):
                raise KafkaException(KafkaError.LEADER_NOT_AVAILABLE)

        while not stop.is_set():
            try:
                probe()
            except KafkaException as exc:
                # No `succeeded()` here: Kafka is back only once it acknowledges a message.
                if stop.wait(self._reconnector.failed(readable(exc))):
                    return False
                continue
            return True
        return False


def readable(exc: BaseException) -> BaseException:
    """A Kafka error as `NAME: text` rather than KafkaError{code=...,val=...,str=...}."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        readable = BluegreenError(f"{error.name()}: {error.str()}")
        readable.__cause__ = exc  # --debug still shows the original
        return readable
    return exc


def kafka_trouble(exc: KafkaException) -> BluegreenError:
    """What produce() raised: a message too large stops the service, the rest is retried."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    cause = one_line(readable(exc))
    if error is not None and error.name() in PERMANENT_KAFKA_ERRORS:
        return CdcError(f"the producer refused a message: {cause}")
    return KafkaDeliveryError(cause, fatal=error is not None and error.fatal())
