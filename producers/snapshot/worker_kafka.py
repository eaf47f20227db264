"""A snapshot worker's one Kafka producer, and what librdkafka hints about the broker.

The producer is made once the broker first answers and kept for the worker's life:
messages wait in its queue while the broker is away, since it retries each one
``_DELIVERY_MARGIN_S`` longer than the worker waits for the broker. Its error
callback only notes a hint; the worker's loop heeds it (``heed_hint``).
"""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from bluegreen.core.config import Settings
from bluegreen.core.kafka import producer_for_topic
from producers.snapshot.deps import Dependency, probe_kafka
from producers.writer import KafkaWriter

# librdkafka retries a message this much longer than the worker waits for the broker,
# so an outage ends in the worker's one-line error, not in a delivery failure first.
_DELIVERY_MARGIN_S = 30.0
# Client errors that hint the broker went away: probe it before claiming more.
_KAFKA_HINTS = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


class WorkerKafka:
    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self._settings = settings
        self._producer = producer
        self._hint: KafkaError | None = None
        self.writer: KafkaWriter | None = None

    def connect(self) -> None:
        """The Kafka dependency's probe: the broker answers; the writer exists."""
        probe_kafka(self._settings.kafka)
        if self.writer is None:
            self.writer = KafkaWriter(
                self._producer or self._make_producer(), self._settings.kafka.topic, name="snapshot"
            )

    def _make_producer(self) -> Producer:
        settings = self._settings
        timeout_s = settings.snapshot.reconnect_timeout_s + _DELIVERY_MARGIN_S
        overrides = {
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": self._on_error,
            # librdkafka's own line per failed connection would drown the Reconnector's
            # one line per attempt; its errors still reach error_cb and delivery reports.
            "log_level": 2,
        }
        return producer_for_topic(
            settings.kafka, settings.kafka.topic, **cast(dict[str, Any], overrides)
        )

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (inside poll): remember it for the loop."""
        if error.fatal() or (error.code() in _KAFKA_HINTS and self._hint is None):
            self._hint = error

    def heed_hint(self, kafka: Dependency) -> None:
        """A fatal error stops the worker; a hint that the broker went away has it probed."""
        hint, self._hint = self._hint, None
        if hint is None:
            return
        if hint.fatal():  # the idempotent producer cannot go on; a new process can
            raise KafkaException(hint)
        kafka.suspect()
