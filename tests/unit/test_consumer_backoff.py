"""The consumer's backoff controller: what each failure costs, without any service."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException

from bluegreen.core.config import ConsumerSettings, Settings
from bluegreen.core.errors import DependencyError
from bluegreen.core.metrics import Metrics
from consumers.backoff import Backoff
from consumers.dlq import DlqWriteError
from consumers.positions import PositionMovedError


def backoff(metrics: Metrics, timeout_s: float = 60.0) -> Backoff:
    consumer = ConsumerSettings(
        retry_backoff_base_s=0.5, retry_backoff_max_s=2.0, reconnect_timeout_s=timeout_s
    )
    return Backoff(Settings(consumer=consumer), metrics)


def up(metrics: Metrics, dependency: str) -> float:
    value: float = metrics.dependency_up.labels(dependency)._value.get()
    return value


def test_a_moved_position_rewinds_at_once_and_blames_no_dependency() -> None:
    metrics = Metrics()
    controller = backoff(metrics)
    assert controller.rewind_delay(PositionMovedError({0: 5})) == 0.0
    assert not controller.green.down and not controller.kafka.down
    assert metrics.consumer_apply_retries._value.get() == 0


def test_green_failures_back_off_exponentially_up_to_the_cap() -> None:
    metrics = Metrics()
    controller = backoff(metrics)
    failure = psycopg.OperationalError("connection refused")
    delays = [controller.rewind_delay(failure) for _ in range(4)]
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert controller.green.down and not controller.kafka.down
    assert up(metrics, "green") == 0
    assert metrics.consumer_apply_retries._value.get() == 4
    controller.green.succeeded()
    assert up(metrics, "green") == 1
    assert controller.rewind_delay(failure) == 0.5  # a new outage starts from the base


def test_dead_letters_kafka_refused_count_against_kafka() -> None:
    metrics = Metrics()
    controller = backoff(metrics)
    assert controller.rewind_delay(DlqWriteError("broker down")) > 0
    assert controller.kafka.down and not controller.green.down
    assert metrics.consumer_apply_retries._value.get() == 0


def test_green_down_for_too_long_stops_the_service() -> None:
    controller = backoff(Metrics(), timeout_s=1e-9)
    failure = psycopg.OperationalError("connection refused")
    controller.rewind_delay(failure)  # the outage starts
    with pytest.raises(DependencyError, match=r"consume: green at .* unreachable"):
        controller.rewind_delay(failure)


def test_kafka_errors_from_consume() -> None:
    metrics = Metrics()
    controller = backoff(metrics)
    controller.kafka_error(KafkaError(KafkaError._PARTITION_EOF))
    assert not controller.kafka.down
    controller.kafka_error(KafkaError(KafkaError._TRANSPORT, "broker gone"))
    assert controller.kafka.down and up(metrics, "kafka") == 0
    controller.message_arrived()
    assert not controller.kafka.down and up(metrics, "kafka") == 1
    with pytest.raises(KafkaException):
        controller.kafka_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))


def test_kafka_is_probed_only_while_down() -> None:
    controller = backoff(Metrics())
    probes: list[str] = []

    def probe() -> None:
        probes.append("probe")
        if len(probes) == 1:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "still gone"))

    controller.probe_kafka(probe)
    assert probes == []
    controller.kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))
    controller.probe_kafka(probe)  # fails: still down
    assert controller.kafka.down
    controller.probe_kafka(probe)  # answers: up again
    assert probes == ["probe", "probe"] and not controller.kafka.down
