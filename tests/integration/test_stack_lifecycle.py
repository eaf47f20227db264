"""A second, private stack: down/up keeps data, status and failures are reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import TopicPartition

from bluegreen.app.stack.local import LocalStack
from bluegreen.core.config import KafkaSettings, StackSettings
from bluegreen.core.errors import StackError
from bluegreen.core.kafka import ensure_topic, make_consumer, make_producer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORTS = {
    "blue_port": 17432,
    "green_port": 17433,
    "control_port": 17434,
    "kafka_port": 19292,
    "kafka_controller_port": 19293,
}


@pytest.fixture
def private_stack() -> Iterator[LocalStack]:
    # Under the repository, not /tmp/pytest-of-*: the postgres user must reach it.
    state = ROOT / ".bluegreen-test" / f"private-{uuid.uuid4().hex[:8]}"
    stack = LocalStack(StackSettings(state_dir=state, **PORTS))
    yield stack
    stack.down()
    shutil.rmtree(state, ignore_errors=True)


def env_for(stack: LocalStack) -> dict[str, str]:
    env = {**os.environ, "BLUEGREEN_STACK__STATE_DIR": str(stack.state_dir)}
    env.update({f"BLUEGREEN_STACK__{k.upper()}": str(v) for k, v in PORTS.items()})
    return env


def test_down_and_up_keep_postgres_rows_and_kafka_messages(private_stack: LocalStack) -> None:
    report = {s.name: s for s in private_stack.up()}
    assert all(s.healthy for s in report.values())
    assert report["kafka"].rss_mb is not None
    blue = private_stack.clusters["blue"].dsn
    kafka = KafkaSettings(bootstrap_servers=private_stack.kafka.bootstrap, topic="keep")
    with psycopg.connect(blue) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO kept SELECT g, 'v' || g FROM generate_series(1, 500) g")
    ensure_topic(kafka, "keep", partitions=2)
    producer = make_producer(kafka)
    for i in range(100):
        producer.produce("keep", key=str(i).encode(), value=f"m{i}".encode())
    assert producer.flush(30) == 0

    again = {s.name: s.action for s in private_stack.up()}
    assert set(again.values()) == {"already running"}

    stopped = private_stack.down()
    assert sorted(stopped) == ["blue", "control", "green", "kafka"]
    assert not any(s.running for s in private_stack.status())
    assert {s.action for s in private_stack.up()} == {"started"}

    with psycopg.connect(blue) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (500,)
    consumer = make_consumer(kafka, "keep-check")
    consumer.assign([TopicPartition("keep", p, 0) for p in range(2)])
    seen: set[bytes] = set()
    try:
        while len(seen) < 100:
            batch = consumer.consume(num_messages=100, timeout=10)
            assert batch, "the messages produced before the restart are gone"
            seen.update(m.value() for m in batch)
    finally:
        consumer.close()
    assert seen == {f"m{i}".encode() for i in range(100)}


def test_status_cli_reports_and_exits_non_zero_when_down(private_stack: LocalStack) -> None:
    cmd = [sys.executable, "-m", "bluegreen", "stack", "status", "--json"]
    done = subprocess.run(
        cmd, env=env_for(private_stack), capture_output=True, text=True, check=False
    )
    assert done.returncode == 3
    assert {s["name"]: s["running"] for s in json.loads(done.stdout)} == {
        "blue": False,
        "green": False,
        "control": False,
        "kafka": False,
    }


def test_failed_start_shows_the_service_log(private_stack: LocalStack) -> None:
    green = private_stack.clusters["green"]
    green.init()
    with (green.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 'lots'\n")
    with pytest.raises(StackError) as err:
        private_stack.up()
    message = str(err.value)
    assert "green" in message
    assert "shared_buffers" in message  # the log tail says what is wrong
