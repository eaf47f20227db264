"""The consumer's view of green and Kafka: up, or down and how long to wait.

Green or Kafka down: the service keeps its partitions paused and tries again with
capped exponential backoff (``consumer.retry_backoff_base_s`` … ``_max_s``), one log
line per attempt, ``bluegreen_dependency_up{dependency}`` at 0; after
``consumer.reconnect_timeout_s`` the ``Reconnector`` raises a ``DependencyError``
naming the dependency, its address and the cause, and the service stops. No I/O here
except through the callables it is given: the decisions are unit-testable.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector
from consumers.dlq import DlqWriteError
from consumers.positions import PositionMovedError

_KAFKA_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)


class Backoff:
    """The green and Kafka reconnectors, and what each kind of failure costs in waiting."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        options = settings.consumer
        self._metrics = metrics
        self._log = get_logger(service="consume", group=options.group_id)
        timeout = options.reconnect_timeout_s
        self.green = Reconnector(
            "consume", "green", db.describe(settings.green_dsn), timeout,
            gauge=metrics.dependency_up,
            base_s=options.retry_backoff_base_s, max_s=options.retry_backoff_max_s,
        )  # fmt: skip
        self.kafka = Reconnector(
            "consume", "kafka", settings.kafka.bootstrap_servers, timeout,
            gauge=metrics.dependency_up,
        )  # fmt: skip

    def rewind_delay(self, exc: BaseException) -> float:
        """How long to wait before claiming again after this doubt.

        Raises DependencyError once green (or Kafka, for dead letters) is down for too long.
        """
        if isinstance(exc, PositionMovedError):
            self._log.warning("green's position moved; rewinding", error=str(exc))
            return 0.0
        if isinstance(exc, DlqWriteError):
            return self.kafka.failed(exc)
        self._metrics.consumer_apply_retries.inc()
        return self.green.failed(exc)  # raises once green is down for too long

    def kafka_error(self, error: KafkaError) -> None:
        """An error event from consume(): fatal ones raise, an unreachable broker counts."""
        if error.fatal():
            raise KafkaException(error)
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in _KAFKA_DOWN:
            self.kafka.failed(KafkaException(error))  # raises once down for too long
            return
        self._log.warning("consumer error", error=str(error))

    def message_arrived(self) -> None:
        if self.kafka.down:
            self.kafka.succeeded()

    def probe_kafka(self, probe: Callable[[], object]) -> None:
        """While Kafka is down, a positive sign of life while no message arrives."""
        if not self.kafka.down:
            return
        try:
            probe()
            self.kafka.succeeded()
        except KafkaException as exc:
            self.kafka.failed(exc)
