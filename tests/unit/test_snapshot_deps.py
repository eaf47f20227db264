"""The snapshot's dependency gate and its reports to the parent, without any server."""

from __future__ import annotations

import time

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from bluegreen.core.errors import DependencyError
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector
from producers.snapshot.channel import DependencyBoard, ParentChannel
from producers.snapshot.deps import Dependency, kafka_transient, pg_transient


def refused() -> psycopg.OperationalError:
    return psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )


def test_a_lost_server_is_transient_and_a_wrong_login_is_not() -> None:
    assert pg_transient(refused())
    assert pg_transient(psycopg.errors.AdminShutdown("terminating connection"))
    assert not pg_transient(psycopg.OperationalError('FATAL:  role "nobody" does not exist'))
    assert not pg_transient(psycopg.OperationalError("password authentication failed for x"))
    assert not pg_transient(psycopg.errors.UndefinedTable("relation does not exist"))
    assert kafka_transient(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert kafka_transient(TimeoutError())
    assert not kafka_transient(KafkaException(KafkaError(KafkaError._FATAL, fatal=True)))


def gate(probe: list[BaseException | None], timeout_s: float = 60.0) -> Dependency:
    def attempt() -> None:
        outcome = probe.pop(0) if probe else refused()  # refused once the script ends
        if outcome is not None:
            raise outcome

    reconnector = Reconnector(
        "snapshot worker 1", "control", "127.0.0.1:1/control", timeout_s, base_s=0.0
    )
    return Dependency(reconnector, attempt, pg_transient)


def test_the_gate_probes_before_first_use_and_after_a_loss() -> None:
    dependency = gate([refused(), None, None])
    assert not dependency.ready()  # first probe fails: backoff
    assert dependency.ready() and dependency.up  # second succeeds
    dependency.lost(refused())
    assert not dependency.up
    assert dependency.ready()


def test_a_suspicion_costs_one_probe_and_no_retry_line_when_the_probe_succeeds() -> None:
    dependency = gate([None, None])
    assert dependency.ready()
    dependency.suspect()
    assert dependency.up and not dependency.reconnector.down


def test_the_gate_gives_up_with_one_line_at_the_deadline() -> None:
    dependency = gate([], timeout_s=0.05)
    deadline = time.monotonic() + 5
    with pytest.raises(DependencyError) as caught:
        while time.monotonic() < deadline:
            dependency.ready()
            time.sleep(0.01)
    message = str(caught.value)
    assert message.startswith("snapshot worker 1: control at 127.0.0.1:1/control unreachable")
    assert "\n" not in message and "Connection refused" in message


def test_a_permanent_failure_is_one_line_at_once() -> None:
    dependency = gate([psycopg.OperationalError('FATAL:  database "x" does not exist')])
    with pytest.raises(DependencyError, match=r'control at 127\.0\.0\.1:1/control: .*"x" does not'):
        dependency.ready()


def test_the_parent_gauge_is_down_while_any_worker_reports_it_down() -> None:
    metrics = Metrics(CollectorRegistry())
    board = DependencyBoard(metrics.dependency_up)

    def kafka_up() -> float | None:
        return metrics.registry.get_sample_value("bluegreen_dependency_up", {"dependency": "kafka"})

    board.source("snapshot").labels("kafka").set(1)
    board.report("w0", "kafka", 0)
    board.report("w1", "kafka", 1)
    assert kafka_up() == 0
    board.forget("w0")  # the worker that saw it down exited
    assert kafka_up() == 1


def test_a_worker_reports_only_changes_and_survives_a_gone_parent() -> None:
    sent: list[tuple[object, ...]] = []

    class Pipe:
        def send(self, message: tuple[object, ...]) -> None:
            if len(sent) == 2:
                raise BrokenPipeError
            sent.append(message)

    channel = ParentChannel(Pipe())  # type: ignore[arg-type]
    state = channel.labels("blue")
    state.set(1)
    state.set(1)
    state.set(0)
    assert sent == [("dependency", "blue", 1), ("dependency", "blue", 0)]
    channel.gave_up("blue at h:1/b unreachable")  # the parent is gone: dropped, no error
    channel.gave_up("again")
