"""Run the consumer in tests and wait until green applied everything in the topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import TopicPartition

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.kafka import make_consumer, topic_ends
from bluegreen.core.metrics import Metrics
from consumers.service import ConsumerService
from schemas.catalog import CATALOG
from schemas.domain import Domain
from tests.support.service_thread import ServiceThread


def green_positions(settings: Settings) -> dict[int, int]:
    with db.connect(settings.green_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('sync.apply_position')").fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = conn.execute(
            "SELECT partition, next_offset FROM sync.apply_position WHERE topic = %s",
            (settings.kafka.topic,),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offset per partition of the change topic (<0: none)."""
    consumer = make_consumer(settings.kafka, settings.consumer.group_id)
    try:
        committed = consumer.committed(
            [TopicPartition(settings.kafka.topic, p) for p in range(settings.kafka.partitions)],
            timeout=10,
        )
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def wait_drained(settings: Settings, timeout_s: float = 120) -> None:
    """Until green's position reaches the end of every partition of the topic."""
    deadline = time.monotonic() + timeout_s
    while True:
        ends = topic_ends(settings.kafka, "test-watermarks")
        positions = green_positions(settings)
        behind = {
            p: (positions.get(p, 0), end) for p, end in ends.items() if positions.get(p, 0) < end
        }
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"green did not catch up: {behind}")
        time.sleep(0.2)


@contextmanager
def running_consumer(settings: Settings, domain: Domain = CATALOG) -> Iterator[ConsumerService]:
    service = ConsumerService(settings, domain, Metrics())
    thread = ServiceThread(service, "consume")
    try:
        yield service
    finally:
        thread.stop()
    thread.check()
